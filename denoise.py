"""Denoise pictures in one command: DIP with online early stopping, one output per input.

    python denoise.py noisy1.png noisy_folder/ -o denoised/

Each input image (files, or every image of a folder) is fitted with DIP until the early-stopping
rule fires; the picked snapshot is written to the output folder with the input's file name,
format and size. Snapshots are kept only with --keep_snapshots (in OUT/snapshots/).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from models.skip import SkipConfig
from utils import cluster, early_stopping
from utils.dip import denoising, devices, networks, planning, reconstruction
from utils.dip.fitting import FitSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="output folder (not an input folder)"
    )
    parser.add_argument(
        "--early_stop",
        choices=early_stopping.EARLY_STOP_RULES,
        default="wmv",
        help="online stopping rule (default wmv; none = run --num_iter and keep the last snapshot)",
    )
    parser.add_argument(
        "--pre_trained_model",
        type=Path,
        help="trained BIQAN for --early_stop biqan; snapshot ranker for --early_stop ranker "
        "(default: the shipped checkpoint/ranker)",
    )
    parser.add_argument(
        "--init_from",
        type=Path,
        help="start every image from this saved network (transfer learning)",
    )
    parser.add_argument(
        "--num_iter", type=int, default=3000, help="most iterations per image (default 3000)"
    )
    parser.add_argument(
        "--save_iter",
        type=int,
        default=denoising.SAVE_ITER,
        help=f"snapshot every N iterations (default {denoising.SAVE_ITER})",
    )
    parser.add_argument(
        "--wmv_window",
        type=int,
        default=denoising.WMV_WINDOW,
        help=f"wmv window in iterations (default {denoising.WMV_WINDOW})",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=denoising.PATIENCE,
        help=f"patience in iterations (default {denoising.PATIENCE})",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", *devices.PRECISIONS),
        default="auto",
        help="auto (default): bf16 on a GPU that supports it, else fp32",
    )
    parser.add_argument(
        "--gpu_id",
        default="0",
        help="CUDA device or 'cpu' (default 0; the CPU when CUDA is absent)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep_snapshots", action="store_true", help="keep snapshots and metrics in OUT/snapshots/"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars, plain log lines (the default when the output is not a terminal)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        FitSettings(num_iter=args.num_iter, save_iter=args.save_iter).validate()
        args.jobs = denoising.collect_inputs(args.inputs, args.output)
        gpu_ids = devices.parse_gpu_ids(args.gpu_id)
        if len(gpu_ids) > 1:
            raise ValueError(
                "--gpu_id: denoise.py uses one device; run_BDN.py spreads work over several"
            )
        args.device = devices.resolve_device(gpu_ids[0] if gpu_ids else None)
        args.early_stop_settings = early_stopping.from_iterations(
            args.early_stop, args.wmv_window, args.patience, args.save_iter, args.pre_trained_model
        )
    except ValueError as error:
        parser.error(str(error))
    if args.init_from is not None:
        if not args.init_from.is_file():
            parser.error(f"--init_from {args.init_from}: no such network file")
        try:
            args.network = networks.load_network(args.init_from, torch.device("cpu")).config
        except ValueError as error:
            parser.error(f"--init_from {error}")
    if not cluster.is_terminal():
        args.quiet = True
    args.stop_request = cluster.StopRequest()
    if args.precision == "auto":
        args.precision = (
            "bf16" if args.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        )
    return args


def main(args: argparse.Namespace) -> int:
    """Denoise every input; returns the exit code (1 if any image failed)."""
    settings = planning.RunSettings(
        output_path=args.output / denoising.WORK_FOLDER,
        network=SkipConfig() if args.init_from is None else args.network,
        fit=FitSettings(num_iter=args.num_iter, save_iter=args.save_iter),
        seed=args.seed,
        init_from="scratch" if args.init_from is None else str(args.init_from),
        checkpoint_every=max(args.save_iter, 500 // args.save_iter * args.save_iter),
        device=args.device,
        quiet=args.quiet,
        show_iter=cluster.log_interval(args.num_iter, args.save_iter) if args.quiet else 0,
        precision=args.precision,
        early_stop=args.early_stop_settings,
        stop_request=args.stop_request,
    )
    devices.configure_precision(args.precision, args.device)
    try:
        failures = denoising.denoise(args.jobs, settings, args.output, args.keep_snapshots)
    except ValueError as error:
        logging.error("%s", error)
        return 2
    except cluster.Interrupted as error:
        logging.warning("%s; rerun the same command to resume", error)
        return cluster.REQUEUE_EXIT_CODE
    return reconstruction.exit_code(failures, len(args.jobs))


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    arguments = parse_args()
    arguments.stop_request.install()
    sys.exit(main(arguments))
