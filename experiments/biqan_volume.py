"""Issue 9: the paper's BIQAN at the paper's data volume, and what limits it.

Trains BIQAN (train_BIQAN.py) on the 64x64 PolyU runs of `experiments/run_polyu.py`
(`<runs>/PolyU_s0_o<k>`, every 10th pair from offset k) in variants that each change one thing
of the paper's recipe, then scores the CC scratch runs (seeds 0-2) with test_BIQAN.py:

    python experiments/biqan_volume.py                 # every variant whose images are there
    python experiments/biqan_volume.py --only paper_n10 paper_n30
    python experiments/biqan_volume.py --table         # the table only

The paper's recipe here: ImageNet MobileNetV2 (the paper's MobileNet v1 ImageNet weights cannot
be downloaded on this machine; V2's come from tools/convert_mobilenet_v2.py), the whole
snapshot resized (input side 65), EMD on generator_dataset.py's absolute-PSNR labels, 10 % of
the source images held out for validation. Variants (one change each):

- `paper_n10`, `paper_n30`, `paper_n100`: data volume, 10, 30 or 100 PolyU images;
- `relative_n100`: labels from each image's own PSNR range (`--is_use_fix_minmax false`), the
  order within an image instead of the level across images;
- `crop_n100`: native-resolution 33x33 crops (3x3 grid averaged in testing) instead of resize;
- `scratch_n100`: the backbone from random weights instead of ImageNet;
- `narrow_n100`: from random weights at width 0.35.

Outputs: `<out>/sets/<set>` (symlinks to the finished PolyU images of the set), `<out>/labels/`,
`<out>/<variant>/model` (checkpoints, biqan.json), `<out>/<variant>/report` (validation
correlations), `<out>/<variant>/CC_scratch_s<seed>` (test_BIQAN outputs), and the table
`<tables>/biqan_volume.md` / `.csv`. Finished steps are skipped (rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common
from utils.biqan import evaluation


@dataclass(frozen=True)
class Variant:
    """One BIQAN training: which PolyU offsets, which labels, input mode and backbone."""

    name: str
    offsets: tuple[int, ...]
    labels: str = "absolute"  # or "relative" (each image's own PSNR range)
    mode: str = "resize"
    weights: str = "imagenet"  # or "none"
    alpha: float = 1.0

    @property
    def set_name(self) -> str:
        return "o" + "".join(map(str, self.offsets))


ALL_OFFSETS = tuple(range(10))
VARIANTS = (
    Variant("paper_n10", (0,)),
    Variant("paper_n30", (0, 1, 2)),
    Variant("paper_n100", ALL_OFFSETS),
    Variant("relative_n100", ALL_OFFSETS, labels="relative"),
    Variant("crop_n100", ALL_OFFSETS, mode="crop"),
    Variant("scratch_n100", ALL_OFFSETS, weights="none"),
    Variant("narrow_n100", ALL_OFFSETS, weights="none", alpha=0.35),
)
INPUT_SIDE = {"resize": 65, "crop": 33}  # 32k + 1: the converted ImageNet features stay exact


def build_set(runs: Path, offsets: tuple[int, ...], folder: Path) -> int:
    """Symlink the finished PolyU images of ``offsets`` into ``folder``; the number of images."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for offset in offsets:
        run_dir = runs / f"PolyU_s0_o{offset}"
        for image in common.run_images(run_dir) if run_dir.is_dir() else []:
            link = folder / image
            if not link.exists():
                link.symlink_to((run_dir / image).resolve())
            count += 1
    return count


def expected_images(offsets: tuple[int, ...]) -> int:
    """PolyU has 100 pairs; every 10th from each offset gives 10 per offset."""
    return 10 * len(offsets)


def labels_file(args: argparse.Namespace, variant: Variant, image_set: Path) -> Path | None:
    """generator_dataset.py's labels of the set (made once per set and label kind)."""
    path = Path(args.out) / "labels" / f"{image_set.name}_{variant.labels}.txt"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    command = common.label_command(image_set, path, variant.labels)
    return path if common.run_step(command) == 0 else None


def train(args: argparse.Namespace, variant: Variant, image_set: Path, labels: Path) -> bool:
    folder = Path(args.out) / variant.name
    if (folder / "model" / "biqan.json").is_file():
        return True
    training = common.BiqanTraining(
        image_set=image_set,
        labels=labels,
        checkpoint=folder / "model",
        report=folder / "report",
        mode=variant.mode,
        side=INPUT_SIDE[variant.mode],
        weights=args.imagenet_weights if variant.weights == "imagenet" else "none",
        epochs=args.epochs,
        early_stopping_patience=args.early_stopping_patience,
        alpha=variant.alpha,
    )
    return common.run_step(training.command(), folder / "train.log") == 0


def score_cc(args: argparse.Namespace, variant: Variant) -> bool:
    """test_BIQAN.py --selector biqan on each CC scratch run (skipped where done)."""
    ok = True
    for seed in args.seeds:
        out = Path(args.out) / variant.name / f"CC_scratch_s{seed}"
        if (out / "selection.csv").is_file():
            continue
        flags = {
            "--dataset_image_path": Path(args.runs) / f"CC_scratch_s{seed}",
            "--output_path": out,
            "--pre_trained_model": Path(args.out) / variant.name / "model",
            "--selector": "biqan",
            "--start_index": args.start_index,
            "--gpu_id": "cpu",
        }
        command = common.script_command("test_BIQAN.py", flags)
        ok &= common.run_step(command, out.parent / f"test_s{seed}.log") == 0
    return ok


