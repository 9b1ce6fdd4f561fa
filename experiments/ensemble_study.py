"""Issue 15, part 2: can a DIP output beat CBM3D with a PolyU-tuned sigma on the CC crops?

Combinations of what step 1 already saved, each measured against the clean reference:

| method | output |
|---|---|
| `dip` | the picked snapshot of one seed (mean over the seeds) |
| `dip_window` | the mean of the snapshots within `WINDOW` snapshots of the pick, one seed |
| `dip_seeds` | the mean over seeds of each seed's picked snapshot (K fits of one image) |
| `cbm3d` | CBM3D at the sigma tuned on the PolyU crops that have DIP runs |
| `dip+cbm3d` | lambda * dip + (1 - lambda) * cbm3d, lambda tuned on the same PolyU crops |
| `dip_seeds+cbm3d` | the same with the seed mean |

Picks come from experiments/selector_study.py (`<tables>/selector_picks.csv`): `true best`
(an oracle, the upper bound), `fixed:N` and every ranker variant; PolyU rows there are
out-of-fold picks (the `fixed:N` ones in-sample: N is tuned on them), so lambda and sigma are
tuned on PolyU without touching CC. CBM3D outputs of
the 64x64 crops are cached in `<tables>/cbm3d_crops/` (a call takes seconds here).

    python experiments/ensemble_study.py --crops devdata/crops --runs devdata/runs
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common
from utils import image_io, metrics, run_output

SIGMAS = (5, 10, 15, 20, 25)
LAMBDAS = tuple(np.round(np.linspace(0, 1, 11), 2))
WINDOW = 2


def run_folder(runs: Path, dataset: str, seed: int, offset: int) -> Path:
    """The run folder of experiments/selector_study.py's naming."""
    return runs / (f"PolyU_s0_o{offset}" if dataset == "PolyU" else f"CC_scratch_s{seed}")


def snapshot(folder: Path, iteration: int) -> np.ndarray:
    return image_io.read_rgb(run_output.snapshot_path(folder, iteration)).astype(np.float64)


def window_mean(folder: Path, iteration: int, iterations: np.ndarray) -> np.ndarray:
    """Mean of the snapshots within WINDOW snapshots of `iteration`."""
    index = int(np.flatnonzero(iterations == iteration)[0])
    chosen = iterations[max(0, index - WINDOW) : index + WINDOW + 1]
    return np.mean([snapshot(folder, int(i)) for i in chosen], axis=0)


def cbm3d(noisy: np.ndarray, sigma: int, cache: Path) -> np.ndarray:
    """CBM3D of a crop at sigma/255, quantised to 8 bits, cached as .npy."""
    if cache.is_file():
        return np.load(cache)
    import bm3d

    denoised = image_io.quantize(bm3d.bm3d_rgb(noisy, sigma / 255.0), 8) / 255.0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, denoised)
    return denoised


def image_outputs(group: pd.DataFrame, crops: Path, runs: Path, tables: Path, pick: str) -> dict:
    """Every method's output for one image (all seeds of `group`), plus clean and noisy."""
    first = group.iloc[0]
    dataset, image = first["dataset"], first["image"]
    clean = image_io.read_rgb(crops / dataset / "mean" / f"{image}.png").astype(np.float64)
    noisy = image_io.read_rgb(crops / dataset / "real" / f"{image}.png").astype(np.float64)
    singles, windows = [], []
    for _, row in group.iterrows():
        folder = run_folder(runs, dataset, int(row["seed"]), int(row["offset"])) / image
        iterations = run_output.read_metrics(folder).iteration
        singles.append(snapshot(folder, int(row[pick])))
        windows.append(window_mean(folder, int(row[pick]), iterations))
    cache = tables / "cbm3d_crops" / dataset / image
    return {
        "clean": clean,
        "noisy": noisy,
        "singles": singles,
        "windows": windows,
        "cbm3d": {sigma: cbm3d(noisy, sigma, cache / f"s{sigma}.npy") for sigma in SIGMAS},
    }


def mean_psnr(images: list[np.ndarray], clean: np.ndarray) -> float:
    return float(np.mean([metrics.psnr(np.clip(image, 0, 1), clean) for image in images]))


def evaluate(outputs: dict, sigma: int, weight: float) -> dict[str, float]:
    """PSNR of each method for one image at the given CBM3D sigma and DIP weight."""
    clean, base = outputs["clean"], outputs["cbm3d"][sigma]
    seeds = np.mean(outputs["singles"], axis=0)
    return {
        "noisy": metrics.psnr(outputs["noisy"], clean),
        "dip": mean_psnr(outputs["singles"], clean),
        "dip_window": mean_psnr(outputs["windows"], clean),
        "dip_seeds": metrics.psnr(np.clip(seeds, 0, 1), clean),
        "cbm3d": metrics.psnr(base, clean),
        "dip+cbm3d": mean_psnr(
            [weight * s + (1 - weight) * base for s in outputs["singles"]], clean
        ),
        "dip_seeds+cbm3d": metrics.psnr(np.clip(weight * seeds + (1 - weight) * base, 0, 1), clean),
    }


