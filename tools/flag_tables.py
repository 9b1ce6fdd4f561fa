"""Write the flag tables of docs/USAGE.md from the scripts' argparse parsers.

    python -m tools.flag_tables            # rewrite the tables in docs/USAGE.md
    python -m tools.flag_tables --check    # exit 1 when a table differs from its parser

Each table goes between `<!-- BEGIN flags:SCRIPT -->` and `<!-- END flags:SCRIPT -->` (SCRIPT
being e.g. `run_BDN.py`); the text around them is written by hand and left alone. One table per
argument group of the script's `build_parser()`, in the parser's order, with each flag's default
and help text, so that a default is written once (in the code) and a changed default or help
changes the document (tests/cli/test_flag_tables.py checks that the committed tables are the
generated ones). Flags hidden from `--help` (the original code's ignored or refused flags) are
left out, as in `--help`.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "USAGE.md"
SCRIPTS = ("run_BDN.py", "generator_dataset.py", "train_BIQAN.py", "test_BIQAN.py", "denoise.py")
DEFAULT_GROUPS = ("positional arguments", "options", "optional arguments")
REDUNDANT_DEFAULT = re.compile(r"\s*\(default: %\(default\)s\)")
BLOCK = "<!-- {} flags:{} -->"


def default_text(action: argparse.Action) -> str:
    """The default of `action` as the table writes it: `required`, `off`/`on` for a switch,
    empty when there is none (the help says what happens then)."""
    value = action.default
    if action.required:
        return "required"
    if action.nargs == 0:
        return "on" if value else "off"
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        fraction = Fraction(value).limit_denominator(1000)
        short = f"{fraction.numerator}/{fraction.denominator}"
        return short if len(repr(value)) > 8 and float(fraction) == value else repr(value)
    if isinstance(value, Path):
        return value.relative_to(ROOT).as_posix() if value.is_relative_to(ROOT) else str(value)
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


def escape(text: str) -> str:
    """`text` safe inside a markdown table cell."""
    for character in ("\\", "|", "*", "<"):
        text = text.replace(character, "\\" + character)
    return " ".join(text.split())


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help of `action` as `--help` prints it, without the default that the default column
    gives, and with the choices where the help does not name them all."""
    text = REDUNDANT_DEFAULT.sub("", action.help or "")
    text = text % {**vars(action), "prog": parser.prog} if "%" in text else text
    choices = [str(choice) for choice in action.choices or ()]
    if choices and not all(re.search(rf"\b{re.escape(c)}\b", text) for c in choices):
        text += f" (one of: {', '.join(choices)})"
    return escape(text)


def flag_cell(action: argparse.Action) -> str:
    names = action.option_strings or [action.dest]
    return ", ".join(f"`{name}`" for name in names)


def table(parser: argparse.ArgumentParser) -> str:
    """The markdown tables of `parser`'s flags: the ungrouped ones (positional arguments first),
    then one table per argument group."""
    groups = [group for group in parser._action_groups if group.title not in DEFAULT_GROUPS]
    unnamed = [group for group in parser._action_groups if group.title in DEFAULT_GROUPS]
    parts = []
    for group in [None, *groups]:
        members = group._group_actions if group else [a for g in unnamed for a in g._group_actions]
        actions = [
            action
            for action in members
            if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        ]
        if not actions:
            continue
        if group is not None:
            title = f"**{escape(group.title)}**"
            if group.description:
                title += f": {escape(group.description)}"
            parts.append(title)
        rows = ["| flag | default | meaning |", "|---|---|---|"]
        for action in actions:
            default = default_text(action)
            default = f"`{default}`" if default and default != "required" else default
            rows.append(f"| {flag_cell(action)} | {default} | {help_text(parser, action)} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def script_module(script: str) -> ModuleType:
    """The module of `script` (a file name at the repository's top, e.g. `run_BDN.py`)."""
    return importlib.import_module(Path(script).stem)


def script_table(script: str) -> str:
    """The tables of `script` (a file name at the repository's top)."""
    return table(script_module(script).build_parser())


def rewrite(text: str, tables: dict[str, str]) -> str:
    """`text` with the block of each script of `tables` replaced by its table."""
    for script, body in tables.items():
        begin, end = BLOCK.format("BEGIN", script), BLOCK.format("END", script)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        if len(pattern.findall(text)) != 1:
            raise ValueError(f"{begin} ... {end} must appear once in the document")
        block = f"{begin}\n{body}\n{end}"
        text = pattern.sub(lambda _, block=block: block, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report tables that differ; exit 1 if any"
    )
    parser.add_argument("--document", type=Path, default=DOCUMENT, help="document to rewrite")
    args = parser.parse_args(argv)
    old = args.document.read_text(encoding="utf-8")
    new = rewrite(old, {script: script_table(script) for script in SCRIPTS})
    if args.check:
        if new != old:
            print(f"{args.document}: flag tables out of date; run python -m tools.flag_tables")
            return 1
        return 0
    if new != old:
        args.document.write_text(new, encoding="utf-8")
        print(f"{args.document}: flag tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
