"""Issue 26: seed averaging and the CBM3D blend at each size, from rows kept in `results/`.

    python -m experiments.blend_study compute   # devdata runs and crops -> results/blend (minutes)
    python -m experiments.blend_study report [--write]   # results/blend -> the table (seconds)

`compute` reads the runs that `scale_study` tables (their rows under `results/`, their
snapshots in the git-ignored run folders named by `RUN_FOLDERS`; the rows of runs whose
snapshots are gone, on a new machine, are kept as they are) and, for every CC and PolyU
image run at seed 0 and every shipped rule (`scale_study.shipped_rules`), takes the snapshot the
rule picks (CC: at every seed), and for CC the mean of the picks of the image's seeds (K fits of
one image). Each
output is blended with CBM3D at the σ tuned on that size's PolyU crops (`scale_study.cbm3d_tuned`)
as `weight * dip + (1 - weight) * cbm3d` for every weight of `WEIGHTS` (1: DIP alone, 0: CBM3D
alone), and one row per (image, rule, output, weight) with CBM3D's σ and the PSNR goes to
`results/blend/<size>px/<precision>.csv`: numbers only, no pixels. `report` tunes the weight on
PolyU (the mean PSNR of the seed-0 blends) and gives CC's mean PSNR of CBM3D, one fit (over the
image runs of every seed), the seed mean and both blended, each against CBM3D.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import scale_study
from experiments.cbm3d_full import read_rgb
from experiments.common import REPO, add_report_flags, publish_table
from utils import image_io, metrics, run_output

RESULTS = REPO / "results"
ROWS = "blend"  # RESULTS/blend/<size>px/<precision>.csv
TABLE_FILE = "blend.md"  # RESULTS/blend.md, and its copy in the document
DOC_BLOCK = "blend"  # this table's block in docs/REPRODUCTION.md
SCALE_RUNS = REPO / "devdata" / "scale"  # experiments/scale_runs.sh
RUN_FOLDERS = {
    64: REPO / "devdata" / "precision",
    128: SCALE_RUNS,
    256: SCALE_RUNS,
    512: SCALE_RUNS,
}
WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
OUTPUTS = ("one fit", "seed mean")  # one seed's pick; the mean of the picks of seeds 0, 1, 2...
# seed: the fit's seed for "one fit", the number of seeds averaged for "seed mean"
COLUMNS = ["set", "stem", "rule", "output", "seed", "sigma", "weight", "psnr"]
RULES = tuple(scale_study.shipped_rules())  # the rules blended, in the rows' order


def cbm3d_output(noisy: np.ndarray, sigma_255: float) -> np.ndarray:
    """CBM3D of `noisy` (HWC float in [0, 1]) at `sigma_255`, quantised to 8 bits, in [0, 1]."""
    import bm3d

    estimate = bm3d.bm3d_rgb(noisy.astype(np.float64), sigma_255 / 255.0)
    return image_io.quantize(np.clip(estimate, 0.0, 1.0), 8) / 255.0


def picked_snapshot(run_dir: Path, run: scale_study.ImageRun, rule: scale_study.Rule) -> np.ndarray:
    """The snapshot `rule` picks in `run` (whose image folder is `run_dir/<stem>`), [0, 1] HWC."""
    iteration = int(run.iterations[rule.pick(run)])
    return image_io.read_rgb(run_output.snapshot_path(run_dir / run.stem, iteration))


def blend_rows(base: dict, dip: np.ndarray, cbm3d: np.ndarray, clean: np.ndarray) -> list[dict]:
    """One row per weight: the PSNR of weight * dip + (1 - weight) * cbm3d."""
    return [
        base
        | {
            "weight": weight,
            "psnr": round(metrics.psnr(weight * dip + (1 - weight) * cbm3d, clean), 4),
        }
        for weight in WEIGHTS
    ]


def run_folder(run_root: Path, run: scale_study.ImageRun) -> Path:
    """The image folder of `run` (its snapshots and input.json) under `run_root`."""
    return run_root / f"{run.size}px" / run.precision / f"{run.set_name}_s{run.seed}" / run.stem


def image_rows(
    runs_of_image: list[scale_study.ImageRun], run_root: Path, sigma: float, kept: pd.DataFrame
) -> list[dict]:
    """Rows of one image (its runs at every seed of one size and precision): those in `kept`
    (its rows computed before at this σ) stay, the missing ones are computed from the run
    folders that are still there; the seed mean is recomputed when a seed is added and the
    snapshots of every seed are there, else the one in `kept` stays. So rows survive the loss
    of the git-ignored snapshots."""
    have = {seed for seed in kept.loc[kept["output"] == OUTPUTS[0], "seed"]}
    mean_seeds = set(kept.loc[kept["output"] == OUTPUTS[1], "seed"])
    present = [run for run in runs_of_image if run_folder(run_root, run).is_dir()]
    missing = [run for run in runs_of_image if run.seed not in have]
    if any(run not in present for run in missing):
        print(f"{runs_of_image[0].stem}: snapshots of seeds {[run.seed for run in missing]} gone")
    missing = [run for run in missing if run in present]
    seeds = len(runs_of_image)
    averaged = seeds > 1 and mean_seeds != {seeds} and len(present) == seeds
    if not missing and not averaged:
        return kept.to_dict("records")
    first = present[0]
    inputs = json.loads((run_folder(run_root, first) / run_output.INPUT_FILE).read_text())
    noisy, clean = read_rgb(REPO / inputs["noisy"]), read_rgb(REPO / inputs["clean"])
    cbm3d = cbm3d_output(noisy, sigma)
    rows = (kept[kept["output"] != OUTPUTS[1]] if averaged else kept).to_dict("records")
    for name, rule in scale_study.shipped_rules().items():
        base = {"set": first.set_name, "stem": first.stem, "rule": name, "sigma": sigma}
        for run in missing:
            pick = picked_snapshot(run_folder(run_root, run).parent, run, rule)
            rows += blend_rows(base | {"output": OUTPUTS[0], "seed": run.seed}, pick, cbm3d, clean)
        if averaged:
            picks = [
                picked_snapshot(run_folder(run_root, run).parent, run, rule) for run in present
            ]
            rows += blend_rows(base | {"output": OUTPUTS[1], "seed": seeds}, np.mean(picks, axis=0),
                               cbm3d, clean)  # fmt: skip
    return rows


def row_order(row: dict) -> tuple:
    """An image's rows in writing order: rule (shipped order), output, seed, weight."""
    return RULES.index(row["rule"]), OUTPUTS.index(row["output"]), row["seed"], row["weight"]


