"""Question 3: train BIQAN on the PolyU runs (steps 2-3) in four variants, then pick on CC (step 4).

Variants: `--input_mode` resize or crop, backbone MobileNetV2 from scratch (`none`) or from
torchvision's ImageNet weights converted by `tools/convert_mobilenet_v2.py` (`imagenet`,
given by `--imagenet_weights`; left out with a message when that file is absent). MobileNetV2 for
all four, so that the weights are the only difference between the pairs.

    python experiments/biqan_study.py --runs devdata/runs --out devdata/biqan

Steps, each skipped when its output exists (rerun to resume):
1. `generator_dataset.py` on `<runs>/<polyu>` -> `<out>/labels.txt`;
2. `train_BIQAN.py` per variant -> `<out>/<variant>/` (checkpoints, biqan.json) and
   `<out>/<variant>/report/` (history, validation correlations);
3. `select_snapshots.py biqan` on the CC scratch runs -> `devdata/selection/CC_scratch_s<seed>/<variant>/`.

At the reduced scale (64x64 snapshots) the input side is `--image_size` (65: the whole snapshot,
resized and cropped in training) for resize and `--crop_size` (33: native-resolution crops, a 3x3
grid averaged in testing) for crop; the paper: 224 from 512x512 snapshots. Sides of the form
32k + 1 keep every stride-2 layer's input odd, where Keras pads like torchvision, so the converted
ImageNet features are the ones torchvision computes (see convert_mobilenet_v2.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments import common


def variants(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(name, input mode, weights flag) of each variant that can run."""
    chosen = []
    for mode in args.input_modes:
        for weights in args.weights:
            if weights == "imagenet" and not Path(args.imagenet_weights).is_file():
                print(
                    f"{args.imagenet_weights}: not found; the {mode}_imagenet variant is left "
                    "out (make it with tools/convert_mobilenet_v2.py)",
                    flush=True,
                )
                continue
            flag = args.imagenet_weights if weights == "imagenet" else "none"
            chosen.append((f"{mode}_{weights}", mode, flag))
    return chosen


def train_command(
    args: argparse.Namespace, labels: Path, name: str, mode: str, weights: str
) -> list[str]:
    folder = Path(args.out) / name
    return common.BiqanTraining(
        image_set=Path(args.runs) / args.polyu,
        labels=labels,
        checkpoint=folder,
        report=folder / "report",
        mode=mode,
        side=args.image_size if mode == "resize" else args.crop_size,
        weights=weights,
        epochs=args.epochs,
        early_stopping_patience=args.early_stopping_patience,
        seed=args.seed,
        gpu_id=args.gpu_id,
    ).command()


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.txt"
    if not labels.is_file() and common.run_step(
        common.label_command(Path(args.runs) / args.polyu, labels)
    ):
        return 1
    failures = 0
    models = []
    for name, mode, weights in variants(args):
        folder = out / name
        trained = (folder / "biqan.json").is_file() and list(folder.glob("weights.*.weights.h5"))
        if not trained and common.run_step(train_command(args, labels, name, mode, weights)):
            failures += 1
            continue
        models.append(f"{name}={folder}")
    if models:
        failures += (
            common.run_step(
                [
                    sys.executable,
                    str(common.REPO / "experiments" / "select_snapshots.py"),
                    "biqan",
                    "--runs",
                    str(args.runs),
                    "--seeds",
                    *map(str, args.seeds),
                    "--gpu_id",
                    args.gpu_id,
                    "--quiet",
                    "--model",
                    *models,
                ]
            )
            != 0
        )
    return 1 if failures else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_folder_flags(parser, "runs")
    parser.add_argument(
        "--polyu", default="PolyU_s0", help="PolyU run folder under --runs (default PolyU_s0)"
    )
    parser.add_argument(
        "--out", default="devdata/biqan", help="labels and trained models (default devdata/biqan)"
    )
    common.add_imagenet_flag(parser)
    parser.add_argument(
        "--input_modes", nargs="+", default=["resize", "crop"], choices=("resize", "crop")
    )
    parser.add_argument(
        "--weights", nargs="+", default=["imagenet", "none"], choices=("imagenet", "none")
    )
    parser.add_argument(
        "--image_size", type=int, default=65, help="resize mode input side (default 65)"
    )
    parser.add_argument(
        "--crop_size", type=int, default=33, help="crop mode input side (default 33)"
    )
    parser.add_argument(
        "--epochs", type=int, default=20, help="most epochs per training stage (default 20)"
    )
    parser.add_argument("--early_stopping_patience", type=int, default=4, help="epochs (default 4)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="CC scratch run seeds (default 0 1 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--gpu_id", default="cpu", help="'cpu' (default) or a CUDA device number")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
