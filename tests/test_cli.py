"""utils.cli: the scripts' shared parse-and-check step."""

from __future__ import annotations

import argparse

import pytest

from utils import cli


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="tool")
    result.add_argument("--count", type=int, default=1)
    return result


def check_positive(args: argparse.Namespace) -> None:
    if args.count < 1:
        raise ValueError("--count must be at least 1")


def test_valid_flags_come_back_parsed():
    assert cli.parse_checked(parser(), check_positive, ["--count", "3"]).count == 3


def test_a_check_failure_is_one_line_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parse_checked(parser(), check_positive, ["--count", "0"])
    assert stop.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert error_lines == ["tool: error: --count must be at least 1"]
