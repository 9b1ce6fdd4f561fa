"""tools/flag_tables.py: docs/USAGE.md's flag tables are the ones the parsers generate, so a
changed default or help text cannot leave the document stale."""

from __future__ import annotations

import argparse

import pytest

from tests.conftest import ROOT
from tools import flag_tables


def test_committed_tables_are_the_generated_ones():
    text = flag_tables.DOCUMENT.read_text(encoding="utf-8")
    for script in flag_tables.SCRIPTS:
        assert (ROOT / script).is_file(), script
        assert flag_tables.BLOCK.format("BEGIN", script) in text, script
    assert flag_tables.main(["--check"]) == 0, "run python -m tools.flag_tables"


def test_every_visible_flag_has_a_row():
    text = flag_tables.DOCUMENT.read_text(encoding="utf-8")
    for script in flag_tables.SCRIPTS:
        body = text.split(flag_tables.BLOCK.format("BEGIN", script))[1]
        body = body.split(flag_tables.BLOCK.format("END", script))[0]
        parser = flag_tables.importlib.import_module(script[:-3]).build_parser()
        for action in parser._actions:
            name = (action.option_strings or [action.dest])[-1]
            shown = action.help != argparse.SUPPRESS and name != "--help"
            assert (f"`{name}`" in body) == shown, (script, name)


def test_a_changed_default_makes_the_check_fail(tmp_path, monkeypatch):
    document = tmp_path / "USAGE.md"
    document.write_text(flag_tables.DOCUMENT.read_text(encoding="utf-8"), encoding="utf-8")
    assert flag_tables.main(["--check", "--document", str(document)]) == 0
    stale = document.read_text(encoding="utf-8").replace(
        "| `--num_iter` | `3000` |", "| `--num_iter` | `3500` |", 1
    )
    document.write_text(stale, encoding="utf-8")
    assert flag_tables.main(["--check", "--document", str(document)]) == 1
    assert flag_tables.main(["--document", str(document)]) == 0  # rewrites it
    assert document.read_text(encoding="utf-8") == flag_tables.DOCUMENT.read_text(encoding="utf-8")


def test_a_missing_block_is_an_error():
    with pytest.raises(ValueError, match="flags:run_BDN.py"):
        flag_tables.rewrite("no tables here", {"run_BDN.py": "| table |"})


@pytest.mark.parametrize(
    ("default", "written"),
    [(1 / 30, "1/30"), (0.01, "0.01"), (1e-4, "0.0001"), (True, "true"), (None, ""), (8, "8")],
)
def test_default_text(default, written):
    action = argparse.Action(["--x"], "x", default=default)
    assert flag_tables.default_text(action) == written


def test_cells_are_escaped():
    assert flag_tables.escape("a | b <stem> *.h5\n  c") == "a \\| b \\<stem> \\*.h5 c"
