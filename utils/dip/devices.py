"""Choosing the torch device from the `--gpu_id` flag."""

from __future__ import annotations

import logging

import torch

from utils import image_io

LOGGER = logging.getLogger(__name__)


def parse_gpu_ids(text: str) -> list[int]:
    """'0' -> [0]; '0,1,3' -> [0, 1, 3]; 'cpu' or '-1' -> [] (CPU). Raises ValueError."""
    text = text.strip().lower()
    if text in ("cpu", "-1", ""):
        return []
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"invalid GPU id list {text!r}: use e.g. 0 or 0,1 or cpu") from None
    if any(gpu_id < 0 for gpu_id in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"invalid GPU id list {text!r}: ids must be distinct and >= 0")
    return ids


def resolve_device(gpu_id: int | None) -> torch.device:
    """CUDA device `gpu_id`, or the CPU when `gpu_id` is None or CUDA is absent.

    Says once (log warning) when CUDA is absent; raises ValueError for an id that does not exist.
    """
    if gpu_id is None:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        LOGGER.warning("CUDA is not available: running on the CPU (asked for GPU %d)", gpu_id)
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if gpu_id >= count:
        raise ValueError(
            f"GPU {gpu_id} does not exist: this machine has {count} CUDA device(s) (0..{count - 1})"
        )
    return torch.device("cuda", gpu_id)


def memory_bytes(device: torch.device) -> int:
    """Total memory of `device`: the GPU's, or the machine's for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return image_io.physical_memory()


PRECISIONS = ("fp32", "tf32", "bf16")


def configure_precision(precision: str, device: torch.device) -> None:
    """Process-wide numeric settings for `precision` on `device` (cuDNN autotuning on CUDA).

    fp32 turns TF32 off (PyTorch leaves it on for cuDNN convolutions by default); tf32 turns it
    on for convolutions and matrix products; bf16 runs the network under bfloat16 autocast
    (done by the fit loop) with TF32 off for the rest.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type != "cuda":
        if precision == "tf32":
            LOGGER.warning("tf32 has no effect on %s", device)
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
