"""Step 2: turn the snapshot PSNRs of a run_BDN output folder into AVA-format quality labels.

    python generator_dataset.py --dataset_path result/PolyU_run \\
        --output_path dataset/PolyU_labels.txt

Writes one AVA row per snapshot (after the first --start_position of each image) and, beside
it, ``<output stem>_psnr.csv`` with image, iteration, image id, PSNR and mean score. Both are
written atomically, and an existing file there that this tool did not write is refused
(`utils.ownership`).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

from utils import cli, image_io, original_flags, ownership, run_output
from utils.biqan import labels


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of step 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset_path",
        type=Path,
        required=True,
        help="run_BDN output folder (one sub-folder per image with metrics.csv)",
    )
    parser.add_argument(
        "--output_path",
        type=Path,
        required=True,
        help="AVA label file to write, e.g. dataset/PolyU_labels.txt",
    )
    add_label_flags(parser, labels.LabelSettings())
    return parser


def add_label_flags(parser: argparse.ArgumentParser, defaults: labels.LabelSettings) -> None:
    """How PSNRs become score distributions (the defaults: `labels.LabelSettings`)."""
    parser.add_argument(
        "--start_position",
        type=int,
        default=defaults.start_position,
        help="skip the first N snapshots of each image (default: %(default)s)",
    )
    parser.add_argument(
        "--min_psnr",
        "--min_value",
        type=float,
        default=defaults.min_psnr,
        help="PSNR (dB) mapped to mean score 2.5 (default: %(default)s)",
    )
    parser.add_argument(
        "--max_psnr",
        "--max_value",
        type=float,
        default=defaults.max_psnr,
        help="PSNR (dB) mapped to mean score 7.5 (default: %(default)s)",
    )
    parser.add_argument(
        "--is_use_exp",
        type=original_flags.boolean,
        default=defaults.use_exp,
        help="label exp(PSNR) instead of PSNR "
        f"(true/false; default {str(defaults.use_exp).lower()})",
    )
    parser.add_argument(
        "--is_use_fix_minmax",
        type=original_flags.boolean,
        default=defaults.fixed_range,
        help="normalise by --min_psnr/--max_psnr (true) or by each image's own minimum and "
        f"maximum (false) (default {str(defaults.fixed_range).lower()})",
    )
    parser.add_argument(
        "--votes",
        type=int,
        default=defaults.votes,
        help=f"vote count of each row, split over the {labels.NUMBER_OF_BINS} bins "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--score_std",
        type=float,
        default=defaults.score_std,
        help="std of the Gaussian score distribution (default: %(default)s)",
    )


def check_args(args: argparse.Namespace) -> None:
    """Every check of the flags; ValueError with a one-line message for the first problem."""
    if not args.dataset_path.is_dir():
        raise ValueError(f"--dataset_path {args.dataset_path}: no such folder")
    if args.start_position < 0:
        raise ValueError("--start_position must be >= 0")
    for flag in ("min_psnr", "max_psnr", "score_std"):
        if not math.isfinite(getattr(args, flag)):
            raise ValueError(f"--{flag} must be a finite number, got {getattr(args, flag)}")
    if not args.max_psnr > args.min_psnr:
        raise ValueError("--max_psnr must be greater than --min_psnr")
    if args.is_use_exp and args.is_use_fix_minmax:
        raise ValueError(
            "--is_use_exp true needs --is_use_fix_minmax false: exp(PSNR) lies far above "
            "--max_psnr, so every label would be the top bin"
        )
    if not 1 <= args.votes <= labels.MAX_VOTES:
        raise ValueError(f"--votes must be in 1..{labels.MAX_VOTES}")
    if not args.score_std > 0:
        raise ValueError("--score_std must be positive")
    if args.output_path.is_dir():
        raise ValueError(f"--output_path {args.output_path}: is a folder; give a file name")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check flags; every problem is an argparse error, before any work."""
    return cli.parse_checked(build_parser(), check_args, argv, original_flags.OTHER_SCRIPTS)


