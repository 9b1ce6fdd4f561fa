"""Step 1: reconstruct every noisy image of a folder with Deep Image Prior, saving snapshots.

Example:
    python run_BDN.py --dataset_real_path dataset/sample/real --dataset_mean_path dataset/sample/mean \
        --output_path result/sample --num_iter 300 --save_iter 20
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from models.skip import NET_TYPES, SkipConfig
from utils import cluster, early_stopping, original_flags
from utils.biqan import labels
from utils.dip import devices, dispatch, networks, planning, reconstruction
from utils.dip.fitting import FitSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    fit = parser.add_argument_group("fitting")
    fit.add_argument(
        "--num_iter", type=int, default=3000, help="iterations per image (default 3000)"
    )
    fit.add_argument(
        "--save_iter", type=int, default=20, help="snapshot every N iterations (default 20)"
    )
    fit.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    fit.add_argument(
        "--reg_noise_std",
        type=float,
        default=1 / 30,
        help="std of the noise added to the input each iteration (default 1/30)",
    )
    fit.add_argument(
        "--target_noise_std",
        type=float,
        default=0.0,
        help="std of noise added to the target each iteration; the original used 8.5/255 (default 0)",
    )
    fit.add_argument(
        "--exp_weight",
        type=float,
        default=0.99,
        help="weight of the output moving average (default 0.99)",
    )
    fit.add_argument(
        "--backtrack_db",
        type=float,
        default=5.0,
        help="restore the last good network when PSNR vs the noisy image drops by more than this (0 = off; default 5)",
    )
    fit.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; CPU runs are repeatable bit for bit (default 0)",
    )
    network = parser.add_argument_group("network")
    network.add_argument(
        "--input_depth", type=int, default=32, help="channels of the random input (default 32)"
    )
    network.add_argument(
        "--channels",
        type=int,
        default=128,
        help="channels down and up at every scale (default 128)",
    )
    network.add_argument(
        "--skip_channels", type=int, default=4, help="channels of each skip connection (default 4)"
    )
    network.add_argument("--num_scales", type=int, default=5, help="number of scales (default 5)")
    network.add_argument(
        "--init_from",
        default="scratch",
        help="'scratch' (default), 'previous' (start each image from the previous image's final network) or a saved net.pt",
    )
    stopping = parser.add_argument_group(
        "online early stopping (default: none, the paper's fixed iterations)"
    )
    stopping.add_argument(
        "--early_stop",
        choices=early_stopping.EARLY_STOP_RULES,
        default="none",
        help="stop each image when its rule fires and write the pick as <stem>/denoised.png",
    )
    stopping.add_argument(
        "--wmv_window",
        type=int,
        default=100,
        help="wmv: window in iterations, a multiple of save_iter (default 100)",
    )
    stopping.add_argument(
        "--patience",
        type=int,
        default=1000,
        help="iterations without a new variance minimum (wmv) or a better score (biqan, ranker), a multiple of save_iter (default 1000)",
    )
    stopping.add_argument(
        "--pre_trained_model",
        type=Path,
        help="biqan: trained BIQAN checkpoint file or folder (train_BIQAN.py); ranker: a snapshot ranker (default: the shipped checkpoint/ranker)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--gpu_id",
        default="0",
        help="CUDA device id, a list like 0,1,2,3 (one worker per GPU), or 'cpu' (default 0; falls back to the CPU when CUDA is absent)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on the CPU (default 1; with GPUs: one per --gpu_id)",
    )
    run.add_argument(
        "--batch_images",
        type=int,
        default=1,
        help="fit up to K images of one size at once, each with its own network (default 1)",
    )
    run.add_argument(
        "--precision",
        choices=devices.PRECISIONS,
        default="fp32",
        help="fp32 (default), tf32 or bf16 (autocast)",
    )
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
        "--checkpoint_every",
        type=int,
        default=500,
        help="save resumable state every N iterations (default 500)",
    )
    run.add_argument(
        "--show_iter",
        type=int,
        help="with --quiet, log one line every N iterations (a multiple of save_iter; 0 = never; "
        "default: 0 on a terminal, about num_iter/10 in a log file)",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars, plain log lines (the default when the output is not a terminal)",
    )
    original = parser.add_argument_group(
        "flags of the original code (same meaning and units; see docs/ORIGINAL.md)"
    )
    original.add_argument(
        "--net_type",
        choices=NET_TYPES,
        default="skip",
        help="skip (default) or snail, the original's smaller network (8..128 channels)",
    )
    original.add_argument(
        "--input_base_option",
        choices=original_flags.INPUT_BASE_OPTIONS,
        help="network input: use_unifrom_noise (default) or use_raw_image (the noisy image)",
    )
    original.add_argument(
        "--input_extra_option",
        choices=original_flags.NOISE_OPTIONS,
        help="noise added to the input each iteration: fixed or random std (replaces --reg_noise_std)",
    )
    original.add_argument(
        "--input_max_gn_std",
        type=float,
        help="its (maximum) std in 1/255 units (8.5 = 1/30; replaces --reg_noise_std)",
    )
    original.add_argument(
        "--refer_base_option",
        choices=original_flags.REFERENCE_BASE_OPTIONS,
        help="fitting target: use_raw_image (the noisy image, always)",
    )
    original.add_argument(
        "--refer_extra_option",
        choices=original_flags.NOISE_OPTIONS,
        help="noise added to the target each iteration (replaces --target_noise_std)",
    )
    original.add_argument(
        "--refer_max_gn_std",
        type=float,
        help="its (maximum) std in 1/255 units (replaces --target_noise_std)",
    )
    original_flags.add_refused(parser, original_flags.RUN_BDN_REFUSED)
    parser.set_defaults(reg_noise_random=False, target_noise_random=False, input_kind="noise")
    return parser


def apply_original_flags(
    args: argparse.Namespace, given: set[str], parser: argparse.ArgumentParser
) -> None:
    """Translate the original's input/target flags into this project's settings, in place."""
    width_flags = sorted(given & {"--channels", "--skip_channels", "--num_scales"})
    if args.net_type == "snail" and width_flags:
        parser.error(
            f"--net_type snail has fixed channels and scales: drop {', '.join(width_flags)}"
        )
    for flag, value in (
        ("--input_base_option", args.input_base_option),
        ("--refer_base_option", args.refer_base_option),
    ):
        if value == "use_denoised_image":
            parser.error(f"{flag} {value}: {original_flags.DENOISED_IMAGE_REASON}")
    if args.input_base_option == "use_raw_image":
        args.input_kind = "noisy_image"
    pairs = (
        ("--input_extra_option", "--input_max_gn_std", "--reg_noise_std", "reg_noise"),
        ("--refer_extra_option", "--refer_max_gn_std", "--target_noise_std", "target_noise"),
    )
    for option_flag, std_flag, ours, name in pairs:
        try:
            setting = original_flags.noise_setting(
                getattr(args, option_flag[2:]), getattr(args, std_flag[2:])
            )
        except ValueError as error:
            parser.error(f"{std_flag}: {error}")
        if setting is None:
            continue
        if ours in given:
            parser.error(f"{ours} and {option_flag}/{std_flag} set the same noise: give one")
        setattr(args, f"{name}_std", setting[0])
        setattr(args, f"{name}_random", setting[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate flags; every problem is an argparse error, before any work starts."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    apply_original_flags(args, original_flags.given_flags(argv), parser)
    try:
        fit_settings(args).validate()
    except ValueError as error:
        parser.error(str(error))
    if not args.dataset_real_path.is_dir():
        parser.error(f"--dataset_real_path {args.dataset_real_path}: no such folder")
    if args.dataset_mean_path is not None and not args.dataset_mean_path.is_dir():
        parser.error(f"--dataset_mean_path {args.dataset_mean_path}: no such folder")
    if args.init_from not in ("scratch", "previous"):
        if not Path(args.init_from).is_file():
            parser.error(
                f"--init_from {args.init_from}: not 'scratch', 'previous' or an existing network file"
            )
        try:
            networks.load_network(Path(args.init_from), torch.device("cpu"))
        except ValueError as error:
            parser.error(f"--init_from {error}")
    if args.checkpoint_every < 1:
        parser.error("--checkpoint_every must be positive")
    if not cluster.is_terminal():
        args.quiet = True
    if args.show_iter is None:
        args.show_iter = cluster.log_interval(args.num_iter, args.save_iter) if args.quiet else 0
    if args.show_iter < 0 or (args.show_iter and args.show_iter % args.save_iter):
        parser.error("--show_iter must be 0 or a positive multiple of --save_iter")
    if min(args.input_depth, args.channels, args.num_scales) < 1 or args.skip_channels < 0:
        parser.error(
            "--input_depth, --channels and --num_scales must be positive, --skip_channels >= 0"
        )
    try:
        args.early_stop_settings = early_stopping.from_iterations(
            args.early_stop, args.wmv_window, args.patience, args.save_iter, args.pre_trained_model
        )
    except ValueError as error:
        parser.error(str(error))
    if args.batch_images < 1 or args.workers < 1:
        parser.error("--batch_images and --workers must be positive")
    if args.num_shards is None or args.shard_index is None:
        try:
            array_shards, array_index = cluster.array_shard(os.environ)
        except ValueError as error:
            parser.error(str(error))
        args.num_shards = array_shards if args.num_shards is None else args.num_shards
        args.shard_index = array_index if args.shard_index is None else args.shard_index
    if not 0 <= args.shard_index < args.num_shards:
        parser.error(
            f"--shard_index must be in 0..{args.num_shards - 1} (--num_shards {args.num_shards})"
        )
    try:
        gpu_ids = devices.parse_gpu_ids(args.gpu_id)
        resolved = [devices.resolve_device(gpu_id) for gpu_id in gpu_ids] or [torch.device("cpu")]
    except ValueError as error:
        parser.error(f"--gpu_id: {error}")
    args.devices = (
        sorted(set(resolved), key=str)
        if resolved[0].type == "cuda"
        else [torch.device("cpu")] * args.workers
    )
    args.device = args.devices[0]
    args.stop_request = cluster.StopRequest()
    sequential = args.batch_images == 1 and len(args.devices) == 1 and args.num_shards == 1
    if args.init_from == "previous" and not sequential:
        parser.error(
            "--init_from previous chains images one after another: use it without --batch_images, several workers or shards"
        )
    return args


def fit_settings(args: argparse.Namespace) -> FitSettings:
    """Flags -> the fit's hyper-parameters."""
    return FitSettings(
        num_iter=args.num_iter,
        save_iter=args.save_iter,
        lr=args.lr,
        reg_noise_std=args.reg_noise_std,
        target_noise_std=args.target_noise_std,
        exp_weight=args.exp_weight,
        backtrack_db=args.backtrack_db,
        reg_noise_random=args.reg_noise_random,
        target_noise_random=args.target_noise_random,
        input_kind=args.input_kind,
    )