def compute(results: Path) -> int:
    """Write the rows of every size and precision whose runs and CBM3D σ are there, keeping the
    rows already written for runs whose snapshots are gone (`image_rows`)."""
    runs = scale_study.read_runs(results)
    for size, precision in sorted({(run.size, run.precision) for run in runs}):
        if size not in RUN_FOLDERS or precision not in scale_study.PRECISIONS:
            continue
        tuned = scale_study.cbm3d_tuned(results, size)
        if tuned is None:
            print(f"{size}px: no CBM3D σ tuned yet; skipped")
            continue
        images: dict[tuple[str, str], list] = {}
        for run in runs:
            if (run.size, run.precision) == (size, precision) and (
                run.set_name == scale_study.REPORT_SET
                or (scale_study.is_tuning_set(run.set_name) and run.seed == 0)
            ):
                images.setdefault((run.set_name, run.stem), []).append(run)
        target = results / ROWS / f"{size}px" / f"{precision}.csv"
        before = pd.read_csv(target) if target.is_file() else pd.DataFrame(columns=COLUMNS)
        before = before[before["sigma"] == tuned[0]]  # rows at another σ are stale
        rows = []
        for key in sorted(images):
            kept = before[(before["set"] == key[0]) & (before["stem"] == key[1])]
            rows += sorted(
                image_rows(images[key], RUN_FOLDERS[size], tuned[0], kept), key=row_order
            )
            print(f"{size}px {precision} {key[0]} {key[1]}", flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        image_io.write_text(target, pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
    return 0


def report_lines(results: Path) -> list[str]:
    """The markdown table: per size, precision and rule, CC's mean PSNR of each output."""
    lines = [
        "Seed averaging and the CBM3D blend on the CC crops (mean PSNR, dB, and against CBM3D "
        "tuned on PolyU; the blend weight tuned on the seed-0 picks of the PolyU crops):",
        "",
        "| size | precision | rule | CBM3D | one fit | seed mean (seeds) | weight (PolyU images) | one fit, "
        "blended | seed mean, blended |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(
        (results / ROWS).glob("*px/*.csv"), key=lambda path: (int(path.parent.name[:-2]), path.stem)
    ):
        rows = pd.read_csv(path)
        for rule, group in rows.groupby("rule", sort=False):
            polyu = group[
                group["set"].map(scale_study.is_tuning_set) & (group["output"] == OUTPUTS[0])
            ]
            weight = polyu.groupby("weight")["psnr"].mean().idxmax() if len(polyu) else None
            cc = group[group["set"] == scale_study.REPORT_SET]
            mean = cc.groupby(["output", "weight"])["psnr"].mean()
            cbm3d = mean[(OUTPUTS[0], 0.0)]
            averaged = cc[cc["output"] == OUTPUTS[1]]["seed"]
            keys = [(output, w) for w in (1.0, weight) for output in OUTPUTS]  # None: not tuned
            versus = [
                f"{mean[key]:.2f} ({mean[key] - cbm3d:+.2f})" if key in mean else "-"
                for key in keys
            ]
            seeds = f" ({averaged.min()})" if len(averaged) else ""
            tuned = "-" if weight is None else f"{weight:g} ({polyu['stem'].nunique()})"
            lines.append(
                f"| {path.parent.name[:-2]} | {path.stem} | {rule} | {cbm3d:.2f} | {versus[0]} | "
                f"{versus[1]}{seeds} | {tuned} | {versus[2]} | {versus[3]} |"
            )
    return lines


def main(args: argparse.Namespace) -> int:
    if args.action == "compute":
        return compute(args.results)
    publish_table(report_lines(args.results), args.results / TABLE_FILE, DOC_BLOCK, args.write)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("compute", "report"))
    add_report_flags(parser, RESULTS, TABLE_FILE)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
