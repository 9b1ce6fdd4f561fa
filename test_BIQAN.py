"""Step 4: pick the best snapshot of every image of a run_BDN output folder.

    python test_BIQAN.py --dataset_image_path result/CC_run \\
        --pre_trained_model checkpoint/PolyU/mobilenet --output_path result/CC_biqan \\
        --start_index 8 --selector biqan wmv last

With --pre_trained_model and no --selector the pick is BIQAN's, as in the original; without a
model it is the training-free selection.DEFAULT_SELECTOR. Per image: ``<stem>_BIQAN.png`` (the BIQAN pick; other selectors' as ``<stem>_<selector>.png``),
``<stem>_scores.png``/``.csv`` (predicted mean and spread, true PSNR where a reference exists),
``<stem>_wmv_variance.png`` with the wmv selector, ``<stem>_Compare.png`` (true best | pick of the
first selector). Over all: ``selection.csv`` and ``Denoised_PSNR.txt``, ending with the mean gap
to the true best per selector.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

from models import snapshot_ranker  # noqa: E402
from utils import (  # noqa: E402
    cli,
    image_io,
    original_flags,
    ownership,
    run_output,
    selection,
    snapshot_features,
)
from utils.biqan import device as keras_device  # noqa: E402


def selector_type(text: str) -> selection.Selector:
    """argparse type of --selector."""
    try:
        return selection.parse_selector(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of step 4."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset_image_path",
        type=Path,
        required=True,
        help="run_BDN output folder (one sub-folder of snapshots per image)",
    )
    parser.add_argument(
        "--pre_trained_model",
        type=Path,
        help="BIQAN checkpoint: a *.weights.h5 file with biqan.json beside it, "
        "or that folder (its best checkpoint); needed by --selector biqan, which it makes the "
        "default (as in the original)",
    )
    parser.add_argument(
        "--ranker",
        type=Path,
        default=snapshot_ranker.DEFAULT_RANKER,
        help="snapshot ranker (ranker.json or its folder) of --selector ranker (default: "
        "checkpoint/ranker, where train_BIQAN.py --classification_model ranker "
        "--output_checkpoint checkpoint/ranker puts the one you train; none comes with the "
        "project)",
    )
    parser.add_argument(
        "--noisy_path",
        type=Path,
        help="folder of the noisy inputs, for --selector ranker (default: the "
        "dataset_real_path in the run's args.json)",
    )
    parser.add_argument("--output_path", type=Path, required=True, help="folder for the results")
    parser.add_argument(
        "--start_index",
        type=int,
        default=selection.START_INDEX,
        help="skip the first N snapshots of each image (default: %(default)s)",
    )
    add_selector_flags(parser)
    add_scoring_flags(parser)
    return parser


def add_selector_flags(parser: argparse.ArgumentParser) -> None:
    """--selector and the wmv rule's parameters."""
    parser.add_argument(
        "--selector",
        type=selector_type,
        nargs="+",
        help="one or more of biqan, ranker, wmv, last, fixed:N (iteration N), fixed:auto (the "
        "tuned stop scaled to the image's size); the first one is the pick of the Compare figure "
        "and Denoised_PSNR.txt (default: biqan with --pre_trained_model, as in the original; "
        f"without it {selection.DEFAULT_SELECTOR.label}, which needs no trained model and "
        "works for any run length)",
    )
    tuned, published = selection.DEFAULT_WMV, selection.PUBLISHED_WMV
    wmv = parser.add_argument_group(
        "wmv rule (in iterations, multiples of the run's --save_iter, as in run_BDN.py and "
        f"denoise.py; default: the setting tuned on PolyU, a window of {tuned.window} snapshots "
        f"and the patience scaled to each image, denoise.py's default at its snapshot interval; "
        f"the published rule: {published.window} and {published.patience} snapshots; it stops at "
        "fixed:auto's stop at the latest)"
    )
    wmv.add_argument("--wmv_window", type=int, help="iterations of the variance window")
    cli.add_patience_flag(wmv, "iterations without a new variance minimum before it stops")
    wmv.add_argument(
        "--wmv_patience",
        type=int,
        help="deprecated: the patience in snapshots (give --patience in iterations)",
    )


def add_scoring_flags(parser: argparse.ArgumentParser) -> None:
    """How BIQAN scores the snapshots, and on which device."""
    parser.add_argument(
        "--input_mode",
        choices=("resize", "crop"),
        help="feed as trained unless overridden (default: from biqan.json)",
    )
    parser.add_argument(
        "--test_crops",
        type=int,
        default=3,
        help="crop mode: average the scores of an N x N grid of crops (default: %(default)s)",
    )
    parser.add_argument(
        "--batchsize", type=int, default=32, help="scoring batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="image-decoding threads (default: %(default)s)"
    )
    keras_device.add_gpu_flag(parser)


