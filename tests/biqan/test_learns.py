"""BIQAN learns: on a task with an obvious quality signal (`tests.biqan.learning_task`: noisy
copies of smooth images, labels from their PSNR), step 3's training lowers the validation
loss, the best checkpoint holds the best epoch's weights, and the reloaded model ranks each
validation image's snapshots by PSNR. On both Keras backends, each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.biqan.test_chain import BACKENDS
from tests.conftest import ROOT


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_learns_the_quality_signal(tmp_path: Path, backend: str):
    environment = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "OMP_NUM_THREADS": "1",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tests.biqan.learning_task", str(tmp_path)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    losses = result["val_loss"]
    best_epoch = losses.index(min(losses)) + 1
    # measured: 0.23 before training, 0.115 (torch) and 0.126 (tensorflow) at best
    assert min(losses) < 0.7 * result["initial_val_loss"], result
    assert result["best_val_loss"] == pytest.approx(min(losses))
    # the final weights (after the harmful stage 2) are worse: the checkpoint must be older
    assert result["final_val_loss"] > min(losses) + 0.05, result
    assert result["best_checkpoint"] == f"weights.{best_epoch:03d}-{min(losses):.3f}.weights.h5"
    assert result["reloaded_val_loss"] == pytest.approx(min(losses), abs=1e-4)
    # measured: 0.76 to 0.79 on both backends; an untrained head gives a constant score (NaN)
    assert min(result["srcc"]) > 0.5, result["srcc"]