def settings(args: argparse.Namespace) -> planning.RunSettings:
    """Parsed flags (see `parse_args`) -> run settings."""
    return planning.RunSettings(
        output_path=args.output_path,
        network=SkipConfig(
            input_depth=args.input_depth,
            channels_down=args.channels,
            channels_up=args.channels,
            channels_skip=args.skip_channels,
            num_scales=args.num_scales,
            net_type=args.net_type,
        ),
        fit=fit_settings(args),
        seed=args.seed,
        init_from=args.init_from,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        quiet=args.quiet,
        show_iter=args.show_iter,
        batch_images=args.batch_images,
        precision=args.precision,
        compile_network=args.compile,
        early_stop=args.early_stop_settings,
        stop_request=args.stop_request,
    )


def main(args: argparse.Namespace) -> int:
    """Run step 1; returns the exit code (1 if any image failed, `cluster.REQUEUE_EXIT_CODE`
    when stopped by SIGTERM/SIGUSR1 with the state saved)."""
    run_settings = settings(args)
    try:
        jobs = planning.plan_jobs(args.dataset_real_path, args.dataset_mean_path)
        if not jobs:
            raise ValueError(f"{args.dataset_real_path}: no images (png, jpg, jpeg, bmp, tif)")
        jobs = planning.shard(jobs, args.num_shards, args.shard_index)
        for job in jobs:
            if not labels.fits_image_id(job.stem):
                logging.warning(
                    "%s: a name with white space cannot be labelled by step 2 "
                    "(generator_dataset.py); rename it if you will train BIQAN on this run",
                    job.noisy,
                )
        run_lock = reconstruction.start_folder(
            args.output_path,
            reconstruction.run_record(run_settings, args.dataset_real_path, args.dataset_mean_path),
            jobs,
        )
        with run_lock:
            if len(args.devices) > 1:
                failures = dispatch.reconstruct_parallel(jobs, run_settings, args.devices)
            else:
                devices.configure_precision(args.precision, args.device)
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
    return reconstruction.exit_code(failures, len(jobs))


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    arguments = parse_args()
    arguments.stop_request.install()
    sys.exit(main(arguments))
