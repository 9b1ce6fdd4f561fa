"""Each default has one source: the flag tables of docs/USAGE.md and the scripts' parsers agree,
the prose there gives denoise.py's defaults, and the flags whose setting lives in a dataclass take
its default."""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys
from fractions import Fraction

import pytest

import denoise
import generator_dataset
import run_BDN
import train_BIQAN
from models.biqan_config import BiqanConfig
from models.skip import SkipConfig
from tests.conftest import ROOT, make_pair
from tools import flag_tables
from utils import selection
from utils.biqan.labels import LabelSettings
from utils.biqan.settings import StageSettings, TrainingSettings
from utils.dip import planning, run_options
from utils.method import FitSettings

# the flag tables of docs/USAGE.md, one marked block per script (written by tools/flag_tables.py)
DOCUMENT = flag_tables.DOCUMENT
BLOCK = re.compile(r"<!-- BEGIN flags:(\S+) -->\n(.*?)<!-- END flags:\1 -->", re.DOTALL)
SCRIPTS = {script: flag_tables.script_module(script) for script in flag_tables.SCRIPTS}
NUMBER = re.compile(r"^-?[0-9.]+(e-?[0-9]+)?(/[0-9]+)?$")
WORD = re.compile(r"^[a-z_0-9]+$")


def table_rows() -> list[tuple[object, str, str]]:
    """(script, flag, default as written) of every row of the flag tables of docs/USAGE.md."""
    rows = []
    for name, body in BLOCK.findall(DOCUMENT.read_text(encoding="utf-8")):
        for line in body.splitlines():
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            flags = re.findall(r"`(--[a-z_]+)`", cells[0])
            if line.startswith("| `-") and len(cells) >= 3 and flags:
                rows.append((SCRIPTS[name], flags[0], cells[1].strip("`")))
    return rows


def same_default(written: str, default: object) -> bool | None:
    """Whether the documented value is the parser's default; None when it is prose."""
    if isinstance(default, bool):
        return written == str(default).lower() if written in ("true", "false") else None
    if NUMBER.match(written) and isinstance(default, (int, float)):
        return float(Fraction(written)) == pytest.approx(default)
    if WORD.match(written) and isinstance(default, str):
        return written == default
    return None


def test_flag_tables_give_the_parsers_defaults():
    rows = table_rows()
    assert {script for script, _, _ in rows} == set(SCRIPTS.values())
    checked = []
    for script, flag, written in rows:
        default = script.build_parser().get_default(flag[2:])
        verdict = same_default(written, default)
        if verdict is not None:
            checked.append(flag)
            assert verdict, (
                f"docs/USAGE.md: {script.__name__} {flag} {written}, the parser: {default}"
            )
    assert len(checked) >= 40, checked


def test_run_bdn_without_flags_fits_the_design_method(tmp_path):
    """No flags: the settings run_options builds are upstream DIP's (docs: DESIGN.md), every
    one spelled out, so a changed default in a dataclass or a flag fails here."""
    make_pair(tmp_path, "a")
    args = run_BDN.parse_args(
        ["--dataset_real_path", str(tmp_path / "real"), "--output_path", str(tmp_path / "out")]
    )
    assert run_options.fit_settings(args) == FitSettings(
        num_iter=3000,
        save_iter=20,
        lr=0.01,
        reg_noise_std=1 / 30,
        target_noise_std=0.0,
        exp_weight=0.99,
        input_noise_scale=0.1,
        backtrack_db=5.0,
        reg_noise_random=False,
        target_noise_random=False,
        input_kind="noise",
    )
    assert run_options.network_config(args) == SkipConfig(
        input_depth=32,
        output_channels=3,
        channels_down=128,
        channels_up=128,
        channels_skip=4,
        num_scales=5,
        net_type="skip",
    )
    assert args.checkpoint_every == planning.RunSettings.checkpoint_every
    assert args.precision == ("bf16" if run_options.native_bf16(args.device) else "fp32")
    assert args.early_stop == "none"
    assert denoise.build_parser().parse_args(["in.png", "-o", "out"]).num_iter is None  # auto
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


def test_biqan_flags_default_to_the_design_values():
    """train_BIQAN.py's and generator_dataset.py's defaults are the design's numbers (a MobileNet
    of alpha 1 at 224 px, dropout 0.75, the stages' callbacks; labels 8..45 dB, std 1, the
    first 8 snapshots skipped), and every one is its dataclass field's (one source)."""
    parser = train_BIQAN.build_parser()
    expected = {
        "classification_model": "mobilenet",
        "alpha": 1.0,
        "image_size": 224,
        "input_mode": "resize",
        "momentum": 0.9,
        "early_stopping_patience": 8,
        "reduce_lr_factor": 0.2,
        "reduce_lr_patience": 2,
    }
    assert {name: parser.get_default(name) for name in expected} == expected
    assert BiqanConfig().dropout == 0.75
    network = dataclass_defaults(BiqanConfig, {"architecture": "classification_model"})
    stage = dataclass_defaults(StageSettings)
    del stage["freeze_batchnorm"]  # set from --weights, not a flag
    sources = {**dataclass_defaults(TrainingSettings), **stage}
    sources |= {name: network[name] for name in ("classification_model", "alpha", "image_size")}
    sources["input_mode"] = network["input_mode"]
    assert {name: parser.get_default(name) for name in sources} == sources
    labels_flags = {"use_exp": "is_use_exp", "fixed_range": "is_use_fix_minmax"}
    parser = generator_dataset.build_parser()
    expected = {"start_position": 8, "min_psnr": 8.0, "max_psnr": 45.0, "score_std": 1.0}
    assert {name: parser.get_default(name) for name in expected} == expected
    sources = dataclass_defaults(LabelSettings, labels_flags)
    assert {name: parser.get_default(name) for name in sources} == sources


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


def test_usage_prose_gives_denoise_defaults():
    defaults = denoise.build_parser().parse_args(["in.png", "-o", "out"])
    usage = " ".join(DOCUMENT.read_text(encoding="utf-8").split())
    expected = (
        f"online `{defaults.early_stop}` stopping (window {defaults.wmv_window} and patience "
        f"`{selection.AUTO if defaults.patience is None else defaults.patience}` iterations",
        f"at most `--num_iter` {selection.AUTO}: {FitSettings.num_iter} iterations",
        f"over about {selection.stop_side(FitSettings.num_iter):.0f}x",
    )
    for side in (256, 512):  # the stops the prose gives, a snapshot at or after the scaled stop
        stop = math.ceil(selection.scaled_stop(side, side) / FitSettings.save_iter)
        assert f"{stop * FitSettings.save_iter} " in usage.split(f"on a {side}x{side}")[0][-30:]
    assert defaults.num_iter is None
    for text in expected:
        assert text in usage, text