def table_path(output_path: Path) -> Path:
    """The CSV written beside the label file: ``<stem>_psnr.csv``."""
    return output_path.with_name(f"{output_path.stem}_psnr.csv")


def image_labels(
    args: argparse.Namespace, folder: Path, first_index: int
) -> tuple[list[labels.AvaRow], list[dict]]:
    """One finished image's AVA rows (numbered from `first_index`) and CSV rows; none, with a
    line saying why, for a blind run or one without snapshots after --start_position;
    ValueError for a name the label file cannot hold or a missing snapshot."""
    if not labels.fits_image_id(folder.name):
        raise ValueError(
            f"{folder}: {labels.UNFIT_IMAGE_ID}: the AVA label file separates fields by "
            "spaces and cannot hold it; rename the image and rerun step 1"
        )
    metrics = run_output.read_metrics(folder)
    run_output.check_complete(metrics)
    if not metrics.has_reference:
        cli.say(f"skipped {folder.name}: no clean reference (blind run), no PSNR to learn")
        return [], []
    if len(metrics.iteration) <= args.start_position:
        print(
            f"skipped {folder.name}: {len(metrics.iteration)} snapshots, all within "
            f"--start_position {args.start_position}"
        )
        return [], []
    paths = metrics.snapshot_paths()[args.start_position :]
    run_output.check_snapshots_exist(paths)
    psnrs = metrics.true_psnr[args.start_position :]
    mean_scores = labels.image_mean_scores(
        psnrs, args.min_psnr, args.max_psnr, args.is_use_exp, args.is_use_fix_minmax
    )
    rows, table = [], []
    for path, iteration, psnr, mean_score in zip(
        paths, metrics.iteration[args.start_position :], psnrs, mean_scores.tolist()
    ):
        distribution = labels.score_distribution(mean_score, args.score_std)
        image_id = path.relative_to(args.dataset_path).as_posix()
        votes = tuple(labels.distribution_to_votes(distribution, args.votes).tolist())
        rows.append(labels.AvaRow(index=first_index + len(rows), image_id=image_id, votes=votes))
        table.append(
            {
                "image": folder.name,
                "iteration": int(iteration),
                "image_id": image_id,
                "psnr": f"{psnr:.4f}",
                "mean_score": f"{mean_score:.4f}",
            }
        )
    return rows, table


def write_outputs(output_path: Path, rows: list[labels.AvaRow], table: list[dict]) -> None:
    """The label file and its CSV (`table_path`); OSError when one cannot be written."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    labels.write_ava_file(output_path, rows)
    image_io.write_text(table_path(output_path), buffer.getvalue())


def main(args: argparse.Namespace) -> int:
    """Write the label file and its CSV; 0 on success, 2 on bad data (one line on stderr)."""
    try:
        folders = run_output.list_image_folders(args.dataset_path)
        ownership.claim(
            args.output_path.parent, [args.output_path.name, table_path(args.output_path).name]
        )
        for folder, reason in folders.skipped:
            cli.say(f"skipped {folder}: {reason}")
        rows: list[labels.AvaRow] = []
        table: list[dict] = []
        for folder in folders.finished:
            image_rows, image_table = image_labels(args, folder, len(rows) + 1)
            rows += image_rows
            table += image_table
        if not rows:
            raise ValueError(
                f"{args.dataset_path}: no snapshot with a reference PSNR after "
                f"--start_position {args.start_position}; nothing to label"
            )
    except ValueError as error:
        cli.say(f"error: {error}", file=sys.stderr)
        return 2
    try:
        write_outputs(args.output_path, rows, table)
    except OSError as error:
        cli.say(f"error: {error.filename}: cannot write ({error.strerror})", file=sys.stderr)
        return 2
    images = len({row["image"] for row in table})
    print(
        f"wrote {len(rows)} labels of {images} images to {args.output_path} "
        f"and {table_path(args.output_path)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
