"""A small quality-learning task for BIQAN, run in a subprocess under one Keras backend.

    KERAS_BACKEND=tensorflow python -m tests.biqan.learning_task OUTPUT_FOLDER

Snapshots are 64x64 smooth images (`tests.conftest.smooth_image`) plus Gaussian noise whose
std falls from 0.3 to 0.01 over `LEVELS` steps, as a DIP fit's snapshots get cleaner: their
PSNR is an obvious quality signal. Labels are step 2's (PSNR -> score distribution); training
is step 3's (`utils.biqan.train.train_stages`, best-only checkpoints) on twelve images,
validation on two others. The backbone is random (no download), but, as a pretrained one
would, it carries the images to the head: its BatchNorm statistics are set from one pass over
the training snapshots (with unit statistics a random MobileNet's features vanish, 1e-18 at
the pool). Stage 1 (frozen backbone) learns; stage 2 then makes the network worse.

OUTPUT_FOLDER/result.json: the validation loss before training, per epoch and after the last
one, the best checkpoint's name, the validation loss of the model reloaded from the
checkpoint folder, and the SRCC of its scores against PSNR per validation image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np

from models import biqan
from tests.conftest import smooth_image
from utils import image_io, metrics
from utils.biqan import data as biqan_data
from utils.biqan import evaluation, labels
from utils.biqan import train as biqan_train
from utils.biqan.settings import StageSettings

SIZE = 64
LEVELS = 12
TRAIN_IMAGES = tuple(range(12))
VALIDATION_IMAGES = (12, 13)
CONFIG = biqan.BiqanConfig(architecture="mobilenet", alpha=0.25, image_size=SIZE, input_mode="crop")
# stage 1 learns; stage 2 (SGD on every layer, from a random backbone) makes it worse at
# once, so the best checkpoint is an earlier epoch than the final weights
STAGES = [
    StageSettings(stage=1, learning_rate=1e-2, epochs=12, early_stopping_patience=12),
    StageSettings(stage=2, learning_rate=1e-2, epochs=2),
]


def write_snapshots(folder: Path, image: int) -> tuple[list[Path], np.ndarray]:
    """`LEVELS` noisy copies of smooth image `image` as PNGs (cleanest last); paths and PSNRs."""
    clean = smooth_image(SIZE, SIZE, 3, seed=image)
    rng = np.random.default_rng(100 + image)
    paths, psnrs = [], []
    for level, std in enumerate(np.geomspace(0.3, 0.01, LEVELS)):
        path = folder / f"image{image}" / f"{level:05d}.png"
        image_io.write_png(path, np.clip(clean + rng.normal(0.0, std, clean.shape), 0.0, 1.0))
        paths.append(path)
        psnrs.append(metrics.psnr(image_io.read_rgb(path), clean))
    return paths, np.array(psnrs)


def dataset(folder: Path, images: tuple[int, ...], augment: bool):
    """Snapshots of `images`, their PSNRs and a `SnapshotDataset` with their labels."""
    written = [write_snapshots(folder, image) for image in images]
    paths = [path for image_paths, _ in written for path in image_paths]
    psnrs = np.concatenate([image_psnrs for _, image_psnrs in written])
    targets = np.stack([labels.score_distribution(labels.psnr_to_mean_score(p)) for p in psnrs])
    batches = biqan_data.SnapshotDataset(
        paths, targets, batch_size=16, input_mode="crop", image_size=SIZE, augment=augment
    )
    return paths, psnrs, batches


def set_batchnorm_statistics(model: keras.Model, images: np.ndarray) -> None:
    """Moving mean and variance of every BatchNorm layer := its batch statistics on `images`
    (N, S, S, 3) in [-1, 1]."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    layers += [
        layer
        for layer in model.get_layer(biqan.BACKBONE_NAME).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def main(output: Path) -> None:
    keras.utils.set_random_seed(0)
    train_paths, _, train_data = dataset(output / "snapshots", TRAIN_IMAGES, augment=True)
    paths, psnrs, validation_data = dataset(output / "snapshots", VALIDATION_IMAGES, augment=False)
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(parents=True)
    model = biqan.build_biqan(CONFIG)
    pixels = np.stack([image_io.read_rgb(path) for path in train_paths])
    set_batchnorm_statistics(model, biqan.preprocess_pixels(pixels))
    biqan_train.compile_stage(model, 1, STAGES[0].learning_rate)
    initial = float(model.evaluate(validation_data, verbose=0))
    histories, best = biqan_train.train_stages(
        model, train_data, validation_data, checkpoints, STAGES
    )
    final = float(model.evaluate(validation_data, verbose=0))
    biqan.save_config(checkpoints, CONFIG)
    reloaded, _, weights = biqan.load_biqan(checkpoints)
    reloaded.compile(loss=biqan_train.earth_movers_distance)
    scores = labels.distribution_mean(
        biqan_data.score_snapshots(reloaded, paths, "crop", SIZE, 1, batch_size=16)
    )
    srcc = [
        evaluation.spearman(scores[start : start + LEVELS], psnrs[start : start + LEVELS])
        for start in range(0, len(paths), LEVELS)
    ]
    result = {
        "initial_val_loss": initial,
        "val_loss": [loss for history in histories for loss in history["val_loss"]],
        "final_val_loss": final,
        "best_val_loss": best,
        "best_checkpoint": weights.name,
        "reloaded_val_loss": float(reloaded.evaluate(validation_data, verbose=0)),
        "srcc": srcc,
    }
    (output / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
