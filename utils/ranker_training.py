"""Train the snapshot ranker (models/snapshot_ranker.py) on images with clean references.

The loss is listwise, one list per image: the target is a softmax of the snapshots' PSNR at
temperature `temperature_db` (the true best and the snapshots within a few tenths of a dB of
it share the mass), the prediction a softmax of the scores, and the loss their cross-entropy.
Only the order within an image matters, so differences between images (noise level, content)
cannot dominate the loss as they do for absolute PSNR labels.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from models.snapshot_ranker import SnapshotRanker
from utils import cli, image_io, ownership, run_output, snapshot_features
from utils.biqan import labels


@dataclasses.dataclass(frozen=True)
class RankerTraining:
    """Settings of `train_ranker`: hidden widths, softmax temperature (dB), Adam steps."""

    hidden: tuple[int, ...] = (16,)
    temperature_db: float = 0.25
    steps: int = 1500
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")
        if not np.isfinite(self.temperature_db) or self.temperature_db <= 0:
            raise ValueError(f"temperature_db must be a positive number, got {self.temperature_db}")
        if self.steps < 1 or not np.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError("steps must be at least 1 and learning_rate positive")


def padded(
    images: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-image (features (N_i, F), psnr (N_i,)) into (I, N, F), (I, N) and a mask (I, N)."""
    if not images:
        raise ValueError("no training images")
    length = max(len(psnr) for _, psnr in images)
    width = images[0][0].shape[1]
    features = np.zeros((len(images), length, width))
    psnr = np.zeros((len(images), length))
    mask = np.zeros((len(images), length), dtype=bool)
    for index, (image_features, image_psnr) in enumerate(images):
        if not np.all(np.isfinite(image_psnr)) or not np.all(np.isfinite(image_features)):
            raise ValueError(f"training image {index}: non-finite features or PSNR")
        count = len(image_psnr)
        features[index, :count], psnr[index, :count], mask[index, :count] = (
            image_features,
            image_psnr,
            True,
        )
    return features, psnr, mask


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside, its thread count restored after: the ranker is small, so one
    thread is as fast, spins against no fit on the same cores, and makes the training's rounding
    (and the tables built on it) independent of the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_ranker(
    images: list[tuple[np.ndarray, np.ndarray]],
    feature_names: tuple[str, ...],
    settings: RankerTraining,
    trained_on: str = "",
    snapshot_interval: int = 20,
) -> SnapshotRanker:
    """Fit a ranker to images given as (features (N_i, F), true PSNR (N_i,)) pairs whose
    snapshots were saved every `snapshot_interval` iterations."""
    features, psnr, mask = padded(images)
    flat = features[mask]
    mean, scale = flat.mean(axis=0), flat.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    generator = torch.Generator().manual_seed(settings.seed)
    widths = [features.shape[2], *settings.hidden, 1]
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        weight = torch.randn(fan_in, fan_out, generator=generator, dtype=torch.float64) / np.sqrt(
            fan_in
        )
        layers.append(
            (weight.requires_grad_(), torch.zeros(fan_out, dtype=torch.float64, requires_grad=True))
        )
    inputs = torch.from_numpy((features - mean) / scale)
    valid = torch.from_numpy(mask)
    targets = torch.softmax(
        torch.from_numpy(psnr / settings.temperature_db).masked_fill(~valid, -torch.inf), dim=1
    )
    parameters = [tensor for layer in layers for tensor in layer]
    optimiser = torch.optim.Adam(
        parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    with one_thread():
        for _ in range(settings.steps):
            hidden = inputs
            for index, (weight, bias) in enumerate(layers):
                hidden = hidden @ weight + bias
                if index < len(layers) - 1:
                    hidden = torch.tanh(hidden)
            scores = hidden[..., 0].masked_fill(~valid, -torch.inf)
            log_probabilities = torch.log_softmax(scores, dim=1)
            loss = -(targets * log_probabilities.masked_fill(~valid, 0.0)).sum(dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return SnapshotRanker(
        feature_names=tuple(feature_names),
        feature_mean=mean,
        feature_scale=scale,
        weights=tuple(weight.detach().numpy().copy() for weight, _ in layers),
        biases=tuple(bias.detach().numpy().copy() for _, bias in layers),
        trained_on=trained_on,
        snapshot_interval=snapshot_interval,
    )


def ranking_quality(scores: np.ndarray, psnr: np.ndarray) -> tuple[float, float, float]:
    """Within one image: (SRCC, PLCC) of scores (N,) against true PSNR (N,), and the gap in dB of
    the best-scored snapshot to the true best. Correlations are NaN for constant scores."""
    from scipy import stats

    scores, psnr = np.asarray(scores, dtype=np.float64), np.asarray(psnr, dtype=np.float64)
    if np.ptp(scores) == 0:
        srcc = plcc = float("nan")
    else:
        srcc = float(stats.spearmanr(scores, psnr).statistic)
        plcc = float(stats.pearsonr(scores, psnr).statistic)
    return srcc, plcc, float(psnr.max() - psnr[int(np.argmax(scores))])


def run_image_features(folder: Path, noisy_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations (N,), true PSNR (N,) and features (N, F) of every snapshot of one run_BDN image
    folder, the features computed in snapshot order from the first one."""
    metrics = run_output.read_metrics(folder)
    noisy = image_io.read_rgb(noisy_path)
    snapshots = [image_io.read_rgb(path) for path in metrics.snapshot_paths()]
    return metrics.iteration, metrics.true_psnr, snapshot_features.image_features(noisy, snapshots)


def labelled_features(
    image_path: Path, paths: list[Path], noisy_path: Path | None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Per image folder of the labelled snapshots `paths`: (features (N, F), true PSNRs (N,)) of
    those snapshots, and the snapshot interval they share; ValueError for several intervals."""
    images, intervals = {}, set()
    for folder in sorted({path.parent for path in paths}):
        labelled = {path for path in paths if path.parent == folder}
        noisy = run_output.noisy_input(image_path, folder.name, noisy_path)
        iterations, psnr, features = run_image_features(folder, noisy)
        keep = np.array([run_output.snapshot_path(folder, int(i)) in labelled for i in iterations])
        images[folder.name] = (features[keep], psnr[keep])
        intervals.add(int(iterations[0]))
    if len(intervals) != 1:
        raise ValueError(
            f"{image_path}: the images were saved at different "
            f"snapshot intervals {sorted(intervals)}; train on one"
        )
    return images, intervals.pop()


def validation_rows(
    ranker: SnapshotRanker, images: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str]
) -> list[dict]:
    """One row per validation image: within-image SRCC, PLCC and the pick's gap in dB."""
    rows = []
    for name in names:
        features, psnr = images[name]
        srcc, plcc, gap = ranking_quality(ranker.score(features), psnr)
        rows.append(
            {"image": name, "srcc": round(srcc, 4), "plcc": round(plcc, 4), "gap_db": round(gap, 4)}
        )
    return rows


def main(args: argparse.Namespace) -> int:
    """`train_BIQAN.py --classification_model ranker`: train the snapshot ranker on the
    labelled images of train_BIQAN.py's flags, report validation ranking quality; returns the
    exit code."""
    from models import snapshot_ranker
    from utils.biqan import data as biqan_data
    from utils.biqan import evaluation as biqan_eval

    try:
        image_ids, paths, _, _ = labels.read_labelled_snapshots(
            args.dataset_image_path, args.dataset_file_path
        )
        splits = biqan_data.split_by_source(image_ids, args.validation_fraction, args.seed)
        images, interval = labelled_features(args.dataset_image_path, paths, args.noisy_path)
        ownership.claim(args.output_path, ["ranker_validation.csv"])
        ownership.claim(args.output_checkpoint, [snapshot_ranker.RANKER_FILE])
    except ValueError as error:
        cli.say(f"error: {error}", file=sys.stderr)
        return 2
    train_names, validation_names = (
        sorted({biqan_data.source_image(image_ids[row]) for row in rows}) for rows in splits
    )
    ranker = train_ranker(
        [images[name] for name in train_names],
        snapshot_features.FEATURE_NAMES,
        RankerTraining(seed=args.seed),
        trained_on=f"{len(train_names)} images of {args.dataset_image_path}",
        snapshot_interval=interval,
    )
    path = snapshot_ranker.save_ranker(ranker, args.output_checkpoint)
    rows = validation_rows(ranker, images, validation_names)
    biqan_eval.write_table(args.output_path / "ranker_validation.csv", rows)
    print(f"snapshot ranker trained on {len(train_names)} images: {path}")
    print(
        f"validation ({len(rows)} images): within image SRCC "
        f"{np.nanmean([row['srcc'] for row in rows]):.3f}, PLCC "
        f"{np.nanmean([row['plcc'] for row in rows]):.3f}; gap of the pick to the true best "
        f"{np.mean([row['gap_db'] for row in rows]):.2f} dB"
    )
    return 0
