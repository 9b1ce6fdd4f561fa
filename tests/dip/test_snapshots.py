"""utils/dip/snapshots.py: snapshot files and metrics rows, early stops, state files, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.skip import SkipConfig
from utils import image_io, run_output
from utils.dip import snapshots
from utils.dip.fitting import DipFit, Padding, build_network, run_fit, to_tensor
from utils.method import FitSettings, RuleOptions, WmvRule

CONFIG = SkipConfig(input_depth=4, channels_down=8, channels_up=8, channels_skip=2, num_scales=2)


def tiny_fit(noisy: np.ndarray, num_iter: int, save_iter: int) -> DipFit:
    """A DIP fit of one 32x32 colour image with a tiny network, on the CPU."""
    net = build_network(CONFIG, seed=0, device=torch.device("cpu"))
    settings = FitSettings(num_iter=num_iter, save_iter=save_iter)
    return DipFit(net, to_tensor(noisy, torch.device("cpu")), settings, seeds=[0])


def target(folder, noisy, clean=None, stopper=None) -> snapshots.SnapshotTarget:
    """A snapshot target of a 32x32 image that needs no padding."""
    padding = Padding(top=0, left=0, height=32, width=32)
    return snapshots.SnapshotTarget(folder, padding, noisy, clean, 8, [], stopper)


def test_format_value_and_metrics_csv():
    assert run_output.format_value(None) == ""
    assert run_output.format_value(27.123456789) == "27.1235"
    assert run_output.format_value(float("nan")) == "nan"
    text = run_output.metrics_csv(
        [
            {
                "iteration": 10,
                "loss": 0.5,
                "psnr_noisy": 20.0,
                "psnr_raw": None,
                "ssim_raw": None,
                "psnr_avg": None,
                "ssim_avg": None,
            }
        ]
    )
    assert text == ",".join(run_output.METRICS_COLUMNS) + "\n10,0.5,20,,,,\n"


def test_snapshot_metrics_blind_and_with_reference():
    rng = np.random.default_rng(0)
    clean = rng.random((16, 16, 3)).astype(np.float32)
    noisy = np.clip(clean + 0.1, 0, 1)
    blind = snapshots.snapshot_metrics(noisy, clean, noisy, None)
    assert 10 < blind["psnr_noisy"] < 30
    assert blind["psnr_raw"] is blind["psnr_avg"] is blind["ssim_avg"] is None
    row = snapshots.snapshot_metrics(clean, noisy, noisy, clean)
    assert row["psnr_raw"] > 100 and row["ssim_raw"] == pytest.approx(1.0)
    assert row["psnr_avg"] == pytest.approx(blind["psnr_noisy"]) and row["ssim_avg"] < 1


def test_writer_saves_every_save_iter_with_one_metrics_row_each(tmp_path):
    rng = np.random.default_rng(1)
    noisy = rng.random((32, 32, 3)).astype(np.float32)
    fit = tiny_fit(noisy, num_iter=12, save_iter=4)
    image = target(tmp_path / "a", noisy, clean=noisy)
    writer = snapshots.SnapshotWriter([image], save_iter=4)
    try:
        run_fit(fit, [writer])
    finally:
        writer.close()
    assert sorted(path.name for path in (tmp_path / "a").glob("0*.png")) == [
        "00004.png",
        "00008.png",
        "00012.png",
    ]
    metrics = run_output.read_metrics(tmp_path / "a")
    np.testing.assert_array_equal(metrics.iteration, [4, 8, 12])
    saved = image_io.read_image(run_output.snapshot_path(tmp_path / "a", 12)).pixels
    assert saved.shape == (32, 32, 3)
    assert metrics.psnr_noisy[-1] == pytest.approx(metrics.psnr_avg[-1], abs=1e-3)


def test_writer_stops_the_fit_one_snapshot_after_the_rule_fires(tmp_path):
    noisy = np.random.default_rng(2).random((32, 32, 3)).astype(np.float32)
    fit = tiny_fit(noisy, num_iter=400, save_iter=2)
    image = target(tmp_path / "a", noisy, stopper=WmvRule(RuleOptions(window=2, patience=1)))
    writer = snapshots.SnapshotWriter([image], save_iter=2)
    try:
        run_fit(fit, [writer])
    finally:
        writer.close()
    assert image.stop_iteration is not None and fit.iteration < 400
    assert fit.iteration == image.stop_iteration + 2
    last_saved = max(int(path.stem) for path in (tmp_path / "a").glob("0*.png"))
    assert last_saved == image.stop_iteration


def test_checkpointer_state_resumes_where_it_stopped(tmp_path):
    noisy = np.random.default_rng(3).random((32, 32, 3)).astype(np.float32)
    folder = tmp_path / "a"
    assert snapshots.load_resume_state(folder, torch.device("cpu")) is None
    assert snapshots.resume_iteration(folder) == 0
    fit = tiny_fit(noisy, num_iter=20, save_iter=5)
    image = target(folder, noisy)
    writer = snapshots.SnapshotWriter([image], save_iter=5)
    checkpointer = snapshots.Checkpointer(writer, every=10, elapsed=[1.5])
    try:
        run_fit(fit, [writer, checkpointer])
    finally:
        writer.close()
    state = snapshots.load_resume_state(folder, torch.device("cpu"))
    assert snapshots.resume_iteration(folder) == 10  # not at num_iter: the last save is at 10
    assert [row["iteration"] for row in state["rows"]] == [5, 10]
    assert state["elapsed"] >= 1.5
    (folder / run_output.STATE_FILE).write_bytes(b"not a state")
    with pytest.raises(ValueError, match="damaged resume state"):
        snapshots.resume_iteration(folder)
