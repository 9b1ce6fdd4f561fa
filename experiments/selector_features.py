"""Cache the no-reference snapshot features (utils/snapshot_features.py) of finished DIP runs.

For every finished image of every run folder given, writes `<cache>/<run name>/<image>.npz`
with `iteration` (snapshots,), `psnr` (the averaged snapshot's PSNR against the clean
reference, NaN when blind) and `features` (snapshots, features). An image already cached with
the same snapshot count is skipped, so the command can be rerun while runs are still going.

    python experiments/selector_features.py devdata/runs/PolyU_s0_o* devdata/runs/CC_scratch_s*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from utils import run_output, snapshot_features
from utils.image_io import read_rgb


def cache_image(run: Path, folder: Path, cache: Path) -> bool:
    """Compute and store one image's features; False when the cache is already complete."""
    metrics = run_output.read_metrics(folder)
    target = cache / run.name / f"{metrics.name}.npz"
    if target.is_file() and len(np.load(target)["iteration"]) == len(metrics.iteration):
        return False
    noisy = read_rgb(run_output.noisy_input(run, metrics.name))
    snapshots = [read_rgb(path) for path in metrics.snapshot_paths()]
    features = snapshot_features.image_features(noisy, snapshots)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp.npz")
    np.savez(temporary, iteration=metrics.iteration, psnr=metrics.psnr_avg, features=features)
    temporary.replace(target)
    return True


def main(args: argparse.Namespace) -> int:
    count = 0
    for run in map(Path, args.runs):
        try:
            folders = run_output.list_image_folders(run).finished
        except ValueError as error:  # a run that has not finished an image yet
            print(f"skipped: {error}")
            continue
        for folder in folders:
            count += cache_image(run, folder, Path(args.cache))
    print(f"{count} image(s) cached in {args.cache}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run_BDN output folders")
    parser.add_argument("--cache", default="devdata/features", help="cache folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
