"""The pick follows the model: with a BIQAN whose scores are known, test_BIQAN.py's offline
`biqan` pick and run_BDN.py's online `--early_stop biqan` pick are the best-scored snapshots.

The model is a real BIQAN checkpoint (biqan.json + weights, loaded by `models.biqan.load_biqan`
in both scripts) with weights set by hand: its backbone carries the red channel through
identity and exact 2x2-average layers, so the pooled feature 0 is twice the snapshot's mean
red value `m` (the preprocessed [-1, 1] pixels shifted by 1), and its head turns that into a
score with a single peak at `m = PEAK`: bin 10 centred there, bins 1 and 2 on either side.
`expected_score` is the same function written plainly, on the pixels as saved.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402

import run_BDN  # noqa: E402
import test_BIQAN  # noqa: E402
from models import biqan  # noqa: E402
from tests.biqan.helpers import write_fake_image_folder  # noqa: E402
from utils import early_stopping, image_io, run_output, selection  # noqa: E402

SIZE = 64
PEAK = 0.3
# bin -> centre of its bump on the pooled feature (2 * mean red); the other bins never win
CENTRES = {1: 0.0, 10: 2 * PEAK, 2: 1.2}
WIDTH = 0.2
CONFIG = biqan.BiqanConfig(alpha=0.25, image_size=SIZE, input_mode="crop")


def head_logits(feature: np.ndarray) -> np.ndarray:
    """Logits (N, 10) of the head for pooled features 0 (N,): -(f - centre)^2 / (2 width^2)
    without the f^2 term all bins share, so linear in f as a Dense layer is."""
    logits = np.full((len(feature), 10), -1e4)
    for score, centre in CENTRES.items():
        logits[:, score - 1] = (centre * feature - centre**2 / 2) / WIDTH**2
    return logits


def expected_score(snapshot: np.ndarray) -> float:
    """The stub's mean score of a snapshot (H, W, 3) or (H, W) in [0, 1]."""
    red = snapshot[..., 0] if snapshot.ndim == 3 else snapshot
    logits = head_logits(np.array([2 * red.mean()]))[0]
    weights = np.exp(logits - logits.max())
    return float(weights @ np.arange(1, 11) / weights.sum())


def set_layer(layer: keras.layers.Layer, stride: int) -> None:
    """Channel 0 through `layer` unchanged (stride 1) or 2x2-averaged (stride 2); others 0."""
    if isinstance(layer, keras.layers.BatchNormalization):
        channels = layer.gamma.shape[0]
        beta = np.zeros(channels)
        beta[0] = 1.0 if layer.name == "conv1_bn" else 0.0  # [-1, 1] -> [0, 2], below ReLU's 6
        layer.set_weights(
            [np.ones(channels), beta, np.zeros(channels), np.full(channels, 1 - layer.epsilon)]
        )
        return
    (kernel,) = layer.get_weights()
    kernel = np.zeros_like(kernel)
    if kernel.shape[0] == 1:
        kernel[0, 0, 0, 0] = 1.0
    elif stride == 1:
        kernel[1, 1, 0, 0] = 1.0
    else:
        kernel[:2, :2, 0, 0] = 0.25
    layer.set_weights([kernel])


def write_stub_checkpoint(folder: Path) -> Path:
    """A BIQAN checkpoint folder (biqan.json, one weights file) scoring as `expected_score`."""
    model = biqan.build_biqan(CONFIG)
    for layer in model.get_layer(biqan.BACKBONE_NAME).layers:
        if layer.weights:
            set_layer(layer, getattr(layer, "strides", (1, 1))[0])
    kernel, bias = model.get_layer("scores").get_weights()
    kernel = np.zeros_like(kernel)
    kernel[0] = head_logits(np.array([1.0]))[0] - head_logits(np.array([0.0]))[0]
    model.get_layer("scores").set_weights([kernel, head_logits(np.array([0.0]))[0]])
    folder.mkdir(parents=True)
    model.save_weights(str(folder / "weights.001-0.100.weights.h5"))
    biqan.save_config(folder, CONFIG)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_stub_checkpoint(tmp_path_factory.mktemp("stub") / "biqan")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_stub_scores_as_written_through_the_loading_code(checkpoint):
    model, _, _ = biqan.load_biqan(checkpoint)
    rng = np.random.default_rng(0)
    images = [np.full((SIZE, SIZE, 3), level) for level in (0.05, 0.25, 0.3, 0.35, 0.6)]
    images += [rng.random((SIZE, SIZE, 3)) * 0.7 for _ in range(3)]
    predicted = biqan.predict_distributions(model, biqan.preprocess_pixels(np.stack(images)))
    np.testing.assert_allclose(
        predicted @ np.arange(1, 11), [expected_score(image) for image in images], atol=1e-3
    )
    assert expected_score(images[2]) > 9.5 and expected_score(images[0]) < 3


