"""Step 1: reconstruct every noisy image of a folder with Deep Image Prior, saving snapshots.

Example:
    python run_BDN.py --dataset_real_path dataset/sample/real --dataset_mean_path dataset/sample/mean \
        --output_path result/sample --num_iter 300 --save_iter 20
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

from models.skip import SkipConfig
from utils import cli, cluster, original_flags
from utils.biqan import labels
from utils.dip import (
    allocator,
    core_share,
    devices,
    dispatch,
    planning,
    reconstruction,
    run_options,
)
from utils.early_stopping import EarlyStopSettings, early_stop_choices
from utils.method import FitSettings

FIT_FLAGS = (
    ("--num_iter", FitSettings.num_iter, "iterations per image"),
    ("--save_iter", FitSettings.save_iter, "snapshot every N iterations"),
    ("--lr", FitSettings.lr, "Adam learning rate"),
    ("--reg_noise_std", FitSettings.reg_noise_std, "std of the noise added to the input each iteration"),
    ("--target_noise_std", FitSettings.target_noise_std, "std of noise added to the target each iteration; the original used 8.5/255"),
    ("--exp_weight", FitSettings.exp_weight, "weight of the output moving average"),
    ("--backtrack_db", FitSettings.backtrack_db, "restore the last good network when PSNR vs the noisy image drops by more than this (0 = off)"),
    ("--seed", planning.RunSettings.seed, "random seed; CPU runs are repeatable bit for bit"),
)  # fmt: skip
NETWORK_FLAGS = (
    ("--input_depth", SkipConfig.input_depth, "channels of the random input"),
    ("--channels", SkipConfig.channels_down, "channels down and up at every scale"),
    ("--skip_channels", SkipConfig.channels_skip, "channels of each skip connection"),
    ("--num_scales", SkipConfig.num_scales, "number of scales"),
)  # fmt: skip
STOPPING_FLAGS = (
    ("--wmv_window", EarlyStopSettings.window * FitSettings.save_iter, "wmv: window in iterations, a multiple of save_iter"),
)  # fmt: skip
RUN_FLAGS = (
    ("--workers", 1, "worker processes on the CPU (with GPUs: one per --gpu_id)"),
    ("--batch_images", planning.RunSettings.batch_images, "fit up to K images of one size at once, each with its own network"),
    ("--checkpoint_every", planning.RunSettings.checkpoint_every, "save resumable state every N iterations"),
)  # fmt: skip


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Input and output folders."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_real_path", type=Path, required=True, help="folder of noisy images"
    )
    data.add_argument(
        "--dataset_mean_path",
        type=Path,
        help="folder of clean references, paired by file name stem (optional)",
    )
    data.add_argument(
        "--output_path", type=Path, required=True, help="output folder (rerun to resume)"
    )


def build_parser() -> argparse.ArgumentParser:
    """Flags of step 1; every default is its settings dataclass field's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(parser)
    fitting = parser.add_argument_group("fitting")
    cli.add_flags(fitting, FIT_FLAGS)
    run_options.add_loss_flag(fitting)
    network = parser.add_argument_group("network")
    cli.add_flags(network, NETWORK_FLAGS)
    network.add_argument(
        "--init_from",
        default=planning.RunSettings.init_from,
        help="'scratch' (default), 'previous' (start each image from the previous image's final network) or a saved net.pt",
    )
    add_stopping_flags(parser)
    add_run_flags(parser)
    original_flags.add_run_bdn_help(parser)
    return parser


