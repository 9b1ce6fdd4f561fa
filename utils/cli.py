"""What the top-level scripts share on their command line: flags from a table of (flag,
default, help) rows, and parse, check, fail in one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from utils import original_flags


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
        parser.error(str(error))
    return args


def add_flags(group: Any, rows: tuple[tuple[str, Any, str], ...]) -> None:
    """Add (flag, default, help) rows to a parser or argument group; each flag's type is its
    default's, and its help ends with the default."""
    for flag, default, text in rows:
        group.add_argument(
            flag, type=type(default), default=default, help=f"{text} (default: %(default)s)"
        )
