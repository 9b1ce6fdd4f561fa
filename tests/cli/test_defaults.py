"""Each default has one source: the README's flag tables and the scripts' parsers agree, and the
flags whose setting lives in a dataclass take its default."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from fractions import Fraction

import pytest

import denoise
import generator_dataset
import run_BDN
import test_BIQAN
import train_BIQAN
from models.biqan_config import BiqanConfig
from models.skip import SkipConfig
from tests.conftest import ROOT
from utils.biqan.labels import LabelSettings
from utils.biqan.settings import StageSettings, TrainingSettings
from utils.dip import planning, run_options
from utils.dip.fitting import FitSettings

# README heading (a part of it) -> the script whose flags its tables list
SECTIONS = {
    "(`run_BDN.py`)": run_BDN,
    "`generator_dataset.py`": generator_dataset,
    "`train_BIQAN.py`": train_BIQAN,
    "`test_BIQAN.py`": test_BIQAN,
    "Online early stopping": run_BDN,
}
NUMBER = re.compile(r"^-?[0-9.]+(e-?[0-9]+)?(/[0-9]+)?$")
WORD = re.compile(r"^[a-z_0-9]+$")


def readme_rows() -> list[tuple[object, str, str]]:
    """(script, flag, default as written) of every flag-table row of the README that gives one
    default per flag."""
    rows, script = [], None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            script = next((module for key, module in SECTIONS.items() if key in line), None)
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if script is None or not line.startswith("| `--") or len(cells) < 3:
            continue
        flags = re.findall(r"`(--[a-z_]+)`", cells[0])
        values = [value.strip().strip("`") for value in re.split(r", | / ", cells[1])]
        if len(flags) == len(values):
            rows += [(script, flag, value) for flag, value in zip(flags, values)]
    return rows


def same_default(written: str, default: object) -> bool | None:
    """Whether the README's value is the parser's default; None when it is prose."""
    if isinstance(default, bool):
        return written == str(default).lower() if written in ("true", "false") else None
    if NUMBER.match(written) and isinstance(default, (int, float)):
        return float(Fraction(written)) == pytest.approx(default)
    if WORD.match(written) and isinstance(default, str):
        return written == default
    return None


def test_readme_flag_tables_give_the_parsers_defaults():
    checked = []
    for script, flag, written in readme_rows():
        default = script.build_parser().get_default(flag[2:])
        verdict = same_default(written, default)
        if verdict is not None:
            checked.append(flag)
            assert verdict, f"README: {script.__name__} {flag} {written}, the parser: {default}"
    assert len(checked) >= 40, checked


def test_dip_flags_take_their_dataclass_defaults():
    parser = run_BDN.build_parser()
    for field in dataclasses.fields(FitSettings):
        if field.name in {action.dest for action in parser._actions}:
            assert parser.get_default(field.name) == field.default, field.name
    assert parser.get_default("channels") == SkipConfig.channels_down
    assert parser.get_default("checkpoint_every") == planning.RunSettings.checkpoint_every
    assert denoise.build_parser().get_default("num_iter") == FitSettings.num_iter
    assert run_BDN.build_parser().get_default("precision") == run_options.AUTO_PRECISION
    assert denoise.build_parser().get_default("precision") == run_options.AUTO_PRECISION
    with pytest.raises(ValueError, match="no default"):
        run_options.field_default(planning.RunSettings, "device")


def dataclass_defaults(settings_class: type, flags: dict[str, str] | None = None) -> dict:
    """Flag destination -> default of every field of `settings_class` that has one (`flags`
    renames fields whose flag has another name)."""
    return {
        (flags or {}).get(field.name, field.name): field.default
        for field in dataclasses.fields(settings_class)
        if field.default is not dataclasses.MISSING
    }


def test_biqan_flags_take_their_dataclass_defaults():
    parser = train_BIQAN.build_parser()
    network = dataclass_defaults(BiqanConfig, {"architecture": "classification_model"})
    stage = dataclass_defaults(StageSettings)
    del stage["freeze_batchnorm"]  # set from --weights, not a flag
    expected = {**dataclass_defaults(TrainingSettings), **stage}
    names = ("classification_model", "alpha", "image_size", "input_mode")
    expected |= {name: network[name] for name in names}
    assert {name: parser.get_default(name) for name in expected} == expected
    assert len(expected) == 17
    labels_flags = {"use_exp": "is_use_exp", "fixed_range": "is_use_fix_minmax"}
    expected = dataclass_defaults(LabelSettings, labels_flags)
    parser = generator_dataset.build_parser()
    assert {name: parser.get_default(name) for name in expected} == expected
    assert len(expected) == 7


def test_biqan_parsers_load_without_keras():
    """The defaults' dataclasses import no Keras: the parsers build without a Keras backend."""
    code = (
        "import sys, generator_dataset, train_BIQAN\n"
        "train_BIQAN.build_parser(); generator_dataset.build_parser()\n"
        "print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_readme_prose_gives_denoise_defaults():
    defaults = denoise.build_parser().parse_args(["in.png", "-o", "out"])
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    expected = (
        f"online `{defaults.early_stop}` stopping (window {defaults.wmv_window} and patience "
        f"{defaults.patience} iterations",
        f"at most `--num_iter` {defaults.num_iter}",
    )
    for text in expected:
        assert text in readme, text
