"""Step 3: train the BIQAN quality network on the labels of generator_dataset.py.

    python train_BIQAN.py --dataset_image_path result/PolyU_run \\
        --dataset_file_path dataset/PolyU_labels.txt \\
        --output_checkpoint checkpoint/PolyU/mobilenet --output_path result/PolyU_biqan

Stage 1 trains the head on a frozen backbone (Adam), stage 2 fine-tunes all layers (SGD,
momentum 0.9), each with early stopping and LR reduction. Best-only weight checkpoints and
biqan.json go to --output_checkpoint; loss plots, history.csv and the validation correlations
(SRCC/PLCC of predicted mean score vs true PSNR) to --output_path.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from models.biqan_config import ARCHITECTURES, INPUT_MODES, BiqanConfig  # noqa: E402
from utils import (  # noqa: E402
    cli,
    image_io,
    original_flags,
    ownership,
)
from utils.biqan import device as keras_device  # noqa: E402
from utils.biqan import evaluation as biqan_eval
from utils.biqan import labels
from utils.biqan.settings import StageSettings, TrainingSettings

FLOAT_FLAGS = (
    "alpha",
    "lr",
    "finetune_lr",
    "momentum",
    "reduce_lr_factor",
    "validation_fraction",
)
# A low estimate of training memory per input pixel: float32 RGB and the first layers' outputs.
INPUT_BYTES_PER_PIXEL = 3 * 4 * 10
# What a BIQAN training writes to --output_path (claimed up front: see utils.ownership).
TRAINING_OUTPUTS = (
    "first_stage.png",
    "second_stage.png",
    "history.csv",
    "validation_scores.csv",
    "validation_correlation.csv",
)


MODEL_FLAGS = (
    ("--alpha", BiqanConfig.alpha, "backbone width"),
)  # fmt: skip
TRAINING_FLAGS = (
    ("--epochs", TrainingSettings.epochs, "most epochs of each stage; early stopping may end it sooner"),
    ("--batchsize", TrainingSettings.batchsize, "batch size"),
    ("--lr", TrainingSettings.lr, "stage 1 Adam learning rate"),
    ("--finetune_lr", TrainingSettings.finetune_lr, "stage 2 SGD learning rate"),
    ("--momentum", StageSettings.momentum, "stage 2 SGD momentum"),
    ("--early_stopping_patience", StageSettings.early_stopping_patience, "epochs without val_loss improvement before a stage stops"),
    ("--reduce_lr_patience", StageSettings.reduce_lr_patience, "epochs without improvement before the LR is reduced"),
    ("--reduce_lr_factor", StageSettings.reduce_lr_factor, "LR reduction factor"),
    ("--test_crops", TrainingSettings.test_crops, "crop mode: score the validation snapshots on an N x N grid of crops"),
    ("--seed", TrainingSettings.seed, "seed of the split, the initial weights and augmentation"),
)  # fmt: skip


def add_data_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Inputs, outputs and the validation split; returns the group."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_image_path",
        type=Path,
        required=True,
        help="run_BDN output folder the label image ids are relative to",
    )
    data.add_argument(
        "--dataset_file_path",
        type=Path,
        required=True,
        help="AVA label file written by generator_dataset.py",
    )
    data.add_argument(
        "--output_checkpoint",
        type=Path,
        required=True,
        help="folder for the weights.{epoch:03d}-{val_loss:.3f}.weights.h5 "
        "checkpoints and biqan.json",
    )
    data.add_argument(
        "--output_path",
        type=Path,
        required=True,
        help="folder for loss plots, history.csv and validation correlations",
    )
    cli.add_flags(
        data,
        (
            (
                "--validation_fraction",
                TrainingSettings.validation_fraction,
                "fraction of source images held out for validation",
            ),
        ),
    )
    return data


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The network: backbone, width, start weights, head and input."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--classification_model",
        choices=(*ARCHITECTURES, "ranker"),
        default=BiqanConfig.architecture,
        help="backbone (default: %(default)s, as in the paper; inceptionv2 is "
        "InceptionResNetV2, as in the original); ranker: the snapshot "
        "ranker instead of BIQAN (no-reference features of each snapshot and "
        "its residual, trained to order the snapshots of each image)",
    )
    cli.add_flags(model, MODEL_FLAGS)
    model.add_argument(
        "--weights",
        default=TrainingSettings.weights,
        help="backbone start: imagenet (download), none, or PATH to a weights "
        "file (a headless backbone or a whole BIQAN) (default: %(default)s)",
    )
    model.add_argument(
        "--class_num",
        type=int,
        default=labels.NUMBER_OF_BINS,
        help=f"score bins of the head: {labels.NUMBER_OF_BINS}, the bins of "
        f"the labels (the original's flag)",
    )
    cli.add_flags(
        model,
        (("--image_size", BiqanConfig.image_size, "side of the square network input"),),
    )
    model.add_argument(
        "--input_mode",
        choices=INPUT_MODES,
        default=BiqanConfig.input_mode,
        help="resize: whole snapshot resized (paper); crop: native-resolution "
        "crops that keep the residual noise (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of step 3; the defaults are the settings dataclasses'."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = add_data_flags(parser)
    add_model_flags(parser)
    cli.add_flags(parser.add_argument_group("training"), TRAINING_FLAGS)
    data.add_argument(
        "--noisy_path",
        type=Path,
        help="ranker: folder of the noisy inputs (default: the dataset_real_path "
        "in the run's args.json)",
    )
    run = parser.add_argument_group("run")
    cli.add_flags(run, (("--workers", TrainingSettings.workers, "image-decoding threads"),))
    keras_device.add_gpu_flag(run)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every check of the flags; ValueError with a one-line message for the first problem."""
    if not args.dataset_image_path.is_dir():
        raise ValueError(f"--dataset_image_path {args.dataset_image_path}: no such folder")
    if not args.dataset_file_path.is_file():
        raise ValueError(f"--dataset_file_path {args.dataset_file_path}: no such file")
    if args.weights not in ("imagenet", "none") and not Path(args.weights).is_file():
        raise ValueError(f"--weights {args.weights}: not 'imagenet', 'none' or an existing file")
    for flag in FLOAT_FLAGS:
        if not math.isfinite(getattr(args, flag)):
            raise ValueError(f"--{flag} must be a finite number, got {getattr(args, flag)}")
    if not args.alpha > 0:
        raise ValueError("--alpha must be positive")
    if args.image_size < 32:
        raise ValueError("--image_size must be at least 32")
    if args.classification_model == "inceptionv2" and args.image_size < 75:
        raise ValueError("--image_size must be at least 75 for inceptionv2 (InceptionResNetV2)")
    if args.class_num != labels.NUMBER_OF_BINS:
        raise ValueError(
            f"--class_num must be {labels.NUMBER_OF_BINS}: the labels of "
            f"generator_dataset.py (and of the original) have {labels.NUMBER_OF_BINS} "
            f"bins"
        )
    if min(args.epochs, args.batchsize, args.workers, args.test_crops) < 1:
        raise ValueError("--epochs, --batchsize, --workers and --test_crops must be at least 1")
    if not (args.lr > 0 and args.finetune_lr > 0 and 0 <= args.momentum < 1):
        raise ValueError("--lr and --finetune_lr must be positive, --momentum in [0, 1)")
    if (
        min(args.early_stopping_patience, args.reduce_lr_patience) < 0
        or not 0 < args.reduce_lr_factor < 1
    ):
        raise ValueError("patiences must be >= 0 and --reduce_lr_factor in (0, 1)")
    if not 0 < args.validation_fraction < 1:
        raise ValueError("--validation_fraction must be in (0, 1)")
    batch_bytes = args.batchsize * args.image_size**2 * INPUT_BYTES_PER_PIXEL
    if batch_bytes > image_io.physical_memory():
        raise ValueError(
            f"--image_size {args.image_size} with --batchsize {args.batchsize} needs at least "
            f"{batch_bytes / 2**30:.0f} GiB per batch, more than the "
            f"{image_io.physical_memory() / 2**30:.0f} GiB of this machine; lower them"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check flags; every problem is an argparse error, before any work."""
    return cli.parse_checked(build_parser(), check_args, argv, original_flags.OTHER_SCRIPTS)


@dataclasses.dataclass
class TrainingData:
    """The network to train and its data: the label file's rows split by source image."""

    config: BiqanConfig
    model: object
    train: object
    validation: object
    image_ids: list[str]
    train_count: int
    validation_rows: np.ndarray
    validation_paths: list[Path]
    true_psnr: np.ndarray


def prepare_training(args: argparse.Namespace) -> TrainingData:
    """Read the labels, split them, build the network and the two datasets; ValueError for a
    problem with the data (call after `keras_device.hide_other_gpus`)."""
    import keras

    from models import biqan
    from utils.biqan import data as biqan_data
    from utils.biqan import train as biqan_train

    image_ids, paths, distributions, true_psnr = labels.read_labelled_snapshots(
        args.dataset_image_path, args.dataset_file_path
    )
    train_rows, validation_rows = biqan_data.split_by_source(
        image_ids, args.validation_fraction, args.seed
    )
    config = BiqanConfig(
        architecture=args.classification_model,
        alpha=args.alpha,
        image_size=args.image_size,
        input_mode=args.input_mode,
        backbone_weights=args.weights,
        trained_backend=keras.backend.backend(),
    )
    biqan_train.set_random_seed(args.seed)
    model = biqan.build_biqan(config, imagenet=args.weights == "imagenet")
    if args.weights not in ("imagenet", "none"):
        print(
            f"loaded {biqan.load_initial_weights(model, args.weights)} weights from {args.weights}"
        )
    datasets = [
        biqan_data.SnapshotDataset(
            [paths[row] for row in rows],
            distributions[rows],
            args.batchsize,
            args.input_mode,
            args.image_size,
            workers=args.workers,
            **options,
        )
        for rows, options in (
            (train_rows, {"augment": True, "seed": args.seed}),
            (validation_rows, {"augment": False, "crops_per_side": 1}),
        )
    ]
    validation_paths = [paths[row] for row in validation_rows]
    return TrainingData(
        config,
        model,
        *datasets,
        image_ids,
        len(train_rows),
        validation_rows,
        validation_paths,
        true_psnr,
    )


def stage_settings(args: argparse.Namespace) -> list[StageSettings]:
    """The two stages' settings: stage 1 at --lr, stage 2 (fine-tuning) at --finetune_lr."""
    return [
        StageSettings(
            stage=stage,
            learning_rate=learning_rate,
            epochs=args.epochs,
            momentum=args.momentum,
            freeze_batchnorm=args.weights != "none",
            early_stopping_patience=args.early_stopping_patience,
            reduce_lr_factor=args.reduce_lr_factor,
            reduce_lr_patience=args.reduce_lr_patience,
        )
        for stage, learning_rate in ((1, args.lr), (2, args.finetune_lr))
    ]


def write_history(output_path: Path, histories: list[dict]) -> None:
    """The loss curves of both stages (first_stage.png, second_stage.png) and history.csv."""
    from utils.biqan import plots as biqan_plots

    history_rows: list[dict] = []
    for stage, history, name in zip((1, 2), histories, ("first_stage", "second_stage")):
        biqan_plots.plot_loss_curves(
            history, f"stage {stage}: {name.replace('_', ' ')}", output_path / f"{name}.png"
        )
        history_rows.extend(
            {"stage": stage, **{key: values[number] for key, values in history.items()}}
            for number in range(len(history["epoch"]))
        )
    biqan_eval.write_table(output_path / "history.csv", history_rows)


def report_validation(
    args: argparse.Namespace, data: TrainingData, best: Path, best_val_loss: float
) -> None:
    """Score the validation snapshots with the best checkpoint, write the validation report
    and print it with the checkpoint."""
    from models import biqan
    from utils.biqan import data as biqan_data
    from utils.biqan import report as biqan_report

    model, _, _ = biqan.load_biqan(best)
    predicted = biqan_data.score_snapshots(
        model,
        data.validation_paths,
        args.input_mode,
        args.image_size,
        args.test_crops,
        args.batchsize,
        args.workers,
    )
    rows = data.validation_rows
    report = biqan_report.write_validation_report(
        args.output_path,
        [data.image_ids[row] for row in rows],
        [biqan_data.source_image(data.image_ids[row]) for row in rows],
        predicted,
        data.true_psnr[rows],
    )
    mean_srcc, mean_plcc = report.mean_within_image
    print(f"best checkpoint: {best} (val_loss {best_val_loss:.4f})")
    print(
        f"validation SRCC {report.srcc:.3f}, PLCC {report.plcc:.3f} over all snapshots; "
        f"within image: SRCC {mean_srcc:.3f}, PLCC {mean_plcc:.3f} (mean over "
        f"{len(report.per_image)} images)"
    )
    if np.ptp(labels.distribution_mean(predicted)) == 0:
        print(
            "note: the predicted mean score is the same for every validation snapshot "
            "(correlations undefined): the network has not learnt to tell them apart"
        )


def announce(args: argparse.Namespace, data: TrainingData) -> None:
    """Print the split and a note when --output_checkpoint holds an earlier run's checkpoints."""
    from models import biqan
    from utils.biqan import data as biqan_data

    rows = data.validation_rows
    sources = sorted({biqan_data.source_image(data.image_ids[row]) for row in rows})
    print(
        f"{data.train_count} training and {len(rows)} validation snapshots; "
        f"validation images: {', '.join(sources)}"
    )
    earlier = (
        biqan.list_checkpoints(args.output_checkpoint) if args.output_checkpoint.is_dir() else []
    )
    if earlier:
        print(
            f"note: {args.output_checkpoint} already holds {len(earlier)} checkpoints of an "
            f"earlier run; biqan.json will describe this run"
        )


def main(args: argparse.Namespace) -> int:
    """Train both stages, keep the best checkpoint, report validation correlations."""
    if args.classification_model == "ranker":
        from utils import ranker_training

        return ranker_training.main(args)
    keras_device.hide_other_gpus(args.gpu_id)
    # Keras and the backend are imported only now, after the GPU choice is in the environment.
    from models import biqan
    from utils.biqan import train as biqan_train

    if warning := keras_device.missing_gpu_warning(args.gpu_id):
        cli.say(warning, file=sys.stderr)
    try:
        data = prepare_training(args)
        announce(args, data)
        ownership.claim(args.output_path, TRAINING_OUTPUTS)
        ownership.claim(args.output_checkpoint, [biqan.CONFIG_FILE])
        started = time.time()
        histories, best_val_loss = biqan_train.train_stages(
            data.model, data.train, data.validation, args.output_checkpoint, stage_settings(args)
        )
    except ValueError as error:  # also a snapshot that cannot be read: no biqan.json then
        cli.say(f"error: {error}", file=sys.stderr)
        return 2
    write_history(args.output_path, histories)
    try:
        best = biqan.best_checkpoint(args.output_checkpoint, written_since=started)
    except ValueError as error:
        cli.say(f"error: no checkpoint was written (is val_loss finite?): {error}", file=sys.stderr)
        return 1
    biqan.save_config(
        args.output_checkpoint, dataclasses.replace(data.config, best_checkpoint=best.name)
    )
    report_validation(args, data, best, best_val_loss)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
