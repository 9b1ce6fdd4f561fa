"""Step 3's settings, without Keras: each training stage (`StageSettings`) and the defaults of
train_BIQAN.py's other training flags (`TrainingSettings`).

The network's own settings are `models.biqan_config.BiqanConfig`; the labels' are
`utils.biqan.labels.LabelSettings`. The scripts' flags take their defaults from these fields.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """One training stage: 1 (frozen backbone, Adam) or 2 (all layers, SGD), and its callbacks.

    ``momentum``: stage 2's SGD momentum in [0, 1); the patiences count epochs without a lower
    validation loss before the stage stops or its learning rate is multiplied by
    ``reduce_lr_factor`` in (0, 1).
    """

    stage: int
    learning_rate: float
    epochs: int
    momentum: float = 0.9
    freeze_batchnorm: bool = False
    early_stopping_patience: int = 8
    reduce_lr_factor: float = 0.2
    reduce_lr_patience: int = 2


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """train_BIQAN.py's data and training settings besides the network and the stages' callbacks.

    ``validation_fraction``: share of source images held out, in (0, 1); ``weights``: the
    backbone's start (``imagenet``, ``none`` or a weights file); ``epochs``: most epochs of each
    stage; ``lr``, ``finetune_lr``: stage 1 (Adam) and stage 2 (SGD) learning rates;
    ``test_crops``: crop mode's N x N grid for validation scores; ``workers``: decoding threads.
    """

    validation_fraction: float = 0.1
    weights: str = "imagenet"
    epochs: int = 40
    batchsize: int = 32
    lr: float = 1e-3
    finetune_lr: float = 1e-4
    test_crops: int = 3
    seed: int = 0
    workers: int = 4