def select(run_folder: Path, output: Path, checkpoint: Path, *flags: str) -> dict[str, dict]:
    """test_BIQAN.py --selector biqan on `run_folder`: selection.csv rows by image."""
    argv = ["--dataset_image_path", str(run_folder), "--output_path", str(output)]
    argv += ["--pre_trained_model", str(checkpoint), "--selector", "biqan", "--gpu_id", "cpu"]
    assert test_BIQAN.main(test_BIQAN.parse_args([*argv, *flags])) == 0
    return {row["image"]: row for row in read_csv(output / "selection.csv")}


def test_offline_pick_is_the_best_score_after_start_index(checkpoint, tmp_path):
    """Uniform snapshots whose red level sets the score: the best of all (0.3, iteration 40)
    lies before --start_index; the best after it is 0.28 at iteration 130, not the last."""
    levels = [0.9, 0.6, 0.3, 0.2, 0.1, 0.05, 0.1, 0.15, 0.2, 0.25, 0.27, 0.26, 0.28, 0.5, 0.7]
    iterations = [10 * (index + 1) for index in range(len(levels))]
    folder = write_fake_image_folder(tmp_path / "run", "a", iterations, list(range(15)), SIZE)
    for iteration, level in zip(iterations, levels):
        image_io.write_png(
            run_output.snapshot_path(folder, iteration), np.full((SIZE, SIZE, 3), level)
        )
    scores = [
        expected_score(image_io.read_rgb(run_output.snapshot_path(folder, iteration)))
        for iteration in iterations
    ]
    start = selection.START_INDEX
    expected = iterations[start + int(np.argmax(scores[start:]))]
    assert expected == 130 and iterations[int(np.argmax(scores))] == 30
    (row,) = select(tmp_path / "run", tmp_path / "default", checkpoint).values()
    assert int(row["picked_iteration"]) == expected
    (row,) = select(tmp_path / "run", tmp_path / "all", checkpoint, "--start_index", "0").values()
    assert int(row["picked_iteration"]) == 30
    with open(tmp_path / "default" / "a_scores.csv", newline="") as stream:
        written = [float(line["predicted_mean"]) for line in csv.DictReader(stream)]
    np.testing.assert_allclose(written, scores[start:], atol=1e-3)


def test_online_pick_is_the_best_score_so_far_and_offline_agrees(checkpoint, tmp_path):
    """A dark image: the raw DIP output's red level falls from about 0.5 through PEAK, so the
    scores rise then fall. The online rule picks the best-scored snapshot and stops `patience`
    snapshots later; both skip the first `selection.START_INDEX` snapshots, as test_BIQAN.py's
    default `--start_index` does, and test_BIQAN.py picks the same."""
    noisy = np.clip(0.08 + np.random.default_rng(0).normal(0.0, 0.03, (SIZE, SIZE, 3)), 0.0, 1.0)
    image_io.write_png(tmp_path / "real" / "dark.png", noisy)
    argv = ["--dataset_real_path", str(tmp_path / "real"), "--output_path", str(tmp_path / "run")]
    argv += ["--input_depth", "8", "--channels", "16", "--num_scales", "3", "--gpu_id", "cpu"]
    argv += ["--num_iter", "200", "--save_iter", "1", "--exp_weight", "0", "--quiet"]
    argv += ["--early_stop", "biqan", "--pre_trained_model", str(checkpoint), "--patience", "10"]
    assert run_BDN.main(run_BDN.parse_args(argv)) == 0
    summary = json.loads((tmp_path / "run" / "dark" / "summary.json").read_text())
    metrics = run_output.read_metrics(tmp_path / "run" / "dark")
    iterations = list(metrics.iteration)
    scores = [expected_score(image_io.read_rgb(path)) for path in metrics.snapshot_paths()]
    start = selection.START_INDEX
    best = start + int(np.argmax(scores[start:]))
    assert start < best < len(scores) - 1 and max(scores[start:]) > 9, scores
    assert summary["picked_iteration"] == iterations[best]
    assert summary["stop_iteration"] == iterations[best] + 10 == iterations[-1]
    (row,) = select(tmp_path / "run", tmp_path / "offline", checkpoint).values()
    assert int(row["picked_iteration"]) == iterations[best]


def test_online_biqan_skips_the_snapshots_test_biqan_skips(checkpoint):
    """The online rule considers the snapshots test_BIQAN.py's default --start_index keeps: a
    score that is highest on the first snapshot is not picked."""
    settings = early_stopping.EarlyStopSettings(rule="biqan", model_path=checkpoint, patience=3)
    (stopper,) = early_stopping.make_stoppers(settings, [np.zeros((SIZE, SIZE, 3))])
    for index in range(selection.START_INDEX + 2):
        level = PEAK if index == 0 else 0.9  # PEAK scores best, 0.9 far worse
        stopper.push(10 * (index + 1), np.full((SIZE, SIZE, 3), level))
    assert stopper.pick_iteration == 10 * (selection.START_INDEX + 1)
