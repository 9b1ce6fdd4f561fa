"""Parsed flags -> the settings of a DIP run, shared by run_BDN.py and denoise.py.

Both scripts parse into a namespace with the same names (the flags of run_BDN.py, which
denoise.py gives a subset of); what a script has no flag for keeps the dataclass default. Every
check raises ValueError with the one-line message the scripts show as an argparse error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from models.skip import SkipConfig
from utils import cli, cluster, early_stopping, method, run_output, selection
from utils.dip import devices, networks, planning
from utils.method import FitSettings

AUTO_PRECISION = "auto"


def field_default(settings_class: type, name: str) -> Any:
    """The default of dataclass field `name` (the one source of a flag's default)."""
    field = next(field for field in dataclasses.fields(settings_class) if field.name == name)
    if field.default is dataclasses.MISSING:
        raise ValueError(f"{settings_class.__name__}.{name} has no default")
    return field.default


def fit_settings(args: argparse.Namespace) -> FitSettings:
    """The fit's hyper-parameters: every `FitSettings` field the namespace has, else its default."""
    names = [field.name for field in dataclasses.fields(FitSettings)]
    return FitSettings(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def network_config(args: argparse.Namespace) -> SkipConfig:
    """--input_depth, --channels, --skip_channels, --num_scales, --net_type -> the network;
    flags the namespace lacks keep `SkipConfig`'s defaults."""
    config = SkipConfig(
        input_depth=getattr(args, "input_depth", SkipConfig.input_depth),
        channels_down=getattr(args, "channels", SkipConfig.channels_down),
        channels_up=getattr(args, "channels", SkipConfig.channels_up),
        channels_skip=getattr(args, "skip_channels", SkipConfig.channels_skip),
        num_scales=getattr(args, "num_scales", SkipConfig.num_scales),
        net_type=getattr(args, "net_type", SkipConfig.net_type),
    )
    if min(config.input_depth, config.channels_down, config.num_scales) < 1 or (
        config.channels_skip < 0
    ):
        raise ValueError(
            "--input_depth, --channels and --num_scales must be positive, --skip_channels >= 0"
        )
    return config


def saved_network_config(path: Path) -> SkipConfig:
    """The network of a saved net.pt (--init_from); ValueError when it is not one."""
    if not path.is_file():
        raise ValueError(f"--init_from {path}: no such network file")
    try:
        return networks.load_network(path, torch.device("cpu")).config
    except ValueError as error:
        raise ValueError(f"--init_from {error}") from None


def resolve_devices(gpu_id: str, workers: int) -> list[torch.device]:
    """--gpu_id (one id, a list, or 'cpu') -> the devices of the workers: each listed GPU once,
    else `workers` times the CPU; ValueError naming --gpu_id."""
    try:
        resolved = [devices.resolve_device(each) for each in devices.parse_gpu_ids(gpu_id)]
    except ValueError as error:
        raise ValueError(f"--gpu_id: {error}") from None
    if resolved and resolved[0].type == "cuda":
        return sorted(set(resolved), key=str)
    return [torch.device("cpu")] * workers


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a GPU that supports it, or a CPU with
    AVX512-BF16 or AMX (oneDNN's bf16 kernels; elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def recorded_precision(output_path: Path | None) -> str | None:
    """The precision of the run already in `output_path` (its run record), or None."""
    if output_path is None:
        return None
    try:
        record = json.loads((output_path / run_output.RUN_RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    precision = record.get("precision") if isinstance(record, dict) else None
    return precision if precision in devices.PRECISIONS else None


def resolve_precision(precision: str, device: torch.device, output_path: Path | None = None) -> str:
    """--precision: as given; 'auto' keeps the precision of the run already in `output_path`
    (a resumed run keeps its numbers), else bf16 where `native_bf16` (paired runs show no loss
    of DIP's best PSNR against fp32: docs/REPRODUCTION.md section 8), else fp32."""
    if precision != AUTO_PRECISION:
        return precision
    recorded = recorded_precision(output_path)
    if recorded is not None:
        return recorded
    return "bf16" if native_bf16(device) else "fp32"


def add_precision_flag(group: Any) -> None:
    """--precision of run_BDN.py and denoise.py: auto (resolved by `resolve_precision`) or one of
    `devices.PRECISIONS`."""
    group.add_argument(
        "--precision",
        choices=(AUTO_PRECISION, *devices.PRECISIONS),
        default=AUTO_PRECISION,
        help="auto: the precision of the run being resumed, else bf16 where the device computes "
        "it natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX), else fp32; fp32, tf32 or "
        "bf16 (autocast; BatchNorm and the output in fp32) to choose (default: %(default)s)",
    )


def add_quiet_flag(group: Any) -> None:
    """--quiet of run_BDN.py and denoise.py."""
    group.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars, plain log lines (the default when the output is not a terminal)",
    )


def add_loss_flag(group: Any) -> None:
    """--loss of run_BDN.py and denoise.py: a name of `method.LOSSES` (read when the parser is
    built, so a loss registered before counts)."""
    group.add_argument(
        "--loss",
        choices=tuple(method.LOSSES),
        default=field_default(FitSettings, "loss"),
        help="what the network's output is fitted to the noisy image with (default: %(default)s)",
    )


def early_stop_settings(args: argparse.Namespace) -> early_stopping.EarlyStopSettings:
    """--early_stop, --wmv_window, --patience, --stop_iteration (iterations, None for auto),
    --pre_trained_model -> settings; ValueError as `early_stopping.from_iterations`."""
    return early_stopping.from_iterations(
        args.early_stop,
        args.wmv_window,
        args.patience,
        args.save_iter,
        args.pre_trained_model,
        args.stop_iteration,
    )


def add_stop_flag(group: Any) -> None:
    """--stop_iteration of the fixed rule (and wmv's latest stop): an iteration, or auto (scaled
    to each image); parsed to an int, or None for auto."""
    cli.add_auto_flag(
        group,
        "--stop_iteration",
        f"fixed: stop at the first snapshot at or after this iteration and keep it (wmv: "
        f"stop there at the latest, keeping its pick); "
        f"{selection.AUTO} (default): {selection.TUNED_FIXED.iteration} for a "
        f"{selection.STOP_SIZE}x{selection.STOP_SIZE} image, times (pixels / "
        f"{selection.STOP_SIZE}^2) ** {selection.STOP_EXPONENT}",
    )


def add_length_flag(group: Any) -> None:
    """denoise.py's --num_iter: iterations, or auto (`FitSettings.run_length`); parsed to an
    int, or None for auto."""
    side = selection.stop_side(method.NUM_ITER)
    cli.add_auto_flag(
        group,
        "--num_iter",
        f"most iterations per image; {selection.AUTO} (default): {method.NUM_ITER}, or the "
        f"image's --stop_iteration where that is later (so that the rule is not cut short: "
        f"with the auto stop, images over about {side:.0f}x{side:.0f} px)",
    )


def show_interval(args: argparse.Namespace) -> int:
    """--show_iter, or its default: about num_iter/10 in a log file (--quiet), else never."""
    if getattr(args, "show_iter", None) is not None:
        return args.show_iter
    length = method.least_length(args.num_iter)
    return cluster.log_interval(length, args.save_iter) if args.quiet else 0


def run_settings(
    args: argparse.Namespace, output_path: Path, network: SkipConfig
) -> planning.RunSettings:
    """Parsed and checked flags -> the settings of the run writing into `output_path`."""
    return planning.RunSettings(
        output_path=output_path,
        network=network,
        fit=fit_settings(args),
        seed=args.seed,
        init_from="scratch" if args.init_from is None else str(args.init_from),
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        quiet=args.quiet,
        show_iter=show_interval(args),
        batch_images=getattr(
            args, "batch_images", field_default(planning.RunSettings, "batch_images")
        ),
        precision=args.precision,
        compile_network=getattr(args, "compile", False),
        early_stop=args.early_stop_settings,
        stop_request=args.stop_request,
    )
