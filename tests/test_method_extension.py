"""A new stopping rule or loss is one class (or function) and one registry line.

This file alone defines a rule (`BrightestRule`: the brightest snapshot, firing after `patience`
snapshots without a brighter one) and a loss (`l1`), registers them with `method.register_rule`
and `method.register_loss`, and runs them: online in run_BDN.py and denoise.py (`--early_stop
brightest --loss l1`) and offline in test_BIQAN.py (`--selector brightest`), whose picks agree.
No other file knows them.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")

import denoise  # noqa: E402
import run_BDN  # noqa: E402
import test_BIQAN  # noqa: E402
from tests.conftest import make_pair  # noqa: E402
from utils import method  # noqa: E402

FAST = ["--save_iter", "10", "--patience", "20", "--gpu_id", "cpu", "--precision", "fp32"]
SELECT = ["--start_index", "0", "--patience", "20", "--gpu_id", "cpu", "--workers", "1"]
LOSS_CALLS: list[int] = []


class BrightestRule(method.StoppingRule):
    """The snapshot of the highest mean value; fires after `patience` snapshots without a
    brighter one."""

    def __init__(self, options: method.RuleOptions) -> None:
        super().__init__(options)
        self.brightest, self.waited = -np.inf, 0

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        brightness = round(float(np.mean(snapshot, dtype=np.float64)), 9)
        if brightness > self.brightest:
            self.brightest, self.pick_iteration, self.waited = brightness, iteration, 0
        else:
            self.waited += 1
            self.fired = self.waited >= self.options.patience


def mean_absolute_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image L1 loss of (K, C, H, W) tensors -> (K,)."""
    LOSS_CALLS.append(output.shape[0])
    return (output - target).abs().flatten(1).mean(dim=1)


@pytest.fixture
def registered():
    """The new rule and loss registered for one test (removed from the registries after it)."""
    method.register_rule("brightest")(BrightestRule)
    method.register_loss("l1")(mean_absolute_error)
    LOSS_CALLS.clear()
    yield
    del method.RULES["brightest"], method.LOSSES["l1"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def offline_picks(run: Path, output: Path) -> dict[str, int]:
    """test_BIQAN.py --selector brightest over the run folder `run`: image -> picked iteration."""
    argv = ["--dataset_image_path", str(run), "--output_path", str(output)]
    assert test_BIQAN.main(test_BIQAN.parse_args([*argv, "--selector", "brightest", *SELECT])) == 0
    return {
        row["image"]: int(row["picked_iteration"]) for row in read_csv(output / "selection.csv")
    }


def test_a_new_rule_and_loss_run_online_in_run_bdn_and_offline_alike(registered, tmp_path):
    make_pair(tmp_path, "a", seed=1)
    make_pair(tmp_path, "b", seed=2)
    data = ["--dataset_real_path", str(tmp_path / "real"), "--dataset_mean_path"]
    data += [str(tmp_path / "mean"), "--output_path", str(tmp_path / "run")]
    network = ["--input_depth", "8", "--channels", "16", "--num_iter", "200", "--quiet"]
    rule = ["--early_stop", "brightest", "--loss", "l1"]
    args = run_BDN.parse_args([*data, *network, *FAST, *rule])
    assert run_BDN.main(args) == 0
    assert LOSS_CALLS, "the registered loss was not used"
    record = json.loads((tmp_path / "run" / "args.json").read_text())
    assert record["fit"]["loss"] == "l1" and record["early_stop"]["rule"] == "brightest"
    online = {
        row["image"]: int(row["picked_iteration"])
        for row in read_csv(tmp_path / "run" / "summary.csv")
    }
    assert online == offline_picks(tmp_path / "run", tmp_path / "selected")
    assert any(row["stop_iteration"] for row in read_csv(tmp_path / "run" / "summary.csv"))


def test_a_new_rule_and_loss_run_in_denoise_as_offline(registered, tmp_path):
    make_pair(tmp_path, "a", seed=3, with_clean=False)
    output = tmp_path / "out"
    argv = [str(tmp_path / "real"), "-o", str(output), "--num_iter", "200", "--keep_snapshots"]
    args = denoise.parse_args([*argv, *FAST, "--early_stop", "brightest", "--loss", "l1"])
    assert denoise.main(args) == 0
    assert LOSS_CALLS, "the registered loss was not used"
    summary = json.loads((output / "snapshots" / "a" / "summary.json").read_text())
    assert offline_picks(output / "snapshots", tmp_path / "selected") == {
        "a": summary["picked_iteration"]
    }
