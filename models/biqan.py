"""BIQAN: the blind image quality network (MobileNet + 10-bin score head), Keras 3.

Written against ``keras`` and ``keras.ops`` only, so it runs on any Keras backend. The network
is a Keras-applications MobileNet or MobileNetV2 without its top, global average pooling,
Dropout(0.75) and Dense(10, softmax); it predicts a distribution over the scores 1..10 and is
trained with the earth mover's distance (r = 2) between cumulative distributions (NIMA).

Checkpoints are portable across backends: ``biqan.json`` (the architecture) beside
``*.weights.h5`` files (weights only, no optimiser state), so a network trained under the torch
backend loads under tensorflow and the other way round.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import ops

CONFIG_FILE = "biqan.json"
ARCHITECTURES = ("mobilenet", "mobilenet_v2", "inceptionv2", "vgg16")
WIDTH_MULTIPLIER_ARCHITECTURES = ("mobilenet", "mobilenet_v2")
MIN_IMAGE_SIZE = {"inceptionv2": 75}
INPUT_MODES = ("resize", "crop")
NUMBER_OF_BINS = 10
BACKBONE_NAME = "backbone"
EMD_EPSILON = 1e-12


class WeightsError(ValueError):
    """Backbone or checkpoint weights could not be obtained or do not fit the network."""


@dataclasses.dataclass(frozen=True)
class BiqanConfig:
    """Everything needed to rebuild a BIQAN for inference and to feed it the same pixels.

    ``image_size``: side of the square network input; ``input_mode``: ``resize`` (whole
    snapshot resized) or ``crop`` (native-resolution crops); ``best_checkpoint``: name of the
    best weights file of the folder, filled in after training.
    """

    architecture: str = "mobilenet"
    alpha: float = 1.0
    image_size: int = 224
    input_mode: str = "resize"
    dropout: float = 0.75
    backbone_weights: str = "none"
    trained_backend: str = ""
    best_checkpoint: str = ""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, "
                             f"got {self.architecture!r}")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        minimum = MIN_IMAGE_SIZE.get(self.architecture, 32)
        if self.image_size < minimum:
            raise ValueError(f"image_size must be at least {minimum} ({self.architecture}), "
                             f"got {self.image_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def save_config(folder: str | Path, config: BiqanConfig) -> Path:
    """Write ``config`` as ``<folder>/biqan.json`` and return the path."""
    path = Path(folder) / CONFIG_FILE
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    return path


def read_config(path: str | Path) -> BiqanConfig:
    """Read a ``biqan.json``; ValueError naming the file when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: BIQAN configuration not found (it is written beside the "
                         f"checkpoints by train_BIQAN.py)")
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


def _backbone_constructor(architecture: str):
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
    width = {"alpha": config.alpha} \
        if config.architecture in WIDTH_MULTIPLIER_ARCHITECTURES else {}
    if not imagenet:
        return constructor(input_shape=shape, include_top=False, weights=None,
                           name=BACKBONE_NAME, **width)
    try:
        return constructor(input_shape=shape, include_top=False, weights="imagenet",
                           name=BACKBONE_NAME, **width)
    except ValueError as error:
        raise WeightsError(f"ImageNet weights for {config.architecture} alpha {config.alpha}: "
                           f"{error}") from None
    except Exception as error:  # keras raises a bare Exception when the download fails
        raise WeightsError(f"could not download the ImageNet weights of {config.architecture} "
                           f"(alpha {config.alpha}): {error}. Use --weights none to train "
                           f"from scratch, or --weights PATH with a weights file") from None


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
            raise WeightsError(f"{path}: fits neither this BIQAN nor its backbone: "
                               f"{first_line}") from None


def set_backbone_trainable(model: keras.Model, trainable: bool,
                           freeze_batchnorm: bool = False) -> None:
    """Freeze (stage 1) or unfreeze (stage 2) the backbone; recompile afterwards.

    With ``freeze_batchnorm`` the unfrozen backbone's BatchNormalization layers stay frozen,
    which in Keras 3 also keeps them in inference mode (moving statistics neither used from
    the batch nor updated): what fine-tuning a pretrained backbone needs. (Calling the backbone
    with ``training=False`` does not do this in Keras 3: ``fit`` overrides it.)
    """
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = trainable
    if trainable and freeze_batchnorm:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def earth_movers_distance(y_true, y_pred, r: float = 2.0):
    """EMD between score distributions (N, 10) -> (N,): (mean_k |CDF_t - CDF_p|^r)^(1/r).

    A tiny epsilon inside the root keeps the gradient finite when the distributions are equal.
    """
    cdf_true = ops.cumsum(ops.cast(y_true, "float32"), axis=-1)
    cdf_pred = ops.cumsum(ops.cast(y_pred, "float32"), axis=-1)
    powered = ops.mean(ops.power(ops.abs(cdf_true - cdf_pred), r), axis=-1)
    return ops.power(powered + EMD_EPSILON, 1.0 / r)


def distribution_mean(distribution):
    """Mean score sum_i i * p_i of distributions (N, 10) over bins 1..10 -> (N,)."""
    bins = ops.arange(1, NUMBER_OF_BINS + 1, dtype="float32")
    return ops.sum(ops.cast(distribution, "float32") * bins, axis=-1)


def distribution_std(distribution):
    """Spread sqrt(sum_i (i - mean)^2 p_i) of distributions (N, 10) -> (N,)."""
    distribution = ops.cast(distribution, "float32")
    bins = ops.arange(1, NUMBER_OF_BINS + 1, dtype="float32")
    mean = ops.expand_dims(distribution_mean(distribution), -1)
    return ops.sqrt(ops.sum(ops.square(bins - mean) * distribution, axis=-1))


