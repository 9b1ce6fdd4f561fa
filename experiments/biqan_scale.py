"""Issue 26: BIQAN with the paper's recipe at one image size, trained on that size's PolyU runs
and scored on its CC runs; the scores go under `results/` for experiments.scale_study.

    python -m experiments.biqan_scale --size 256           # train once, score, collect; resumable
    python -m experiments.biqan_scale --size 256 --collect # only copy finished scores to results/

The recipe (experiments/biqan_volume.py's `paper_*`): ImageNet MobileNetV2 (the converted
backbone of tools/convert_mobilenet_v2.py), the whole snapshot resized to the input side `--side`
(default 225: the paper's 224 as 32k + 1, which keeps the converted features exact), EMD on
generator_dataset.py's absolute-PSNR labels, 10 % of the source images held out for validation,
at most 12 epochs per stage with patience 3. `--labels relative` trains the same network on
per-image relative labels instead (each image's PSNR range spread over the scores).

Steps, each skipped when done (rerun after a stop to resume):
1. the training set: the PolyU images of `<runs>/<size>px/<precision>/<polyu>` finished when this
   first runs (at least `--min_images`), linked under `<out>/set` and frozen there: a rerun
   trains on the same set, so the scores stay the ones of one network;
2. generator_dataset.py's labels; 3. train_BIQAN.py -> `<out>/model`, `<out>/report`;
4. test_BIQAN.py --selector biqan on each CC run folder `CC_s<seed>` whose images are all
   finished -> `<out>/CC_s<seed>`;
5. collect: each CC image's predicted scores (iteration, mean, std; no pixels) to
   `results/biqan/<size>px/<precision>/<labels>/CC_s<seed>/<stem>.csv`, and the training's record
   (`training.json`: the PolyU images, the recipe, PolyU validation SRCC).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common
from utils.biqan.report import SELECTION_FILE

RESULTS_FOLDER = "biqan"  # under results/: <size>px/<precision>/{training.json, <set>/<stem>.csv}
RESULTS = common.REPO / "results" / RESULTS_FOLDER
TRAINING_FILE = "training.json"
SCORE_COLUMNS = ("iteration", "predicted_mean", "predicted_std")
SCORES_SUFFIX = "_scores.csv"  # test_BIQAN.py's per-image scores, <stem>_scores.csv
VALIDATION_FILE = "validation_correlation.csv"  # train_BIQAN.py's report
RECIPE = "MobileNetV2 from ImageNet, resize {side}, EMD on {labels}-PSNR labels"


# scale_study's row of the network trained on each kind of labels (common.LABEL_FLAGS)
LABEL_RULES = {"absolute": "biqan, paper's recipe", "relative": "biqan, relative labels"}


def results_folder(results: Path, size: int, precision: str, labels: str) -> Path:
    """Where the scores and training record of one size, precision and label kind go."""
    return results / f"{size}px" / precision / labels


def freeze_set(polyu_run: Path, image_set: Path, min_images: int) -> list[str] | None:
    """The training images: those already linked under `image_set`, else the finished images
    of `polyu_run`, linked there now; None (and nothing linked) while fewer than `min_images`
    are finished."""
    if image_set.is_dir() and any(image_set.iterdir()):
        return sorted(path.name for path in image_set.iterdir())
    images = common.run_images(polyu_run)
    if len(images) < min_images:
        print(f"{polyu_run}: {len(images)} finished images, {min_images} needed; nothing trained")
        return None
    image_set.mkdir(parents=True, exist_ok=True)
    for image in images:
        (image_set / image).symlink_to((polyu_run / image).resolve())
    return images


def complete(run: Path, crops: Path) -> bool:
    """Whether every crop of `crops` (a folder with real/) is finished in the run_BDN.py output
    folder `run` (which may have been filled by several calls, one crop each)."""
    real = crops / "real"
    wanted = {path.stem for path in real.iterdir()} if real.is_dir() else set()
    return bool(wanted) and wanted <= set(common.run_images(run))


def make_labels(image_set: Path, labels: Path, kind: str) -> bool:
    """generator_dataset.py's `kind` labels of the set (common.LABEL_FLAGS), once."""
    return labels.is_file() or common.run_step(common.label_command(image_set, labels, kind)) == 0


def score_command(args: argparse.Namespace, run: Path, out: Path) -> list[str]:
    """test_BIQAN.py --selector biqan on one run folder with the trained model."""
    flags = {
        "--dataset_image_path": run,
        "--output_path": out,
        "--pre_trained_model": Path(args.out) / "model",
        "--selector": "biqan",
        "--gpu_id": args.gpu_id,
    }
    return common.script_command("test_BIQAN.py", flags)


