"""BIQAN: the blind image quality network (MobileNet + 10-bin score head), Keras 3.

Written against ``keras`` and ``keras.ops`` only, so it runs on any Keras backend. The network
is a Keras-applications MobileNet or MobileNetV2 without its top, global average pooling,
Dropout(0.75) and Dense(10, softmax); it predicts a distribution over the scores 1..10 and is
trained with the earth mover's distance (r = 2) between cumulative distributions (NIMA).

Its configuration (``BiqanConfig``, the backbones) is ``models.biqan_config``, which loads without
Keras; training (stages, loss, checkpoints) is ``utils.biqan.train``. Checkpoints are portable
across backends: ``biqan.json`` (the architecture) beside
``*.weights.h5`` files (weights only, no optimiser state), so a network trained under the torch
backend loads under tensorflow and the other way round.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import ops

from models.biqan_config import ARCHITECTURES, NUMBER_OF_BINS, BiqanConfig

CONFIG_FILE = "biqan.json"
WIDTH_MULTIPLIER_ARCHITECTURES = ("mobilenet", "mobilenet_v2")
BACKBONE_NAME = "backbone"
CHECKPOINT_NAME = "weights.{epoch:03d}-{val_loss:.3f}.weights.h5"  # written by utils.biqan.train


class WeightsError(ValueError):
    """Backbone or checkpoint weights could not be obtained or do not fit the network."""


def save_config(folder: str | Path, config: BiqanConfig) -> Path:
    """Write ``config`` as ``<folder>/biqan.json`` atomically and return the path."""
    path = Path(folder) / CONFIG_FILE
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def read_config(path: str | Path) -> BiqanConfig:
    """Read a ``biqan.json``; ValueError naming the file when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{path}: BIQAN configuration not found (it is written beside the "
            f"checkpoints by train_BIQAN.py)"
        )
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        return BiqanConfig(**fields)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a valid BIQAN configuration: {error}") from None