def compile_stage(model: keras.Model, stage: int, learning_rate: float,
                  momentum: float = 0.9, freeze_batchnorm: bool = False) -> None:
    """Stage 1: backbone frozen, Adam. Stage 2: all layers trainable, SGD with momentum.

    ``freeze_batchnorm`` (for a pretrained backbone): stage 2 leaves BatchNorm layers frozen.
    """
    if stage == 1:
        set_backbone_trainable(model, False)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    elif stage == 2:
        set_backbone_trainable(model, True, freeze_batchnorm)
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    model.compile(optimizer=optimizer, loss=earth_movers_distance)


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """One training stage: 1 (frozen backbone, Adam) or 2 (all layers, SGD), and its callbacks."""

    stage: int
    learning_rate: float
    epochs: int
    momentum: float = 0.9
    freeze_batchnorm: bool = False
    early_stopping_patience: int = 8
    reduce_lr_factor: float = 0.2
    reduce_lr_patience: int = 2


def fit_stage(model: keras.Model, train_data, validation_data, checkpoint_folder: Path,
              settings: StageSettings, initial_epoch: int,
              best_val_loss: float) -> tuple[dict, float]:
    """Compile and fit one stage with early stopping, LR reduction, best-only checkpoints.

    Checkpoints are ``weights.{epoch:03d}-{val_loss:.3f}.weights.h5`` in ``checkpoint_folder``;
    one is written only when val_loss beats ``best_val_loss`` (carried over between stages).
    Returns the history (metric -> list per epoch, plus ``epoch`` counted from 1 over all
    stages) and the best val_loss so far.
    """
    compile_stage(model, settings.stage, settings.learning_rate, settings.momentum,
                  settings.freeze_batchnorm)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(checkpoint_folder / "weights.{epoch:03d}-{val_loss:.3f}.weights.h5"),
        monitor="val_loss", save_best_only=True, save_weights_only=True,
        initial_value_threshold=best_val_loss if np.isfinite(best_val_loss) else None)
    callbacks = [
        checkpoint,
        keras.callbacks.EarlyStopping(monitor="val_loss",
                                      patience=settings.early_stopping_patience),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=settings.reduce_lr_factor,
                                          patience=settings.reduce_lr_patience),
    ]
    history = model.fit(train_data, validation_data=validation_data,
                        epochs=initial_epoch + settings.epochs, initial_epoch=initial_epoch,
                        callbacks=callbacks, verbose=2)
    record = {name: [float(value) for value in values]
              for name, values in history.history.items()}
    record["epoch"] = [epoch + 1 for epoch in history.epoch]
    return record, float(min(best_val_loss, checkpoint.best))


def train_stages(model: keras.Model, train_data, validation_data, checkpoint_folder: Path,
                 stages: list[StageSettings]) -> tuple[list[dict], float]:
    """Fit ``stages`` one after the other, epochs numbered on, the best val_loss carried over.

    Returns one history per stage (see :func:`fit_stage`) and the best val_loss.
    """
    histories: list[dict] = []
    best_val_loss, epochs_done = float("inf"), 0
    for settings in stages:
        history, best_val_loss = fit_stage(model, train_data, validation_data,
                                           checkpoint_folder, settings, epochs_done,
                                           best_val_loss)
        epochs_done = history["epoch"][-1] if history["epoch"] else epochs_done
        histories.append(history)
    return histories, best_val_loss


def _checkpoint_epoch_and_loss(path: Path) -> tuple[int, float]:
    """(epoch, val_loss) from a name ``weights.{epoch:03d}-{val_loss:.3f}.weights.h5``."""
    epoch_text, _, loss_text = path.name[len("weights."):-len(".weights.h5")].partition("-")
    return int(epoch_text), float(loss_text)


def list_checkpoints(checkpoint_folder: str | Path, written_since: float = 0.0) -> list[Path]:
    """Checkpoints of ``checkpoint_folder`` modified at or after ``written_since`` (a time())."""
    return sorted(path for path in Path(checkpoint_folder).glob("weights.*-*.weights.h5")
                  if path.stat().st_mtime >= written_since)


def best_checkpoint(checkpoint_folder: str | Path, written_since: float = 0.0) -> Path:
    """The checkpoint with the lowest val_loss in its name (latest epoch on ties)."""
    candidates = list_checkpoints(checkpoint_folder, written_since)
    if not candidates:
        raise ValueError(f"{checkpoint_folder}: no checkpoint weights.*-*.weights.h5 found")

    def rank(path: Path) -> tuple[float, int]:
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
        weights_path = path / config.best_checkpoint if config.best_checkpoint \
            else best_checkpoint(path)
    elif path.is_file():
        if not path.name.endswith(".weights.h5"):
            raise ValueError(f"{path}: expected a *.weights.h5 checkpoint written by "
                             f"train_BIQAN.py (or its folder)")
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
        raise ValueError(f"{weights_path}: does not fit the {config.architecture} "
                         f"(alpha {config.alpha}, image size {config.image_size}) network "
                         f"described in {weights_path.parent / CONFIG_FILE}: "
                         f"{first_line}") from None
    return model, config, weights_path


def predict_distributions(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Score distributions (N, 10) of preprocessed images (N, S, S, 3) in [-1, 1]."""
    return ops.convert_to_numpy(model(images, training=False)).astype(np.float64)
