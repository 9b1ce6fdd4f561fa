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

from models.skip import SkipConfig
from utils import cli, cluster, selection
from utils.dip import (
    allocator,
    core_share,
    denoising,
    devices,
    planning,
    reconstruction,
    run_options,
)
from utils.early_stopping import early_stop_choices


def build_parser() -> argparse.ArgumentParser:
    """Flags of denoise.py; the defaults are denoising's and the settings dataclasses'."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="output folder (not an input folder)"
    )
    parser.add_argument(
        "--early_stop",
        choices=early_stop_choices(),
        default=selection.DEFAULT_SELECTOR.label,
        help="online stopping rule (default: %(default)s; fixed stops at --stop_iteration, wmv "
        "there at the latest; none = run --num_iter and keep the last snapshot)",
    )
    parser.add_argument(
        "--pre_trained_model",
        type=Path,
        help="trained BIQAN for --early_stop biqan; for --early_stop ranker, the snapshot "
        "ranker you trained with train_BIQAN.py --classification_model ranker (default: "
        "checkpoint/ranker; none comes with the project)",
    )
    parser.add_argument(
        "--init_from",
        type=Path,
        help="start every image from this saved network (transfer learning)",
    )
    cli.add_flags(
        parser,
        (
            ("--save_iter", denoising.SAVE_ITER, "snapshot every N iterations"),
            ("--wmv_window", denoising.WMV_WINDOW, "wmv window in iterations"),
        ),
    )
    cli.add_patience_flag(parser, "wmv patience in iterations")
    run_options.add_length_flag(parser)
    run_options.add_stop_flag(parser)
    run_options.add_loss_flag(parser)
    run_options.add_precision_flag(parser)
    parser.add_argument(
        "--gpu_id",
        default="0",
        help="CUDA device or 'cpu' (default: %(default)s; the CPU when CUDA is absent)",
    )
    cli.add_flags(parser, (("--seed", planning.RunSettings.seed, "random seed"),))
    parser.add_argument(
        "--keep_snapshots", action="store_true", help="keep snapshots and metrics in OUT/snapshots/"
    )
    run_options.add_quiet_flag(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every check of the flags, in place (resolved values are added to `args`); ValueError
    with a one-line message for the first problem."""
    run_options.fit_settings(args).validate()
    args.jobs = denoising.collect_inputs(args.inputs, args.output)
    if len(devices.parse_gpu_ids(args.gpu_id)) > 1:
        raise ValueError(
            "--gpu_id: denoise.py uses one device; run_BDN.py spreads work over several"
        )
    args.device = run_options.resolve_devices(args.gpu_id, 1)[0]
    args.early_stop_settings = run_options.early_stop_settings(args)
    args.network = (
        SkipConfig() if args.init_from is None else run_options.saved_network_config(args.init_from)
    )
    if not cluster.is_terminal():
        args.quiet = True
    args.precision = run_options.resolve_precision(
        args.precision, args.device, args.output / denoising.WORK_FOLDER
    )
    checkpoint_every = planning.RunSettings.checkpoint_every
    args.checkpoint_every = max(args.save_iter, checkpoint_every // args.save_iter * args.save_iter)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check flags; every problem is an argparse error, before any work starts."""
    args = cli.parse_checked(build_parser(), check_args, argv)
    args.stop_request = cluster.StopRequest()
    return args


def main(args: argparse.Namespace) -> int:
    """Denoise every input; returns the exit code (1 if any image failed)."""
    settings = run_options.run_settings(args, args.output / denoising.WORK_FOLDER, args.network)
    devices.configure_precision(args.precision, args.device)
    try:
        with core_share.sharing(1) as cores:
            cores.use_threads()
            failures = denoising.denoise(args.jobs, settings, args.output, args.keep_snapshots)
    except ValueError as error:
        logging.error("%s", error)
        return 2
    except cluster.Interrupted as error:
        logging.warning("%s; rerun the same command to resume", error)
        return cluster.REQUEUE_EXIT_CODE
    return reconstruction.exit_code(failures, len(args.jobs))


if __name__ == "__main__":
    allocator.preload_tcmalloc()
    cli.configure_logging()
    arguments = parse_args()
    arguments.stop_request.install()
    sys.exit(main(arguments))