def cc_seeds(runs: Path, images: list[str]) -> list[int]:
    """Seeds whose CC scratch run has finished every one of `images`."""
    seeds = []
    for folder in sorted(runs.glob("CC_scratch_s*")):
        if all(common.finished(folder / image) for image in images):
            seeds.append(int(folder.name.rsplit("s", 1)[1]))
    return sorted(seeds)


def seed_curve_lines(
    args: argparse.Namespace, iteration: int, sigma: int, weight: float
) -> list[str]:
    """Mean CC PSNR of the average of K seeds' snapshots at the fixed stop `iteration`, for every
    K up to the number of finished seeds (each K averaged over all K-subsets of the seeds), alone
    and blended with CBM3D at the PolyU-tuned `sigma` and `weight`."""
    crops, runs, tables = Path(args.crops), Path(args.runs), Path(args.tables)
    images = sorted(path.stem for path in (crops / "CC" / "mean").glob("*.png"))
    seeds = cc_seeds(runs, images)
    if len(seeds) < 2:
        return []
    rows = {k: {"dip_seeds": [], "dip_seeds+cbm3d": []} for k in range(1, len(seeds) + 1)}
    for image in images:
        clean = image_io.read_rgb(crops / "CC" / "mean" / f"{image}.png").astype(np.float64)
        noisy = image_io.read_rgb(crops / "CC" / "real" / f"{image}.png").astype(np.float64)
        base = cbm3d(noisy, sigma, tables / "cbm3d_crops" / "CC" / image / f"s{sigma}.npy")
        picked = {seed: snapshot(runs / f"CC_scratch_s{seed}" / image, iteration) for seed in seeds}
        for k in rows:
            for subset in itertools.combinations(seeds, k):
                mean = np.mean([picked[seed] for seed in subset], axis=0)
                rows[k]["dip_seeds"].append(metrics.psnr(np.clip(mean, 0, 1), clean))
                blend = np.clip(weight * mean + (1 - weight) * base, 0, 1)
                rows[k]["dip_seeds+cbm3d"].append(metrics.psnr(blend, clean))
    lines = [
        "",
        f"Averaging K fits (seeds {seeds}) at the fixed stop {iteration}, CC crops, each K "
        f"averaged over every K-subset of the seeds; blend with CBM3D at sigma {sigma}, "
        f"DIP weight {weight:.1f} (both tuned on PolyU single fits):",
        "",
        "| K | dip_seeds | dip_seeds+cbm3d |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k} | {np.mean(v['dip_seeds']):.2f} | {np.mean(v['dip_seeds+cbm3d']):.2f} |"
        for k, v in rows.items()
    ]
    return lines


def main(args: argparse.Namespace) -> int:
    tables, crops, runs = Path(args.tables), Path(args.crops), Path(args.runs)
    picks = pd.read_csv(tables / "selector_picks.csv")
    selectors = list(picks["selector"].unique())
    lines, curve = [], []
    for selector in ["true best", *selectors]:
        column = "best_iteration" if selector == "true best" else "picked_iteration"
        chosen = picks[picks["selector"] == (selectors[0] if selector == "true best" else selector)]
        chosen = chosen.drop_duplicates(["dataset", "image", "seed"])
        polyu = [
            image_outputs(g, crops, runs, tables, column)
            for _, g in chosen[chosen["dataset"] == "PolyU"].groupby("image")
        ]
        cc = [
            image_outputs(g, crops, runs, tables, column)
            for _, g in chosen[chosen["dataset"] == "CC"].groupby("image")
        ]
        if not polyu or not cc:
            continue
        sigma = max(SIGMAS, key=lambda s: np.mean([evaluate(o, s, 1.0)["cbm3d"] for o in polyu]))
        weight = max(
            LAMBDAS, key=lambda w: np.mean([evaluate(o, sigma, w)["dip+cbm3d"] for o in polyu])
        )
        table = pd.DataFrame([evaluate(o, sigma, weight) for o in cc]).mean()
        lines.append(
            f"| {selector} | {len(polyu)} / {len(cc)} | {sigma} | {weight:.1f} | "
            + " | ".join(f"{table[k]:.2f}" for k in table.index)
            + " |"
        )
        print(lines[-1], flush=True)
        fixed = re.match(r"fixed:(\d+)", selector)
        if fixed and not curve:
            curve = seed_curve_lines(args, int(fixed.group(1)), sigma, weight)
    header = (
        "| pick | PolyU / CC images | sigma (PolyU) | lambda (PolyU) | noisy | dip | "
        "dip_window | dip_seeds | cbm3d | dip+cbm3d | dip_seeds+cbm3d |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    text = (
        "Mean PSNR (dB) on the CC crops:\n\n"
        + header
        + "\n"
        + "\n".join(lines)
        + "\n"
        + "\n".join(curve)
        + "\n"
    )
    common.write_table(tables, "ensemble_study.md", text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_folder_flags(parser, "crops", "runs", "tables")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
