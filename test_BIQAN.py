"""Step 4: pick the best snapshot of every image of a run_BDN output folder.

    python test_BIQAN.py --dataset_image_path result/CC_run --pre_trained_model checkpoint/PolyU/mobilenet \\
        --output_path result/CC_biqan --start_index 8 --selector biqan wmv last

Per image: ``<stem>_BIQAN.png`` (the BIQAN pick; other selectors' picks as ``<stem>_<selector>.png``),
``<stem>_scores.png``/``.csv`` (predicted mean and spread, true PSNR where a reference exists),
``<stem>_wmv_variance.png`` with the wmv selector, ``<stem>_Compare.png`` (true best | pick of the
first selector). Over all: ``selection.csv`` and ``Denoised_PSNR.txt``, ending with the mean gap
to the true best per selector.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from utils import biqan_eval, keras_device, labels, run_output, selection  # noqa: E402


def selector_type(text: str) -> selection.Selector:
    """argparse type of --selector."""
    try:
        return selection.parse_selector(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of step 4."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_image_path", type=Path, required=True,
                        help="run_BDN output folder (one sub-folder of snapshots per image)")
    parser.add_argument("--pre_trained_model", type=Path,
                        help="BIQAN checkpoint: a *.weights.h5 file with biqan.json beside it, "
                             "or that folder (its best checkpoint); needed by --selector biqan")
    parser.add_argument("--output_path", type=Path, required=True, help="folder for the results")
    parser.add_argument("--start_index", type=int, default=8,
                        help="skip the first N snapshots of each image (default 8)")
    parser.add_argument("--selector", type=selector_type, nargs="+",
                        default=[selection.parse_selector("biqan")],
                        help="one or more of biqan, wmv, last, fixed:N (iteration N); the first "
                             "one is the pick of the Compare figure and Denoised_PSNR.txt "
                             "(default biqan)")
    parser.add_argument("--wmv_window", type=int, default=5,
                        help="wmv: variance window in snapshots (default 5 = 100 iterations at "
                             "--save_iter 20)")
    parser.add_argument("--wmv_patience", type=int, default=50,
                        help="wmv: snapshots without a new variance minimum before it stops "
                             "(default 50 = 1000 iterations at --save_iter 20)")
    parser.add_argument("--input_mode", choices=("resize", "crop"),
                        help="feed as trained unless overridden (default: from biqan.json)")
    parser.add_argument("--test_crops", type=int, default=3,
                        help="crop mode: average the scores of an N x N grid of crops (default 3)")
    parser.add_argument("--batchsize", type=int, default=32, help="scoring batch size (default 32)")
    parser.add_argument("--workers", type=int, default=4, help="image-decoding threads (default 4)")
    parser.add_argument("--gpu_id", type=keras_device.parse_gpu_id, default=None,
                        help="CUDA device number or 'cpu' (default: the backend's choice)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate flags; every problem is an argparse error, before any work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.dataset_image_path.is_dir():
        parser.error(f"--dataset_image_path {args.dataset_image_path}: no such folder")
    labels_given = [selector.label for selector in args.selector]
    if len(set(labels_given)) != len(labels_given):
        parser.error(f"--selector lists a selector twice: {' '.join(labels_given)}")
    if "biqan" in labels_given:
        if args.pre_trained_model is None:
            parser.error("--selector biqan needs --pre_trained_model")
        if not args.pre_trained_model.exists():
            parser.error(f"--pre_trained_model {args.pre_trained_model}: not found")
    if args.start_index < 0:
        parser.error("--start_index must be >= 0")
    if args.wmv_window < 2 or args.wmv_patience < 1:
        parser.error("--wmv_window must be at least 2 and --wmv_patience at least 1")
    if min(args.test_crops, args.batchsize, args.workers) < 1:
        parser.error("--test_crops, --batchsize and --workers must be at least 1")
    return args


def pick_file_name(stem: str, label: str) -> str:
    """File of a selector's pick: ``<stem>_BIQAN.png`` for biqan, ``<stem>_fixed500.png``..."""
    return f"{stem}_{'BIQAN' if label == 'biqan' else label.replace(':', '')}.png"


def format_db(value: float) -> str:
    """A PSNR or gap in dB with two decimals, or ``n/a`` when unknown."""
    return f"{value:.2f} dB" if np.isfinite(value) else "n/a"


