"""BIQAN data: snapshot decoding, the train/test views, a threaded PyDataset and the split.

Pixels reach the network through one path in training and testing: ``read_rgb`` (file -> RGB
float [0, 1]), a view function (``training_view`` or ``evaluation_views``: resize or crop), then
``models.biqan.preprocess_pixels`` ([0, 1] -> [-1, 1]).

``input_mode``:
* ``resize`` (the paper's): the snapshot is resized, aspect kept, to a shorter side of
  ``resize_side(image_size)`` (256 for 224) and cropped to ``image_size`` (random crop and flip
  in training, centre crop in testing);
* ``crop``: ``image_size`` crops at native resolution, which keep the residual noise visible
  (random crop and flip in training, an evenly spaced grid of crops averaged in testing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import skimage.transform

from models import biqan
from utils import image_io


def resize_side(image_size: int) -> int:
    """Shorter side of the resized snapshot in ``resize`` mode: 256 for 224 (ratio 256/224)."""
    return round(image_size * 256 / 224)


def _check_size(image: np.ndarray, image_size: int) -> None:
    """ValueError when ``image`` (H, W, 3) is smaller than an ``image_size`` crop."""
    if image.shape[0] < image_size or image.shape[1] < image_size:
        raise ValueError(
            f"snapshot of {image.shape[0]}x{image.shape[1]} pixels is smaller than "
            f"the {image_size}x{image_size} crops of input mode 'crop'"
        )


def _resized(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` (H, W, 3) scaled so that its shorter side is ``side`` (aspect kept), float32."""
    scale = side / min(image.shape[0], image.shape[1])
    shape = (max(side, round(image.shape[0] * scale)), max(side, round(image.shape[1] * scale)))
    return skimage.transform.resize(
        image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True
    ).astype(np.float32)


