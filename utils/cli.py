"""What the top-level scripts share on their command line: flags from a table of (flag,
default, help) rows, and parse, check, fail in one line."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

from utils import original_flags, selection

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """`text` with its control characters escaped (`\\n`, `\\x1b`, ...), so that a message
    naming a file stays one line whatever the file's name holds."""
    return CONTROL_CHARACTERS.sub(
        lambda match: match.group().encode("unicode_escape").decode(), text
    )


def say(text: str, file: TextIO | None = None) -> None:
    """Print one line of a script's report (`one_line`) to `file` (default: stdout)."""
    print(one_line(text), file=file)


class OneLineFormatter(logging.Formatter):
    """`LEVEL: message`, the message on one line (`one_line`); a traceback, if any, follows."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as `LEVEL: message`, its message on one line."""
        message = one_line(record.getMessage())
        return super().format(logging.makeLogRecord({**vars(record), "msg": message, "args": None}))


def configure_logging() -> None:
    """The scripts' log lines on stderr: `LEVEL: message`, INFO and above, one line each."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def parse_checked(
    parser: argparse.ArgumentParser,
    check: Callable[[argparse.Namespace], None],
    argv: list[str] | None = None,
    original: original_flags.OriginalFlags | None = None,
) -> argparse.Namespace:
    """Parse `argv` (default: sys.argv[1:]), first translated from the original code's flags
    when the script has some (`original`), and run `check` on the result; a ValueError from it
    becomes a one-line argparse error (exit code 2) before any work starts."""
    argv = sys.argv[1:] if argv is None else argv
    if original is not None:
        argv = original_flags.translate(parser, argv, original)
    args = parser.parse_args(argv)
    try:
        check(args)
    except ValueError as error:
        parser.error(one_line(str(error)))
    return args


def add_patience_flag(group: Any, text: str, default: int | str = selection.AUTO) -> None:
    """--patience in iterations, or auto (`selection.scaled_patience` of each image, in
    snapshots of the run); parsed to an int, or None for auto."""
    add_auto_flag(
        group,
        "--patience",
        f"{text}, or {selection.AUTO}: {selection.TUNED_WMV.patience} snapshots for a "
        f"{selection.STOP_SIZE}x{selection.STOP_SIZE} image, times (pixels / "
        f"{selection.STOP_SIZE}^2) ** {selection.PATIENCE_EXPONENT}, rounded (default: "
        "%(default)s)",
        default,
    )


def add_auto_flag(group: Any, flag: str, text: str, default: int | str = selection.AUTO) -> None:
    """A flag in iterations that also takes auto, parsed to an int or None (`iterations_or_auto`)."""
    group.add_argument(flag, type=iterations_or_auto, default=default, help=text)


def iterations_or_auto(text: str) -> int | None:
    """argparse type of a flag in iterations that also takes auto (-> None)."""
    try:
        return selection.parse_auto(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write a number of iterations or {selection.AUTO}"
        ) from None


def add_flags(group: Any, rows: tuple[tuple[str, Any, str], ...]) -> None:
    """Add (flag, default, help) rows to a parser or argument group; each flag's type is its
    default's, and its help ends with the default."""
    for flag, default, text in rows:
        group.add_argument(
            flag, type=type(default), default=default, help=f"{text} (default: %(default)s)"
        )
