"""The snapshot ranker: a small MLP that scores the DIP snapshots of one image from their
no-reference features (utils/snapshot_features.py); the highest score is the pick.

It is trained (utils/ranker_training.py) to rank the snapshots of each image, not to predict
their PSNR: the scores of an image are only compared with each other. The model is a few
thousand numbers, stored as one JSON file (`RANKER_FILE`) that any backend reads; inference
is numpy only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

RANKER_FILE = "ranker.json"
FORMAT_VERSION = 1
# Where the scripts look for a ranker by default. None comes with the project: the user trains
# one (TRAIN_COMMAND, docs/USAGE.md, "The snapshot ranker") on labelled DIP runs of steps 1 and 2.
DEFAULT_RANKER = Path(__file__).resolve().parents[1] / "checkpoint" / "ranker" / RANKER_FILE
TRAIN_COMMAND = (
    "python train_BIQAN.py --classification_model ranker --dataset_image_path RUN "
    "--dataset_file_path LABELS --output_checkpoint checkpoint/ranker --output_path OUT"
)


def missing_ranker(path: str | Path) -> str:
    """The one-line message for a snapshot ranker file that does not exist: how to get one."""
    return (
        f"no snapshot ranker at {path}; none comes with the project: train one on the labelled "
        f"DIP runs of steps 1 and 2 with `{TRAIN_COMMAND}` (docs/USAGE.md, 'The snapshot ranker')"
    )


@dataclasses.dataclass(frozen=True)
class SnapshotRanker:
    """Standardisation, then layers of (weight (in, out), bias (out,)) with tanh between them.

    `feature_names` fixes the input order (len F); `feature_mean`/`feature_scale` (F,) are the
    training set's; the last layer has one output, the score. `trained_on` names the data;
    `snapshot_interval` is the training runs' --save_iter (the rate features count snapshots).
    """

    feature_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    trained_on: str = ""
    snapshot_interval: int = 20

    def interval_warning(self, interval: int) -> str | None:
        """A warning when snapshots every `interval` iterations differ from the training runs'."""
        if interval == self.snapshot_interval:
            return None
        return (
            f"the snapshot ranker was trained on snapshots every {self.snapshot_interval} "
            f"iterations, these are every {interval}: its rate features will be off"
        )

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores of snapshots, shape (N,), from their features (N, F) in `feature_names` order."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected features of shape (N, {len(self.feature_names)}), got {features.shape}"
            )
        hidden = (features - self.feature_mean) / self.feature_scale
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = hidden @ weight + bias
            if index < len(self.weights) - 1:
                hidden = np.tanh(hidden)
        return hidden[:, 0]


def save_ranker(ranker: SnapshotRanker, folder: str | Path) -> Path:
    """Write `<folder>/ranker.json` atomically; return its path."""
    path = Path(folder) / RANKER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format_version": FORMAT_VERSION,
        "feature_names": list(ranker.feature_names),
        "feature_mean": ranker.feature_mean.tolist(),
        "feature_scale": ranker.feature_scale.tolist(),
        "weights": [weight.tolist() for weight in ranker.weights],
        "biases": [bias.tolist() for bias in ranker.biases],
        "trained_on": ranker.trained_on,
        "snapshot_interval": ranker.snapshot_interval,
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document))
    temporary.replace(path)
    return path


def load_ranker(path: str | Path) -> SnapshotRanker:
    """Read a ranker from `ranker.json` or the folder holding it; ValueError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / RANKER_FILE
    try:
        document = json.loads(path.read_text())
        if document.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format_version {document.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        weights = tuple(np.array(weight, dtype=np.float64) for weight in document["weights"])
        biases = tuple(np.array(bias, dtype=np.float64) for bias in document["biases"])
        ranker = SnapshotRanker(
            feature_names=tuple(document["feature_names"]),
            feature_mean=np.array(document["feature_mean"], dtype=np.float64),
            feature_scale=np.array(document["feature_scale"], dtype=np.float64),
            weights=weights,
            biases=biases,
            trained_on=str(document.get("trained_on", "")),
            snapshot_interval=int(document.get("snapshot_interval", 20)),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a snapshot ranker ({error})") from None
    widths = [len(ranker.feature_names)] + [bias.shape[0] for bias in biases]
    shapes_ok = all(
        weight.shape == (widths[index], widths[index + 1]) for index, weight in enumerate(weights)
    )
    if not weights or not shapes_ok or widths[-1] != 1:
        raise ValueError(f"{path}: layer shapes do not chain from {widths[0]} features to 1 score")
    return ranker
