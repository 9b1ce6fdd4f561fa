"""Train BIQAN (step 3): two stages, the earth mover's distance loss, best-only checkpoints.

Stage 1 trains the head on the frozen backbone (Adam); stage 2 fine-tunes every layer (SGD with
momentum). Each stage has early stopping and LR reduction on plateau; a checkpoint
(``models.biqan.CHECKPOINT_NAME``) is written only when the validation loss improves, across
both stages. The network itself is ``models.biqan``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from models import biqan
from utils import ownership
from utils.biqan.settings import StageSettings

EMD_EPSILON = 1e-12


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed` (Python, NumPy, the backend and Keras' own seed), without
    importing TensorFlow under another backend: Keras seeds TensorFlow whenever it is installed,
    and its import prints start-up lines and takes seconds."""
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    # A None entry makes `import tensorflow` raise ImportError, which Keras reads as "not
    # installed" (for the rest of the process); the entry is removed again so that an import
    # of TensorFlow by the user still works.
    sys.modules["tensorflow"] = None
    try:
        keras.utils.set_random_seed(seed)
    finally:
        del sys.modules["tensorflow"]


def set_backbone_trainable(
    model: keras.Model, trainable: bool, freeze_batchnorm: bool = False
) -> None:
    """Freeze (stage 1) or unfreeze (stage 2) the backbone; recompile afterwards.

    With ``freeze_batchnorm`` the unfrozen backbone's BatchNormalization layers stay frozen,
    which in Keras 3 also keeps them in inference mode (moving statistics neither used from
    the batch nor updated): what fine-tuning a pretrained backbone needs. (Calling the backbone
    with ``training=False`` does not do this in Keras 3: ``fit`` overrides it.)
    """
    backbone = model.get_layer(biqan.BACKBONE_NAME)
    backbone.trainable = trainable
    if trainable and freeze_batchnorm:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def earth_movers_distance(y_true: Any, y_pred: Any, r: float = 2.0) -> Any:
    """EMD between score distributions (N, 10) -> (N,): (mean_k |CDF_t - CDF_p|^r)^(1/r).

    ``y_true``, ``y_pred``: backend tensors or arrays; the result is a backend tensor.

    A tiny epsilon inside the root keeps the gradient finite when the distributions are equal.
    """
    cdf_true = ops.cumsum(ops.cast(y_true, "float32"), axis=-1)
    cdf_pred = ops.cumsum(ops.cast(y_pred, "float32"), axis=-1)
    powered = ops.mean(ops.power(ops.abs(cdf_true - cdf_pred), r), axis=-1)
    return ops.power(powered + EMD_EPSILON, 1.0 / r)


def compile_stage(
    model: keras.Model,
    stage: int,
    learning_rate: float,
    momentum: float = StageSettings.momentum,
    freeze_batchnorm: bool = False,
) -> None:
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


class ClaimCheckpoint(keras.callbacks.Callback):
    """Records the name of each epoch's checkpoint in the folder's ownership list
    (`utils.ownership`) before the ModelCheckpoint after it in the callback list may write it;
    a name that is the user's file stops the training with ownership's ValueError."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Claim the name of epoch `epoch`'s checkpoint (counted from 0) when val_loss is finite."""
        if logs and np.isfinite(logs.get("val_loss", np.nan)):
            name = biqan.CHECKPOINT_NAME.format(epoch=epoch + 1, val_loss=logs["val_loss"])
            ownership.claim(self.folder, [name])


def fit_stage(
    model: keras.Model,
    train_data: keras.utils.PyDataset,
    validation_data: keras.utils.PyDataset,
    checkpoint_folder: Path,
    settings: StageSettings,
    initial_epoch: int,
    best_val_loss: float,
) -> tuple[dict, float]:
    """Compile and fit one stage with early stopping, LR reduction, best-only checkpoints.

    Checkpoints are ``weights.{epoch:03d}-{val_loss:.3f}.weights.h5`` in ``checkpoint_folder``,
    each name claimed first (`ClaimCheckpoint`); one is written only when val_loss beats
    ``best_val_loss`` (carried over between stages).
    Returns the history (metric -> list per epoch, plus ``epoch`` counted from 1 over all
    stages) and the best val_loss so far.
    """
    compile_stage(
        model, settings.stage, settings.learning_rate, settings.momentum, settings.freeze_batchnorm
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(checkpoint_folder / biqan.CHECKPOINT_NAME),
        monitor="val_loss",
        save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=best_val_loss if np.isfinite(best_val_loss) else None,
    )
    callbacks = [
        ClaimCheckpoint(checkpoint_folder),
        checkpoint,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.early_stopping_patience
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=settings.reduce_lr_factor,
            patience=settings.reduce_lr_patience,
        ),
    ]
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=initial_epoch + settings.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=2,
    )
    record = {name: [float(value) for value in values] for name, values in history.history.items()}
    record["epoch"] = [epoch + 1 for epoch in history.epoch]
    return record, float(min(best_val_loss, checkpoint.best))


def train_stages(
    model: keras.Model,
    train_data: keras.utils.PyDataset,
    validation_data: keras.utils.PyDataset,
    checkpoint_folder: Path,
    stages: list[StageSettings],
) -> tuple[list[dict], float]:
    """Fit ``stages`` one after the other, epochs numbered on, the best val_loss carried over.

    Returns one history per stage (see :func:`fit_stage`) and the best val_loss.
    """
    histories: list[dict] = []
    best_val_loss, epochs_done = float("inf"), 0
    for settings in stages:
        history, best_val_loss = fit_stage(
            model,
            train_data,
            validation_data,
            checkpoint_folder,
            settings,
            epochs_done,
            best_val_loss,
        )
        epochs_done = history["epoch"][-1] if history["epoch"] else epochs_done
        histories.append(history)
    return histories, best_val_loss