def check_args(args: argparse.Namespace) -> None:
    """Every check of the flags; ValueError with a one-line message for the first problem."""
    if not args.dataset_image_path.is_dir():
        raise ValueError(f"--dataset_image_path {args.dataset_image_path}: no such folder")
    if args.selector is None:
        args.selector = [
            selection.BIQAN if args.pre_trained_model is not None else selection.DEFAULT_SELECTOR
        ]
    labels_given = [selector.label for selector in args.selector]
    if len(set(labels_given)) != len(labels_given):
        raise ValueError(f"--selector lists a selector twice: {' '.join(labels_given)}")
    if "biqan" in labels_given:
        if args.pre_trained_model is None:
            raise ValueError("--selector biqan needs --pre_trained_model")
        if not args.pre_trained_model.exists():
            raise ValueError(f"--pre_trained_model {args.pre_trained_model}: not found")
    if "ranker" in labels_given and not args.ranker.exists():
        raise ValueError(f"--ranker: {snapshot_ranker.missing_ranker(args.ranker)}")
    if args.start_index < 0:
        raise ValueError("--start_index must be >= 0")
    if args.patience is not None and args.wmv_patience is not None:
        raise ValueError("--patience and --wmv_patience (its old spelling, in snapshots): give one")
    patiences = [value for value in (args.patience, args.wmv_patience) if value is not None]
    if (args.wmv_window is not None and args.wmv_window < 2) or min(patiences, default=1) < 1:
        raise ValueError("--wmv_window must be at least 2 and --patience at least 1")
    if min(args.test_crops, args.batchsize, args.workers) < 1:
        raise ValueError("--test_crops, --batchsize and --workers must be at least 1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check flags; every problem is an argparse error, before any work."""
    return cli.parse_checked(build_parser(), check_args, argv, original_flags.TEST_BIQAN)


def wmv_in_snapshots(args: argparse.Namespace, interval: int) -> selection.WmvSettings:
    """--wmv_window and --patience (iterations) or the deprecated --wmv_patience (snapshots) ->
    the rule's settings for a run saved every `interval` iterations; prints a note for the old
    spelling, ValueError for a value that is not a multiple of `interval`."""
    patience = args.patience
    if args.wmv_patience is not None:
        patience = args.wmv_patience * interval
        print(
            f"note: --wmv_patience {args.wmv_patience} (snapshots) is deprecated; it equals "
            f"--patience {patience} (iterations) here, a snapshot every {interval}"
        )
    return selection.wmv_from_iterations(args.wmv_window, patience, interval)


def load_models(args: argparse.Namespace) -> tuple[object, object, object, str]:
    """(BIQAN, its config, snapshot ranker, input mode): each model only when a selector needs
    it (else None), with one line naming it; the input mode is --input_mode or the trained one."""
    from models import biqan

    model = config = ranker = None
    if any(selector.name == "biqan" for selector in args.selector):
        model, config, weights = biqan.load_biqan(args.pre_trained_model)
        print(
            f"BIQAN {config.architecture} alpha {config.alpha} from {weights} "
            f"(trained under the {config.trained_backend or 'unknown'} backend)"
        )
    if any(selector.name == "ranker" for selector in args.selector):
        ranker = snapshot_ranker.load_ranker(args.ranker)
        print(
            f"snapshot ranker from {args.ranker} "
            f"({ranker.trained_on or 'training data not recorded'})"
        )
    input_mode = args.input_mode or (config.input_mode if config else "resize")
    if config and input_mode != config.input_mode:
        cli.say(f"warning: --input_mode {input_mode} differs from the trained {config.input_mode}")
    return model, config, ranker, input_mode


def wmv_by_interval(
    args: argparse.Namespace, images: list, ranker: snapshot_ranker.SnapshotRanker | None
) -> dict:
    """The wmv settings per snapshot interval of the finished images (`images`, their metrics),
    with the ranker's warning for an interval it was not trained on."""
    wmv_settings = {}
    for interval in sorted({metrics.snapshot_interval for metrics in images}):
        if ranker is not None and (warning := ranker.interval_warning(interval)):
            cli.say(f"warning: {warning}")
        wmv_settings[interval] = wmv_in_snapshots(args, interval)
    return wmv_settings


def check_candidates(args: argparse.Namespace, images: list) -> None:
    """ValueError for an image without snapshots after --start_index or with a missing one."""
    for metrics in images:
        if len(metrics.iteration) <= args.start_index:
            raise ValueError(
                f"{metrics.folder / run_output.METRICS_FILE}: "
                f"{len(metrics.iteration)} snapshots, none left after "
                f"--start_index {args.start_index}"
            )
        run_output.check_snapshots_exist(metrics.snapshot_paths()[args.start_index :])


def select_image(
    args: argparse.Namespace,
    metrics: run_output.ImageMetrics,
    models: tuple,
    wmv_settings: selection.WmvSettings,
) -> selection.ImageSelection:
    """Every selector's pick among one image's snapshots after --start_index (`models`: as
    `load_models` returns them)."""
    from utils.biqan import data as biqan_data

    model, config, ranker, input_mode = models
    paths = metrics.snapshot_paths()[args.start_index :]

    def score() -> np.ndarray:
        """BIQAN's predicted distributions (candidates, 10) of the candidate snapshots."""
        return biqan_data.score_snapshots(
            model,
            paths,
            input_mode,
            config.image_size,
            args.test_crops,
            args.batchsize,
            args.workers,
        )

    def rank() -> np.ndarray:
        """The ranker's scores (candidates,), its features computed over every snapshot."""
        noisy = image_io.read_rgb(
            run_output.noisy_input(args.dataset_image_path, metrics.name, args.noisy_path)
        )
        snapshots = [image_io.read_rgb(path) for path in metrics.snapshot_paths()]
        features = snapshot_features.image_features(noisy, snapshots)
        return ranker.score(features)[args.start_index :]

    return selection.apply_selectors(
        args.selector,
        metrics.iteration[args.start_index :],
        score if model is not None else None,
        lambda index: image_io.read_rgb(paths[index]),
        wmv_settings,
        rank if ranker is not None else None,
    )


def prepare(args: argparse.Namespace) -> tuple:
    """Everything before the selection, each problem a ValueError: (finished images' metrics,
    the folders skipped, models as `load_models`, wmv settings per interval, noisy PSNR per
    image); claims the output files."""
    from utils.biqan import report as biqan_report

    folders = run_output.list_image_folders(args.dataset_image_path)
    models = load_models(args)
    images = [run_output.read_metrics(folder) for folder in folders.finished]
    wmv_settings = wmv_by_interval(args, images, models[2])
    noisy_psnr = {metrics.name: run_output.read_noisy_psnr(metrics.folder) for metrics in images}
    check_candidates(args, images)
    names = biqan_report.output_names(
        [(metrics.name, metrics.has_reference) for metrics in images],
        [selector.label for selector in args.selector],
    )
    ownership.claim(args.output_path, names)
    return images, folders.skipped, models, wmv_settings, noisy_psnr


def main(args: argparse.Namespace) -> int:
    """Select snapshots of every image, write picks, figures, selection.csv, Denoised_PSNR.txt;
    a selector that cannot pick for an image is one error line, the others still run (exit
    code 1 then)."""
    keras_device.hide_other_gpus(args.gpu_id)
    # Keras and the backend are imported only now, after the GPU choice is in the environment.
    from utils.biqan import report as biqan_report

    if warning := keras_device.missing_gpu_warning(args.gpu_id):
        cli.say(warning, file=sys.stderr)
    try:
        images, skipped, models, wmv_settings, noisy_psnr = prepare(args)
    except ValueError as error:
        cli.say(f"error: {error}", file=sys.stderr)
        return 2
    for folder, reason in skipped:
        cli.say(f"skipped {folder}: {reason}")
    selection_labels = [selector.label for selector in args.selector]
    rows: list[dict] = []
    image_lines: list[str] = []
    failed = False
    for metrics in images:
        chosen = select_image(args, metrics, models, wmv_settings[metrics.snapshot_interval])
        for label, reason in chosen.failures.items():
            cli.say(f"error: {metrics.folder}: --selector {label}: {reason}", file=sys.stderr)
        failed = failed or bool(chosen.failures)
        if not chosen.picks:
            continue
        iterations = metrics.iteration[args.start_index :]
        true_psnr = metrics.true_psnr[args.start_index :] if metrics.has_reference else None
        rows.extend(biqan_report.selection_rows(metrics.name, iterations, true_psnr, chosen))
        try:
            image_lines.append(
                biqan_report.write_image_outputs(
                    args.output_path,
                    metrics.name,
                    iterations,
                    metrics.snapshot_paths()[args.start_index :],
                    true_psnr,
                    chosen,
                    next(label for label in selection_labels if label in chosen.picks),
                    image_io.read_rgb,
                )
            )
        except OSError as error:
            cli.say(f"error: {error.filename}: cannot write ({error.strerror})", file=sys.stderr)
            return 2
    try:
        lines = biqan_report.write_summary(
            args.output_path, rows, image_lines, selection_labels[0], noisy_psnr
        )
    except OSError as error:
        cli.say(f"error: {error.filename}: cannot write ({error.strerror})", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
