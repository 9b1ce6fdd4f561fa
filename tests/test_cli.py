"""utils.cli: the scripts' shared parse-and-check step."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
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


def test_control_characters_in_a_message_are_escaped_onto_one_line():
    assert cli.one_line("a\nb.png: bad\x1b[31m\t") == "a\\nb.png: bad\\x1b[31m\\t"
    assert cli.one_line("plain été.png") == "plain été.png"


def test_a_file_name_with_a_newline_gives_one_line_messages(tmp_path):
    """denoise.py on a broken file whose name holds a newline: every stderr line is a whole
    message (`LEVEL: ...`), the name written with `\\n`."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "we\nird.png").write_bytes(b"not an image")
    command = [sys.executable, str(ROOT / "denoise.py"), str(inputs), "-o", str(tmp_path / "out")]
    command += ["--num_iter", "4", "--save_iter", "2", "--gpu_id", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert lines and all(re.match(r"(INFO|WARNING|ERROR|note): ", line) for line in lines), lines
    assert any("we\\nird.png" in line for line in lines), lines
