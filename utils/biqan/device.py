"""Choosing the GPU of a Keras script before Keras (and its backend) is imported.

Standard library only at import: `hide_other_gpus` must run before any framework import,
because the backends read ``CUDA_VISIBLE_DEVICES`` when they start. `missing_gpu_warning` runs
after, and imports Keras and the backend itself.
"""

from __future__ import annotations

import argparse
import os


def add_gpu_flag(group: argparse._ActionsContainer) -> None:
    """--gpu_id of train_BIQAN.py and test_BIQAN.py (`parse_gpu_id`)."""
    group.add_argument(
        "--gpu_id",
        type=parse_gpu_id,
        default=None,
        help="CUDA device number or 'cpu' (default: the backend's choice)",
    )


def parse_gpu_id(text: str) -> str:
    """``--gpu_id`` value: a non-negative CUDA device number, or ``cpu``; returned normalised."""
    text = text.strip().lower()
    if text == "cpu":
        return text
    if not text.isdigit():
        raise ValueError(f"expected a CUDA device number or 'cpu', got {text!r}")
    return str(int(text))


def hide_other_gpus(gpu_id: str | None) -> None:
    """Make only ``gpu_id`` visible (``cpu``: none); ``None`` leaves the environment alone."""
    if gpu_id is None:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if gpu_id == "cpu" else gpu_id


def missing_gpu_warning(gpu_id: str | None) -> str | None:
    """A warning line when ``gpu_id`` (after `hide_other_gpus`) names a GPU that the Keras
    backend does not see, so that the script runs on the CPU; None otherwise."""
    if gpu_id is None or gpu_id == "cpu":
        return None
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        found = torch.cuda.is_available()
    elif backend == "tensorflow":
        import tensorflow

        found = bool(tensorflow.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        found = jax.default_backend() != "cpu"
    else:
        return None
    if found:
        return None
    return f"warning: --gpu_id {gpu_id}: the {backend} backend sees no such GPU; running on the CPU"