def add_stopping_flags(parser: argparse.ArgumentParser) -> None:
    """The online stopping rule and its parameters."""
    stopping = parser.add_argument_group(
        "online early stopping (default: none, the paper's fixed iterations)"
    )
    stopping.add_argument(
        "--early_stop",
        choices=early_stop_choices(),
        default=EarlyStopSettings.rule,
        help="stop each image when its rule fires and write the pick as <stem>/denoised.png",
    )
    cli.add_flags(stopping, STOPPING_FLAGS)
    cli.add_patience_flag(
        stopping,
        "iterations without a new variance minimum (wmv) or a better score (biqan, ranker), a "
        "multiple of save_iter",
        EarlyStopSettings.patience * FitSettings.save_iter,
    )
    run_options.add_stop_flag(stopping)
    stopping.add_argument(
        "--pre_trained_model",
        type=Path,
        help="biqan: trained BIQAN checkpoint file or folder (train_BIQAN.py); ranker: the snapshot ranker you trained with train_BIQAN.py --classification_model ranker (default: checkpoint/ranker; none comes with the project)",
    )


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Devices, workers, grouping, precision, shards and logging."""
    run = parser.add_argument_group("run")
    run.add_argument(
        "--gpu_id",
        default="0",
        help="CUDA device id, a list like 0,1,2,3 (one worker per GPU), or 'cpu' (default: %(default)s; falls back to the CPU when CUDA is absent)",
    )
    cli.add_flags(run, RUN_FLAGS)
    run_options.add_precision_flag(run)
    run.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (pays off on long GPU runs)",
    )
    run.add_argument(
        "--num_shards",
        type=int,
        help="process only 1/N of the images (default: the SLURM array's task count, or 1)",
    )
    run.add_argument(
        "--shard_index",
        type=int,
        help="which share, 0..N-1 (default: this task's position in the SLURM array, or 0)",
    )
    run.add_argument(
        "--show_iter",
        type=int,
        help="with --quiet, log one line every N iterations (a multiple of save_iter; 0 = never; "
        "default: 0 on a terminal, about num_iter/10 in a log file)",
    )
    run_options.add_quiet_flag(run)


def check_folders(args: argparse.Namespace) -> None:
    """The input folders exist; --init_from is a mode or a loadable network file."""
    if not args.dataset_real_path.is_dir():
        raise ValueError(f"--dataset_real_path {args.dataset_real_path}: no such folder")
    if args.dataset_mean_path is not None and not args.dataset_mean_path.is_dir():
        raise ValueError(f"--dataset_mean_path {args.dataset_mean_path}: no such folder")
    if args.init_from not in ("scratch", "previous"):
        if not Path(args.init_from).is_file():
            raise ValueError(
                f"--init_from {args.init_from}: not 'scratch', 'previous' or an existing network file"
            )
        run_options.saved_network_config(Path(args.init_from))


def check_work_split(args: argparse.Namespace) -> None:
    """Devices, workers, shards (from the SLURM array when not given) and --init_from previous."""
    if args.batch_images < 1 or args.workers < 1:
        raise ValueError("--batch_images and --workers must be positive")
    if args.num_shards is None or args.shard_index is None:
        array_shards, array_index = cluster.array_shard(os.environ)
        args.num_shards = array_shards if args.num_shards is None else args.num_shards
        args.shard_index = array_index if args.shard_index is None else args.shard_index
    if not 0 <= args.shard_index < args.num_shards:
        raise ValueError(
            f"--shard_index must be in 0..{args.num_shards - 1} (--num_shards {args.num_shards})"
        )
    args.devices = run_options.resolve_devices(args.gpu_id, args.workers)
    args.device = args.devices[0]
    args.precision = run_options.resolve_precision(args.precision, args.device, args.output_path)
    sequential = args.batch_images == 1 and len(args.devices) == 1 and args.num_shards == 1
    if args.init_from == "previous" and not sequential:
        raise ValueError(
            "--init_from previous chains images one after another: use it without --batch_images, several workers or shards"
        )


def check_args(args: argparse.Namespace, given: set[str]) -> None:
    """Every check of the flags, in place (translations and resolved values are added to
    `args`); ValueError with a one-line message for the first problem."""
    width_flags = sorted(given & {"--channels", "--skip_channels", "--num_scales"})
    if args.net_type == "snail" and width_flags:
        raise ValueError(
            f"--net_type snail has fixed channels and scales: drop {', '.join(width_flags)}"
        )
    run_options.fit_settings(args).validate()
    check_folders(args)
    if args.checkpoint_every < 1:
        raise ValueError("--checkpoint_every must be positive")
    if not cluster.is_terminal():
        args.quiet = True
    args.show_iter = run_options.show_interval(args)
    if args.show_iter < 0 or (args.show_iter and args.show_iter % args.save_iter):
        raise ValueError("--show_iter must be 0 or a positive multiple of --save_iter")
    args.network = run_options.network_config(args)
    args.early_stop_settings = run_options.early_stop_settings(args)
    check_work_split(args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check flags; every problem is an argparse error, before any work starts."""
    argv = sys.argv[1:] if argv is None else argv
    given = original_flags.given_flags(argv)
    check = functools.partial(check_args, given=given)
    args = cli.parse_checked(build_parser(), check, argv, original_flags.RUN_BDN)
    args.stop_request = cluster.StopRequest()
    return args


def fit_settings(args: argparse.Namespace) -> FitSettings:
    """Flags -> the fit's hyper-parameters (`run_options.fit_settings`)."""
    return run_options.fit_settings(args)


def settings(args: argparse.Namespace) -> planning.RunSettings:
    """Parsed flags (see `parse_args`) -> run settings (`run_options.run_settings`)."""
    return run_options.run_settings(args, args.output_path, args.network)


def main(args: argparse.Namespace) -> int:
    """Run step 1; returns the exit code (1 if any image failed, `cluster.REQUEUE_EXIT_CODE`
    when stopped by SIGTERM/SIGUSR1 with the state saved)."""
    run_settings = settings(args)
    try:
        jobs = planning.plan_jobs(args.dataset_real_path, args.dataset_mean_path)
        if not jobs:
            raise ValueError(f"{args.dataset_real_path}: no images (png, jpg, jpeg, bmp, tif)")
        jobs = planning.shard(jobs, args.num_shards, args.shard_index)
        total = len(jobs)
        jobs, refused = planning.refuse_unsafe_names(jobs, args.output_path)
        for job in jobs:
            if not labels.fits_image_id(job.stem):
                logging.warning(
                    "%s: %s cannot be labelled by step 2 (generator_dataset.py); "
                    "rename it if you will train BIQAN on this run",
                    job.noisy,
                    labels.UNFIT_IMAGE_ID,
                )
        run_lock = reconstruction.start_folder(
            args.output_path,
            reconstruction.run_record(run_settings, args.dataset_real_path, args.dataset_mean_path),
            jobs,
        )
        with run_lock, core_share.sharing(len(args.devices)) as cores:
            if len(args.devices) > 1:
                failures = dispatch.reconstruct_parallel(
                    jobs, run_settings, args.devices, cores.threads()
                )
            else:
                devices.configure_precision(args.precision, args.device)
                cores.use_threads()
                failures = reconstruction.reconstruct_folder(jobs, run_settings)
    except ValueError as error:
        logging.error("%s", error)
        return 2
    except cluster.Interrupted as error:
        reconstruction.write_summary(args.output_path)
        logging.warning("%s; rerun the same command to resume", error)
        return cluster.REQUEUE_EXIT_CODE
    for line in reconstruction.closing_lines(args.output_path, [job.stem for job in jobs]):
        logging.info("%s", line)
    return reconstruction.exit_code(refused + failures, total)


if __name__ == "__main__":
    allocator.preload_tcmalloc()
    cli.configure_logging()
    arguments = parse_args()
    arguments.stop_request.install()
    sys.exit(main(arguments))