def validation_srcc(report: Path) -> dict[str, float]:
    """PolyU validation SRCC of the trained network: within an image (mean) and over all
    snapshots; {} before training has written its report."""
    path = report / VALIDATION_FILE
    if not path.is_file():
        return {}
    rows = pd.read_csv(path).set_index("image")["srcc"]
    return {"within image": float(rows["mean within image"]), "all": float(rows["all snapshots"])}


def collect(args: argparse.Namespace, images: list[str]) -> int:
    """Copy each scored CC image's scores (SCORE_COLUMNS) and the training record under
    `args.results`; the number of score files written."""
    folder = results_folder(Path(args.results), args.size, args.precision, args.labels)
    written = 0
    for seed in args.seeds:
        scored = Path(args.out) / f"CC_s{seed}"
        if not (scored / SELECTION_FILE).is_file():
            continue
        target = folder / f"CC_s{seed}"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(scored.glob(f"*{SCORES_SUFFIX}")):
            scores = pd.read_csv(path, usecols=list(SCORE_COLUMNS))
            scores.to_csv(target / f"{path.name[: -len(SCORES_SUFFIX)]}.csv", index=False)
            written += 1
    if written:
        record = {
            "polyu_images": images,
            "recipe": RECIPE.format(side=args.side, labels=args.labels),
            "polyu_validation_srcc": validation_srcc(Path(args.out) / "report"),
        }
        (folder / TRAINING_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return written


def read_scores(results: Path, size: int, precision: str, labels: str) -> tuple[dict, dict] | None:
    """(the training record, {(set folder, stem): (iterations, predicted means)}) collected for
    one size, precision and kind of labels, or None where nothing is."""
    folder = results_folder(results, size, precision, labels)
    if not (folder / TRAINING_FILE).is_file():
        return None
    scores = {}
    for path in sorted(folder.glob("*/*.csv")):
        table = pd.read_csv(path)
        scores[(path.parent.name, path.stem)] = (
            table["iteration"].to_numpy(),
            table["predicted_mean"].to_numpy(dtype=np.float64),
        )
    return json.loads((folder / TRAINING_FILE).read_text()), scores


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    runs = Path(args.runs) / f"{args.size}px" / args.precision
    images = freeze_set(runs / args.polyu, out / "set", args.min_images)
    if images is None:
        return 0
    if not args.collect:
        labels = out / "labels.txt"
        training = common.BiqanTraining(
            image_set=out / "set",
            labels=labels,
            checkpoint=out / "model",
            report=out / "report",
            mode="resize",
            side=args.side,
            weights=args.imagenet_weights,
            epochs=args.epochs,
            early_stopping_patience=args.early_stopping_patience,
            gpu_id=args.gpu_id,
        )
        trained = (out / "report" / VALIDATION_FILE).is_file()
        if not make_labels(out / "set", labels, args.labels) or (
            not trained and common.run_step(training.command(), out / "train.log")
        ):
            return 1
        for seed in args.seeds:
            scored = out / f"CC_s{seed}"
            if (
                complete(runs / f"CC_s{seed}", Path(args.crops))
                and not (scored / SELECTION_FILE).is_file()
            ):
                common.run_step(score_command(args, runs / f"CC_s{seed}", scored))
    print(f"{collect(args, images)} image(s) of scores under {args.results}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="crop side, px (default 256)")
    parser.add_argument("--precision", default="bf16", help="runs' precision (default bf16)")
    parser.add_argument("--runs", default="devdata/scale", help="experiments/scale_runs.sh's runs")
    parser.add_argument("--polyu", default="PolyU30_s0", help="PolyU run folder (training)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="CC run seeds")
    parser.add_argument("--crops", help="the CC crops (default devdata/crops<size>/CC)")
    parser.add_argument(
        "--labels", choices=LABEL_RULES, default="absolute", help="absolute (the paper's, default)"
    )
    parser.add_argument(
        "--out", help="set, labels, model (default devdata/biqan_scale/<size>px/<labels>)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where scores are collected")
    parser.add_argument("--side", type=int, default=225, help="input side, 32k + 1 (default 225)")
    parser.add_argument("--min_images", type=int, default=20, help="PolyU images (default 20)")
    parser.add_argument("--epochs", type=int, default=12, help="most epochs per stage")
    parser.add_argument("--early_stopping_patience", type=int, default=3, help="epochs")
    common.add_imagenet_flag(parser)
    parser.add_argument("--gpu_id", default="cpu", help="'cpu' (default) or a CUDA device")
    parser.add_argument("--collect", action="store_true", help="only collect finished scores")
    args = parser.parse_args(argv)
    args.out = args.out or f"devdata/biqan_scale/{args.size}px/{args.labels}"
    args.crops = args.crops or f"devdata/crops{args.size}/CC"
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
