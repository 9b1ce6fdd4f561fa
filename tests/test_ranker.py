"""The snapshot ranker: features (utils/snapshot_features.py), the model file
(models/snapshot_ranker.py), its training (utils/ranker_training.py), and the ranker through
train_BIQAN.py, test_BIQAN.py and run_BDN.py --early_stop ranker (online pick = offline pick)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import generator_dataset
import run_BDN
import test_BIQAN
import train_BIQAN
from models import snapshot_ranker
from tests.biqan.test_chain import noisy_pair
from utils import (
    early_stopping,
    image_io,
    ranker_training,
    run_output,
    selection,
    snapshot_features,
)


def test_robust_sigma_reads_white_noise_on_a_flat_image():
    rng = np.random.default_rng(0)
    noisy = 0.5 + rng.normal(0, 0.05, (64, 64, 3))
    assert 0.035 < snapshot_features.robust_sigma(noisy) < 0.055


def test_features_see_the_residual_turn_from_structure_to_noise():
    rng = np.random.default_rng(1)
    rows, columns = np.mgrid[0:64, 0:64] / 64.0
    clean = np.repeat((0.5 + 0.3 * np.sin(6 * columns + 4 * rows))[..., None], 3, axis=2)
    noisy = clean + rng.normal(0, 0.04, clean.shape)
    tracker = snapshot_features.FeatureTracker(noisy)
    names = snapshot_features.FEATURE_NAMES
    flat = dict(zip(names, tracker.push(np.full_like(clean, 0.5))))
    exact = dict(zip(names, tracker.push(clean)))
    copied = dict(zip(names, tracker.push(noisy)))
    # under-fit: the residual is the smooth image itself, strongly correlated; at the clean
    # image it is the white noise; a copy of the noisy input leaves no residual
    assert flat["residual_correlation"] > 0.9
    assert abs(exact["residual_correlation"]) < 0.05
    assert flat["residual_db"] > exact["residual_db"] > copied["residual_db"]
    assert copied["fit_db"] > exact["fit_db"] > flat["fit_db"]
    assert copied["detail_db"] == pytest.approx(0.0, abs=1e-9)
    assert exact["fit_rate_db"] == pytest.approx(exact["fit_db"] - flat["fit_db"])
    with pytest.raises(ValueError, match="differs from the noisy input"):
        tracker.push(clean[:32])


def synthetic_images(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images whose PSNR peaks where feature 0 crosses an image-specific level given by feature 1."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        level = rng.uniform(-1, 1)
        progress = np.linspace(-2, 2, 30)
        features = np.column_stack([progress, np.full(30, level), rng.normal(0, 1, 30)])
        psnr = 35.0 + rng.uniform(-3, 3) - 2.0 * (progress - level) ** 2
        images.append((features, psnr))
    return images


def test_trained_ranker_orders_held_out_images_and_round_trips(tmp_path: Path):
    settings = ranker_training.RankerTraining(steps=400)
    ranker = ranker_training.train_ranker(synthetic_images(20, 0), ("a", "b", "c"), settings)
    gaps = [
        ranker_training.ranking_quality(ranker.score(features), psnr)
        for features, psnr in synthetic_images(10, 1)
    ]
    assert np.mean([srcc for srcc, _, _ in gaps]) > 0.8
    assert np.mean([gap for _, _, gap in gaps]) < 0.2
    loaded = snapshot_ranker.load_ranker(snapshot_ranker.save_ranker(ranker, tmp_path))
    features = synthetic_images(1, 2)[0][0]
    np.testing.assert_array_equal(loaded.score(features), ranker.score(features))
    with pytest.raises(ValueError, match=r"expected features of shape \(N, 3\)"):
        ranker.score(features[:, :2])


def test_the_ranker_trains_on_one_thread_and_gives_the_others_back(monkeypatch):
    """Its rounding, and so the committed tables built on it, independent of the core count."""
    seen = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self: seen.append(torch.get_num_threads()) or step(self)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        settings = ranker_training.RankerTraining(steps=3)
        ranker_training.train_ranker(synthetic_images(2, 0), ("a", "b", "c"), settings)
        assert seen == [1, 1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_broken_ranker_files_are_one_line_errors(tmp_path: Path):
    path = tmp_path / snapshot_ranker.RANKER_FILE
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a snapshot ranker"):
        snapshot_ranker.load_ranker(tmp_path)
    path.write_text(
        json.dumps(
            {
                "format_version": 1,
                "feature_names": ["a"],
                "feature_mean": [0],
                "feature_scale": [1],
                "weights": [[[1.0, 2.0]]],
                "biases": [[0, 0]],
            }
        )
    )
    with pytest.raises(ValueError, match="do not chain"):
        snapshot_ranker.load_ranker(path)
    with pytest.raises(ValueError, match="temperature_db"):
        ranker_training.RankerTraining(temperature_db=float("nan"))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A run_BDN output of two 64x64 images with references: 60 iterations, snapshot every 4."""
    root = tmp_path_factory.mktemp("ranker")
    for seed, stem in enumerate(("a", "b")):
        clean, noisy = noisy_pair(seed, grayscale=stem == "b")
        image_io.write_png(root / "real" / f"{stem}.png", noisy)
        image_io.write_png(root / "mean" / f"{stem}.png", clean)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_BDN.main(run_BDN.parse_args(small_run_flags(root, root / "run"))) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def small_run_flags(root: Path, output: Path) -> list[str]:
    return [
        "--dataset_real_path",
        str(root / "real"),
        "--dataset_mean_path",
        str(root / "mean"),
        "--output_path",
        str(output),
        "--num_iter",
        "60",
        "--save_iter",
        "4",
        "--channels",
        "16",
        "--num_scales",
        "3",
        "--input_depth",
        "8",
        "--gpu_id",
        "cpu",
        "--quiet",
    ]


