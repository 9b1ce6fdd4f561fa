"""What the top-level scripts share on their command line: parse, check, fail in one line."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def parse_checked(
    parser: argparse.ArgumentParser,
    check: Callable[[argparse.Namespace], None],
    argv: list[str] | None = None,
) -> argparse.Namespace:
    """Parse `argv` (default: sys.argv[1:]) and run `check` on the result; a ValueError from it
    becomes a one-line argparse error (exit code 2) before any work starts."""
    args = parser.parse_args(argv)
    try:
        check(args)
    except ValueError as error:
        parser.error(str(error))
    return args
