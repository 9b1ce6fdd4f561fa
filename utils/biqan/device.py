"""Choosing the GPU of a Keras script before Keras (and its backend) is imported.

Standard library only: this must run before any framework import, because the backends read
``CUDA_VISIBLE_DEVICES`` when they start.
"""

from __future__ import annotations

import os


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