def test_ranker_through_the_scripts_online_equals_offline(small_run: Path, tmp_path: Path):
    run = small_run / "run"
    labels_file = tmp_path / "labels.txt"
    assert (
        generator_dataset.main(
            generator_dataset.parse_args(
                [
                    "--dataset_path",
                    str(run),
                    "--output_path",
                    str(labels_file),
                    "--start_position",
                    str(early_stopping.RANKER_SKIP),
                ]
            )
        )
        == 0
    )
    checkpoint = tmp_path / "ranker"
    assert (
        train_BIQAN.main(
            train_BIQAN.parse_args(
                [
                    "--dataset_image_path",
                    str(run),
                    "--dataset_file_path",
                    str(labels_file),
                    "--output_checkpoint",
                    str(checkpoint),
                    "--output_path",
                    str(tmp_path / "train"),
                    "--classification_model",
                    "ranker",
                    "--validation_fraction",
                    "0.5",
                ]
            )
        )
        == 0
    )
    assert (checkpoint / snapshot_ranker.RANKER_FILE).is_file()
    assert (tmp_path / "train" / "ranker_validation.csv").is_file()

    selected = tmp_path / "selected"
    assert (
        test_BIQAN.main(
            test_BIQAN.parse_args(
                [
                    "--dataset_image_path",
                    str(run),
                    "--output_path",
                    str(selected),
                    "--selector",
                    "ranker",
                    "--ranker",
                    str(checkpoint),
                    "--start_index",
                    str(early_stopping.RANKER_SKIP),
                ]
            )
        )
        == 0
    )
    with (selected / "selection.csv").open(newline="") as handle:
        offline = {row["image"]: int(row["picked_iteration"]) for row in csv.DictReader(handle)}

    # online: the same rule with patience longer than the run never fires early, so the pick
    # is the argmax over the same snapshots as offline
    online = tmp_path / "online"
    flags = small_run_flags(small_run, online) + [
        "--early_stop",
        "ranker",
        "--pre_trained_model",
        str(checkpoint),
        "--patience",
        "60",
        "--wmv_window",
        "8",
    ]
    assert run_BDN.main(run_BDN.parse_args(flags)) == 0
    for stem, iteration in offline.items():
        assert (online / stem / "denoised.png").read_bytes() == run_output.snapshot_path(
            run / stem, iteration
        ).read_bytes()


def test_noisy_input_is_found_or_named(small_run: Path, tmp_path: Path):
    run = small_run / "run"
    assert run_output.noisy_input(run, "a") == small_run / "real" / "a.png"
    with pytest.raises(ValueError, match="no single noisy image named zz"):
        run_output.noisy_input(run, "zz")
    with pytest.raises(ValueError, match="--noisy_path"):
        run_output.noisy_input(tmp_path, "a")


def test_ranker_warns_when_snapshots_are_saved_at_another_interval(tmp_path: Path):
    images = synthetic_images(4, 3)
    settings = ranker_training.RankerTraining(steps=5)
    ranker = ranker_training.train_ranker(images, ("a", "b", "c"), settings, snapshot_interval=20)
    loaded = snapshot_ranker.load_ranker(snapshot_ranker.save_ranker(ranker, tmp_path))
    assert loaded.interval_warning(20) is None
    assert "every 20 iterations, these are every 100" in loaded.interval_warning(100)


def test_test_biqan_without_flags_needs_no_trained_model(small_run: Path, tmp_path: Path):
    args = test_BIQAN.parse_args(
        ["--dataset_image_path", str(small_run / "run"), "--output_path", str(tmp_path / "picked")]
    )
    assert [selector.label for selector in args.selector] == ["wmv"]
    assert test_BIQAN.wmv_in_snapshots(args, 4) == selection.DEFAULT_WMV
    assert test_BIQAN.main(args) == 0
    with (tmp_path / "picked" / "selection.csv").open(newline="") as handle:
        assert {row["selector"] for row in csv.DictReader(handle)} == {"wmv"}


def test_early_stop_ranker_without_a_ranker_is_a_flag_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no snapshot ranker at"):
        early_stopping.from_iterations("ranker", 40, 40, 20, tmp_path / "absent.json")
