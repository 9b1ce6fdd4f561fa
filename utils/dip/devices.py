"""Choosing the torch device from the `--gpu_id` flag."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

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
    (done by the fit loop; BatchNorm and the head stay fp32, `models.skip`) with TF32 off for
    the rest.
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


def own_cores() -> set[int]:
    """The cores this process may run on (all of them where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def available_cores(environ: Mapping[str, str] = os.environ) -> int:
    """Cores this process may use (>= 1): its CPU affinity (taskset, cgroups, SLURM's binding),
    capped by SLURM_CPUS_PER_TASK and OMP_NUM_THREADS where they are set to a positive number."""
    limits = [len(own_cores())]
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            limits.append(int(value))
    return min(limits)


def bf16_instructions(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's bf16 instruction set, the one oneDNN's bf16 kernels use: 'amx_bf16',
    'avx512_bf16', or '' (none, or not Linux). Two CPUs with different ones round bf16 fits
    differently."""
    try:
        flags = next(
            (line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), ""
        ).split()
    except OSError:
        return ""
    return next((name for name in ("amx_bf16", "avx512_bf16") if name in flags), "")
