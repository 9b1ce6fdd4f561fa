"""The README and the documents it links: the README stays a ten-minute read, its one command per
step parses with that step's flags, and every relative link (file and section) resolves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools import flag_tables

README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = {script: flag_tables.script_module(script) for script in flag_tables.SCRIPTS}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The text of `path` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of `path` (lower case, punctuation dropped, spaces to
    hyphens; a repeated heading gets -1, -2, ...)."""
    found: set[str] = set()
    for heading in re.findall(r"^#+ (.*)$", prose(path), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, count = slug, 0
        while candidate in found:
            count += 1
            candidate = f"{slug}-{count}"
        found.add(candidate)
    return found


def test_readme_is_a_ten_minute_read():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_relative_links_resolve(document):
    broken = []
    for target in LINK.findall(prose(document)):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    assert not broken, f"{document.name}: {broken}"


def test_the_four_steps_table_has_one_command_each_that_parses():
    readme = README.read_text(encoding="utf-8")
    section = readme.split("## The four steps", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(
        r"^\| [^|]+ \| `([a-zA-Z_]+\.py)` \|.*\| `python \1 ([^`]*)` \|$", section, re.M
    )
    assert [script for script, _ in commands] == list(SCRIPTS), commands
    for script, arguments in commands:
        SCRIPTS[script].build_parser().parse_args(shlex.split(arguments))
