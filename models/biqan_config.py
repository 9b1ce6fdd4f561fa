"""BIQAN's configuration without Keras: the backbones, the input modes and `BiqanConfig`.

Kept apart from ``models.biqan`` (the network, which imports Keras) so that train_BIQAN.py's
flags take their defaults from ``BiqanConfig`` without loading a deep-learning backend.
"""

from __future__ import annotations

import dataclasses

ARCHITECTURES = ("mobilenet", "mobilenet_v2", "inceptionv2", "vgg16")
MIN_IMAGE_SIZE = {"inceptionv2": 75}
INPUT_MODES = ("resize", "crop")
# Score bins of the head and of the AVA labels (scores 1-10), as in the original.
NUMBER_OF_BINS = 10


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
            raise ValueError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        minimum = MIN_IMAGE_SIZE.get(self.architecture, 32)
        if self.image_size < minimum:
            raise ValueError(
                f"image_size must be at least {minimum} ({self.architecture}), "
                f"got {self.image_size}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