def within_image(scores: pd.DataFrame) -> tuple[float, float]:
    """(SRCC, PLCC) of predicted mean score vs true PSNR over one image's snapshots; NaN when the
    scores are constant (as written, 4 decimals): no order to measure."""
    predicted, true = scores["predicted_mean"].to_numpy(), scores["true_psnr"].to_numpy()
    return evaluation.spearman(predicted, true), evaluation.pearson(predicted, true)


def variant_row(args: argparse.Namespace, variant: Variant) -> dict | None:
    """The table row of one trained and scored variant (None where it is not yet)."""
    folder = Path(args.out) / variant.name
    validation = folder / "report" / "validation_correlation.csv"
    if not validation.is_file():
        return None
    polyu = pd.read_csv(validation).set_index("image")
    gaps, srcc, plcc = [], [], []
    for seed in args.seeds:
        out = folder / f"CC_scratch_s{seed}"
        if not (out / "selection.csv").is_file():
            return None
        picks = pd.read_csv(out / "selection.csv")
        gaps += picks.loc[picks["selector"] == "biqan", "loss_db"].tolist()
        for path in sorted(out.glob("*_scores.csv")):
            s, p = within_image(pd.read_csv(path))
            srcc.append(s)
            plcc.append(p)
    images = len(common.run_images(Path((folder / "set.txt").read_text().strip())))
    return {
        "variant": variant.name,
        "PolyU images": images,
        "labels": variant.labels,
        "input": f"{variant.mode} {INPUT_SIDE[variant.mode]}",
        "backbone": f"{variant.weights}, width {variant.alpha:g}",
        "PolyU val SRCC (within image)": polyu.loc["mean within image", "srcc"],
        "PolyU val SRCC (all)": polyu.loc["all snapshots", "srcc"],
        "CC SRCC": np.nanmean(srcc) if not np.all(np.isnan(srcc)) else float("nan"),
        "CC PLCC": np.nanmean(plcc) if not np.all(np.isnan(plcc)) else float("nan"),
        "CC gap dB": common.mean_std(gaps),
        "CC worst gap dB": np.max(gaps),
    }


def write_table(args: argparse.Namespace) -> None:
    rows = [row for variant in VARIANTS if (row := variant_row(args, variant)) is not None]
    if not rows:
        print("no variant trained and scored yet")
        return
    table = pd.DataFrame(rows)
    tables = Path(args.tables)
    tables.mkdir(parents=True, exist_ok=True)
    table.to_csv(tables / "biqan_volume.csv", index=False)
    text = (
        f"BIQAN variants on the 64x64 PolyU runs; CC crops, seeds {args.seeds}, snapshots from "
        f"index {args.start_index} on (within-image SRCC/PLCC averaged over images):\n\n"
        + common.markdown_table(list(table.columns), table.round(2).values.tolist())
        + "\n"
    )
    common.write_table(tables, "biqan_volume.md", text)


def training_set(args: argparse.Namespace, variant: Variant) -> Path | None:
    """The set a variant trains on: the one it was trained on before, else all its images, else
    (with --allow_partial) the images finished so far, frozen as `<set>_n<count>`."""
    recorded = Path(args.out) / variant.name / "set.txt"
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    expected = expected_images(variant.offsets)
    sets = Path(args.out) / "sets"
    count = len(
        [
            image
            for offset in variant.offsets
            for image in common.run_images(Path(args.runs) / f"PolyU_s0_o{offset}")
        ]
    )
    if count < expected and not args.allow_partial:
        print(f"{variant.name}: {count}/{expected} images done; skipped (see --allow_partial)")
        return None
    image_set = sets / (variant.set_name if count == expected else f"{variant.set_name}_n{count}")
    build_set(Path(args.runs), variant.offsets, image_set)
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text(f"{image_set}\n")
    return image_set


def main(args: argparse.Namespace) -> int:
    if not args.table:
        chosen = [v for v in VARIANTS if not args.only or v.name in args.only]
        for variant in chosen:
            image_set = training_set(args, variant)
            if image_set is None:
                continue
            labels = labels_file(args, variant, image_set)
            if labels is None or not train(args, variant, image_set, labels):
                print(f"{variant.name}: training failed (see its train.log)")
                continue
            score_cc(args, variant)
    write_table(args)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_folder_flags(parser, "runs")
    parser.add_argument("--out", default="devdata/biqan_volume", help="sets, labels, models")
    common.add_folder_flags(parser, "tables")
    common.add_imagenet_flag(parser)
    parser.add_argument("--only", nargs="*", default=[], help="variant names to run")
    parser.add_argument("--epochs", type=int, default=12, help="most epochs per stage")
    parser.add_argument("--early_stopping_patience", type=int, default=3, help="epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="CC run seeds")
    common.add_start_index_flag(parser)
    parser.add_argument("--table", action="store_true", help="only write the table")
    parser.add_argument(
        "--allow_partial",
        action="store_true",
        help="train a variant on the images of its set finished so far (the count is in the table)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