def preprocess_pixels(images: np.ndarray) -> np.ndarray:
    """The one pixel preprocessing of training and testing: RGB in [0, 1] -> float32 [-1, 1].

    ``images``: (N, H, W, 3) or (H, W, 3) RGB floats in [0, 1] (MobileNet's own scaling).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected RGB images (N, H, W, 3) or (H, W, 3), got {images.shape}")
    return images * 2.0 - 1.0


def _backbone_constructor(architecture: str) -> Callable[..., keras.Model]:
    """The keras.applications constructor of ``architecture`` (``inceptionv2`` is the
    original code's name for InceptionResNetV2)."""
    if architecture == "mobilenet":
        return keras.applications.MobileNet
    if architecture == "mobilenet_v2":
        return keras.applications.MobileNetV2
    if architecture == "inceptionv2":
        return keras.applications.InceptionResNetV2
    if architecture == "vgg16":
        return keras.applications.VGG16
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def build_backbone(config: BiqanConfig, imagenet: bool) -> keras.Model:
    """Headless backbone (H, W, 3) -> feature map; ImageNet weights downloaded when asked."""
    constructor = _backbone_constructor(config.architecture)
    shape = (config.image_size, config.image_size, 3)
    width = {"alpha": config.alpha} if config.architecture in WIDTH_MULTIPLIER_ARCHITECTURES else {}
    if not imagenet:
        return constructor(
            input_shape=shape, include_top=False, weights=None, name=BACKBONE_NAME, **width
        )
    try:
        return constructor(
            input_shape=shape, include_top=False, weights="imagenet", name=BACKBONE_NAME, **width
        )
    except ValueError as error:
        raise WeightsError(
            f"ImageNet weights for {config.architecture} alpha {config.alpha}: {error}"
        ) from None
    except Exception as error:  # keras raises a bare Exception when the download fails
        raise WeightsError(
            f"could not download the ImageNet weights of {config.architecture} "
            f"(alpha {config.alpha}): {error}. Use --weights none to train "
            f"from scratch, or --weights PATH with a weights file"
        ) from None


def build_biqan(config: BiqanConfig, imagenet: bool = False) -> keras.Model:
    """BIQAN: images (N, S, S, 3) in [-1, 1] -> score distributions (N, 10).

    ``imagenet`` downloads the backbone's ImageNet weights.
    """
    inputs = keras.Input(shape=(config.image_size, config.image_size, 3), name="image")
    backbone = build_backbone(config, imagenet)
    features = backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    dropped = keras.layers.Dropout(config.dropout, name="dropout")(pooled)
    outputs = keras.layers.Dense(NUMBER_OF_BINS, activation="softmax", name="scores")(dropped)
    return keras.Model(inputs, outputs, name=f"biqan_{config.architecture}")


def _load_weights_quietly(model: keras.Model, path: Path) -> None:
    """``model.load_weights(path)`` without Keras's per-layer warnings; raises on mismatch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_weights(str(path))


def load_initial_weights(model: keras.Model, path: str | Path) -> str:
    """Load a weights file into a fresh BIQAN: a whole-BIQAN file or a headless backbone file.

    Returns ``"biqan"`` or ``"backbone"`` (what the file held); WeightsError when neither fits.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        _load_weights_quietly(model, path)
        return "biqan"
    except (ValueError, KeyError, OSError) as whole_error:
        try:
            _load_weights_quietly(model.get_layer(BACKBONE_NAME), path)
            return "backbone"
        except (ValueError, KeyError, OSError):
            first_line = str(whole_error).splitlines()[0]
            raise WeightsError(
                f"{path}: fits neither this BIQAN nor its backbone: {first_line}"
            ) from None


def _checkpoint_epoch_and_loss(path: Path) -> tuple[int, float]:
    """(epoch, val_loss) from a name ``weights.{epoch:03d}-{val_loss:.3f}.weights.h5``."""
    epoch_text, _, loss_text = path.name[len("weights.") : -len(".weights.h5")].partition("-")
    return int(epoch_text), float(loss_text)


def list_checkpoints(checkpoint_folder: str | Path, written_since: float = 0.0) -> list[Path]:
    """Checkpoints of ``checkpoint_folder`` modified at or after ``written_since`` (a time())."""
    return sorted(
        path
        for path in Path(checkpoint_folder).glob("weights.*-*.weights.h5")
        if path.stat().st_mtime >= written_since
    )


def best_checkpoint(checkpoint_folder: str | Path, written_since: float = 0.0) -> Path:
    """The checkpoint with the lowest val_loss in its name (latest epoch on ties)."""
    candidates = list_checkpoints(checkpoint_folder, written_since)
    if not candidates:
        raise ValueError(f"{checkpoint_folder}: no checkpoint weights.*-*.weights.h5 found")

    def rank(path: Path) -> tuple[float, int]:
        """Sort key: val_loss, then the later epoch first."""
        epoch, val_loss = _checkpoint_epoch_and_loss(path)
        return val_loss, -epoch

    return min(candidates, key=rank)


def load_biqan(path: str | Path) -> tuple[keras.Model, BiqanConfig, Path]:
    """Rebuild a trained BIQAN for inference from a checkpoint file or checkpoint folder.

    ``path``: a ``*.weights.h5`` file with ``biqan.json`` beside it, or the folder holding
    both (its best checkpoint is used). Returns the model, its configuration and the weights
    file. ValueError naming the file when something is missing or does not fit.
    """
    path = Path(path)
    if path.is_dir():
        config = read_config(path / CONFIG_FILE)
        weights_path = (
            path / config.best_checkpoint if config.best_checkpoint else best_checkpoint(path)
        )
    elif path.is_file():
        if not path.name.endswith(".weights.h5"):
            raise ValueError(
                f"{path}: expected a *.weights.h5 checkpoint written by "
                f"train_BIQAN.py (or its folder)"
            )
        config = read_config(path.parent / CONFIG_FILE)
        weights_path = path
    else:
        raise ValueError(f"{path}: checkpoint not found")
    if not weights_path.is_file():
        raise ValueError(f"{weights_path}: checkpoint not found")
    model = build_biqan(config, imagenet=False)
    try:
        _load_weights_quietly(model, weights_path)
    except (ValueError, KeyError, OSError) as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(
            f"{weights_path}: does not fit the {config.architecture} "
            f"(alpha {config.alpha}, image size {config.image_size}) network "
            f"described in {weights_path.parent / CONFIG_FILE}: "
            f"{first_line}"
        ) from None
    return model, config, weights_path


def predict_distributions(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Score distributions (N, 10) of preprocessed images (N, S, S, 3) in [-1, 1]."""
    return ops.convert_to_numpy(model(images, training=False)).astype(np.float64)