def main(args: argparse.Namespace) -> int:
    """Select snapshots of every image, write picks, figures, selection.csv, Denoised_PSNR.txt."""
    keras_device.hide_other_gpus(args.gpu_id)
    # Keras and the backend are imported only now, after the GPU choice is in the environment.
    from models import biqan
    from utils import biqan_data, biqan_plots

    try:
        folders = run_output.list_image_folders(args.dataset_image_path)
        model = config = None
        if any(selector.name == "biqan" for selector in args.selector):
            model, config, weights = biqan.load_biqan(args.pre_trained_model)
            print(f"BIQAN {config.architecture} alpha {config.alpha} from {weights} "
                  f"(trained under the {config.trained_backend or 'unknown'} backend)")
        input_mode = args.input_mode or (config.input_mode if config else "resize")
        if config and input_mode != config.input_mode:
            print(f"warning: --input_mode {input_mode} differs from the trained "
                  f"{config.input_mode}")
        images = [run_output.read_metrics(folder) for folder in folders.finished]
        for metrics in images:
            if len(metrics.iteration) <= args.start_index:
                raise ValueError(f"{metrics.folder / run_output.METRICS_FILE}: "
                                 f"{len(metrics.iteration)} snapshots, none left after "
                                 f"--start_index {args.start_index}")
            run_output.check_snapshots_exist(metrics.snapshot_paths()[args.start_index:])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for folder, reason in folders.skipped:
        print(f"skipped {folder}: {reason}")
    args.output_path.mkdir(parents=True, exist_ok=True)
    wmv_settings = selection.WmvSettings(window=args.wmv_window, patience=args.wmv_patience)
    primary = args.selector[0].label
    rows: list[dict] = []
    report_lines: list[str] = []
    for metrics in images:
        stem = metrics.name
        iterations = metrics.iteration[args.start_index:]
        paths = metrics.snapshot_paths()[args.start_index:]
        true_psnr = metrics.true_psnr[args.start_index:] if metrics.has_reference else None

        def score(paths=paths):
            return biqan_data.score_snapshots(model, paths, input_mode, config.image_size,
                                              args.test_crops, args.batchsize, args.workers)

        try:
            chosen = selection.apply_selectors(
                args.selector, iterations, score if model is not None else None,
                lambda index, paths=paths: biqan_data.read_rgb(paths[index]), wmv_settings)
        except ValueError as error:
            print(f"error: {metrics.folder}: {error}", file=sys.stderr)
            return 2
        best_index = int(np.argmax(true_psnr)) if true_psnr is not None else None
        for label, index in chosen.picks.items():
            shutil.copyfile(paths[index], args.output_path / pick_file_name(stem, label))
            picked_psnr = true_psnr[index] if true_psnr is not None else float("nan")
            best_psnr = true_psnr[best_index] if true_psnr is not None else float("nan")
            note = ""
            if label == "wmv":
                note = "rule fired" if chosen.wmv.fired else "rule did not fire: variance minimum"
            rows.append({"image": stem, "selector": label,
                         "picked_iteration": int(iterations[index]), "picked_psnr": picked_psnr,
                         "best_iteration": int(iterations[best_index]) if true_psnr is not None
                         else "", "best_psnr": best_psnr, "loss_db": best_psnr - picked_psnr,
                         "note": note})
        picks_by_iteration = {label: int(iterations[index])
                              for label, index in chosen.picks.items()}
        if chosen.distributions is not None:
            means = labels.distribution_mean(chosen.distributions)
            stds = labels.distribution_std(chosen.distributions)
            biqan_plots.plot_score_curves(iterations, means, stds, true_psnr, picks_by_iteration,
                                          f"{stem}: BIQAN scores", args.output_path /
                                          f"{stem}_scores.png")
            biqan_eval.write_table(args.output_path / f"{stem}_scores.csv", [
                {"iteration": int(iteration), "predicted_mean": f"{mean:.4f}",
                 "predicted_std": f"{std:.4f}",
                 "true_psnr": f"{psnr:.4f}" if np.isfinite(psnr) else ""}
                for iteration, mean, std, psnr in zip(
                    iterations, means, stds,
                    true_psnr if true_psnr is not None else np.full(len(iterations), np.nan))])
        if chosen.wmv is not None:
            stop = chosen.wmv.stop_index
            biqan_plots.plot_wmv_variance(
                iterations, chosen.wmv.variances, int(iterations[chosen.wmv.pick_index]),
                int(iterations[stop]) if stop is not None else None,
                f"{stem}: windowed moving variance", args.output_path /
                f"{stem}_wmv_variance.png")
        pick_index = chosen.picks[primary]
        if true_psnr is None:
            report_lines.append(f"{stem}: no reference; {primary} pick at iteration "
                                f"{iterations[pick_index]}")
            continue
        biqan_plots.plot_compare(
            biqan_data.read_rgb(paths[best_index]),
            f"True best: iteration {iterations[best_index]}, {true_psnr[best_index]:.2f} dB",
            biqan_data.read_rgb(paths[pick_index]),
            f"{primary} pick: iteration {iterations[pick_index]}, "
            f"{true_psnr[pick_index]:.2f} dB", args.output_path / f"{stem}_Compare.png")
        report_lines.append(
            f"{stem}: best PSNR {true_psnr[best_index]:.2f} dB (iteration "
            f"{iterations[best_index]}), denoised PSNR {true_psnr[pick_index]:.2f} dB "
            f"(iteration {iterations[pick_index]}, {primary}), loss "
            f"{true_psnr[best_index] - true_psnr[pick_index]:.2f} dB")
    biqan_eval.write_table(args.output_path / "selection.csv", [
        {key: (f"{value:.4f}" if np.isfinite(value) else "") if isinstance(value, float)
         else value for key, value in row.items()} for row in rows])
    referenced = [row for row in rows if np.isfinite(row["best_psnr"])]
    primary_rows = [row for row in referenced if row["selector"] == primary]
    if primary_rows:
        report_lines.append(f"Mean best PSNR: "
                            f"{np.mean([row['best_psnr'] for row in primary_rows]):.2f} dB")
        report_lines.append(f"Mean denoised PSNR ({primary}): "
                            f"{np.mean([row['picked_psnr'] for row in primary_rows]):.2f} dB")
    gaps = biqan_eval.mean_gap_by_selector(referenced)
    report_lines.append("Mean gap to the true best: " + (", ".join(
        f"{label} {format_db(gap)}" for label, gap in gaps.items()) or "n/a (no references)"))
    (args.output_path / "Denoised_PSNR.txt").write_text("\n".join(report_lines) + "\n",
                                                          encoding="utf-8")
    print("\n".join(report_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