def training_view(
    image: np.ndarray, input_mode: str, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Random (image_size, image_size, 3) view of an RGB [0, 1] snapshot, randomly flipped."""
    if input_mode == "resize":
        image = _resized(image, resize_side(image_size))
    elif input_mode == "crop":
        _check_size(image, image_size)
    else:
        raise ValueError(f"input mode must be 'resize' or 'crop', got {input_mode!r}")
    top = int(rng.integers(0, image.shape[0] - image_size + 1))
    left = int(rng.integers(0, image.shape[1] - image_size + 1))
    view = image[top : top + image_size, left : left + image_size]
    return view[:, ::-1] if rng.random() < 0.5 else view


def grid_offsets(length: int, size: int, count: int) -> list[int]:
    """``count`` evenly spaced start offsets of ``size`` windows over ``length`` pixels.

    One window is centred; more span the whole length, first and last touching the ends.
    """
    if count == 1:
        return [(length - size) // 2]
    return [round(offset) for offset in np.linspace(0, length - size, count)]


def evaluation_views(
    image: np.ndarray, input_mode: str, image_size: int, crops_per_side: int
) -> np.ndarray:
    """Deterministic views (K, image_size, image_size, 3) of an RGB [0, 1] snapshot.

    ``resize``: the centre crop of the resized snapshot (K = 1). ``crop``: a grid of
    ``crops_per_side`` x ``crops_per_side`` native-resolution crops (K = crops_per_side**2).
    """
    if crops_per_side < 1:
        raise ValueError(f"crops per side must be at least 1, got {crops_per_side}")
    if input_mode == "resize":
        image = _resized(image, resize_side(image_size))
        crops_per_side = 1
    elif input_mode == "crop":
        _check_size(image, image_size)
    else:
        raise ValueError(f"input mode must be 'resize' or 'crop', got {input_mode!r}")
    rows = grid_offsets(image.shape[0], image_size, crops_per_side)
    columns = grid_offsets(image.shape[1], image_size, crops_per_side)
    return np.stack(
        [
            image[top : top + image_size, left : left + image_size]
            for top in rows
            for left in columns
        ]
    )


class SnapshotDataset(keras.utils.PyDataset):
    """Batches of preprocessed snapshot views, decoded in worker threads by ``model.fit``.

    Training (``augment=True``): one random view per snapshot, reshuffled every epoch; each
    batch draws from its own seeded generator, so results do not depend on thread order.
    Evaluation (``augment=False``): the ``evaluation_views`` of each snapshot flattened into the
    batch (batch_size snapshots x K views). ``distributions`` (N, 10) are the targets, or None
    for prediction.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        distributions: np.ndarray | None,
        batch_size: int,
        input_mode: str,
        image_size: int,
        augment: bool,
        seed: int = 0,
        crops_per_side: int = 1,
        workers: int = 1,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False)
        if not paths:
            raise ValueError("the dataset has no snapshots")
        if distributions is not None and len(distributions) != len(paths):
            raise ValueError(f"{len(paths)} snapshots but {len(distributions)} labels")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.paths = list(paths)
        self.distributions = (
            None if distributions is None else np.asarray(distributions, dtype=np.float32)
        )
        self.batch_size = batch_size
        self.input_mode = input_mode
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.crops_per_side = crops_per_side
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        """Snapshot order of the current epoch: shuffled when augmenting, else as given."""
        if not self.augment:
            return np.arange(len(self.paths))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.paths))

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray] | tuple[np.ndarray, np.ndarray]:
        """Batch `index`: views (B, S, S, 3) float32 in [-1, 1] and, with labels, their target
        distributions (B, 10) (B: one view per snapshot in training, K per snapshot in
        evaluation)."""
        members = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            views = np.stack(
                [
                    training_view(
                        image_io.read_rgb(self.paths[member]), self.input_mode, self.image_size, rng
                    )
                    for member in members
                ]
            )
        else:
            views = np.concatenate(
                [
                    evaluation_views(
                        image_io.read_rgb(self.paths[member]),
                        self.input_mode,
                        self.image_size,
                        self.crops_per_side,
                    )
                    for member in members
                ]
            )
        pixels = biqan.preprocess_pixels(views)
        if self.distributions is None:
            return (pixels,)
        targets = self.distributions[members]
        if not self.augment:
            targets = np.repeat(targets, len(pixels) // len(members), axis=0)
        return pixels, targets

    def on_epoch_end(self) -> None:
        """Count the epoch and draw its snapshot order."""
        self.epoch += 1
        self.order = self._order()


def views_per_snapshot(input_mode: str, crops_per_side: int) -> int:
    """K, the number of evaluation views of one snapshot."""
    return 1 if input_mode == "resize" else crops_per_side**2


def score_snapshots(
    model: keras.Model,
    paths: Sequence[Path],
    input_mode: str,
    image_size: int,
    crops_per_side: int,
    batch_size: int,
    workers: int = 1,
) -> np.ndarray:
    """Predicted distributions (N, 10) of snapshots, averaged over their evaluation views."""
    dataset = SnapshotDataset(
        paths,
        None,
        batch_size,
        input_mode,
        image_size,
        augment=False,
        crops_per_side=crops_per_side,
        workers=workers,
    )
    predictions = np.asarray(model.predict(dataset, verbose=0), dtype=np.float64)
    views = views_per_snapshot(input_mode, crops_per_side)
    return predictions.reshape(len(paths), views, -1).mean(axis=1)


def source_image(image_id: str) -> str:
    """Source image of a label id ``<stem>/<iteration>.png``: its folder."""
    parent = Path(image_id).parent.as_posix()
    if parent in ("", "."):
        raise ValueError(f"image id {image_id!r} has no image folder; expected <stem>/<file>")
    return parent


def split_by_source(
    image_ids: Sequence[str], validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation): whole source images go to one side, seeded.

    At least one source image goes to each side; ValueError with fewer than two.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {validation_fraction}")
    sources = np.array([source_image(image_id) for image_id in image_ids])
    unique = np.unique(sources)
    if len(unique) < 2:
        raise ValueError(
            f"need snapshots of at least 2 source images to split training and "
            f"validation by image, got {len(unique)}"
        )
    count = min(max(1, round(validation_fraction * len(unique))), len(unique) - 1)
    chosen = np.random.default_rng(seed).choice(unique, size=count, replace=False)
    is_validation = np.isin(sources, chosen)
    return np.flatnonzero(~is_validation), np.flatnonzero(is_validation)
