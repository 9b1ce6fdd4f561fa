"""The noise level of every noisy crop of a set (the ranker's `noise_db` feature of
`snapshot_features`: no clean reference needed), noisiest first; `--copy_to` copies the N
noisiest pairs out as a crop set of their own.

Why: the PolyU crops that scale_runs.sh fits for tuning at 256 px (every 3rd pair) reach a noise
level of -39.0 dB at most, and of all 100 PolyU crops the noisiest is at -34.5 dB, where CC's
noisiest crop (d800_iso6400_1, the one that dominates the 256 px gap) is at -33.7 dB. A rule
tuned on the every-3rd set never sees an image that noisy; a set of PolyU's noisiest crops
(chosen on PolyU alone, outside the every-3rd set) lets the tuning cover PolyU's whole range.

    python -m experiments.noise_levels devdata/crops256/PolyU --noisiest 4 \\
        --exclude devdata/crops256/PolyU30 --copy_to devdata/crops256/PolyUnoisy4

A set folder holds `real/` (noisy) and `mean/` (clean) images paired by file name stem.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from utils import image_io, snapshot_features


def noise_levels(folder: Path) -> list[tuple[float, str]]:
    """(noise level in dB, stem) of each noisy image of `folder`/real, noisiest first."""
    levels = []
    for path in sorted((folder / "real").iterdir()):
        sigma = snapshot_features.noise_sigma(image_io.read_rgb(path))
        levels.append((snapshot_features.noise_db(sigma), path.stem))
    return sorted(levels, reverse=True)


def noisiest(levels: list[tuple[float, str]], count: int, exclude: set[str]) -> list[str]:
    """The stems of the `count` noisiest entries of `levels` that are not in `exclude`."""
    return [stem for _, stem in levels if stem not in exclude][:count]


def copy_pairs(source: Path, stems: list[str], target: Path) -> None:
    """Copy the real and mean images of `stems` from `source` into `target` (an existing file
    is left as it is)."""
    for side in ("real", "mean"):
        (target / side).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            for path in (source / side).glob(f"{stem}.*"):
                if not (target / side / path.name).exists():
                    shutil.copy2(path, target / side / path.name)


def main(args: argparse.Namespace) -> int:
    for folder in (args.folder, *([args.exclude] if args.exclude else [])):
        if not (folder / "real").is_dir():
            print(f"error: {folder}: no real/ folder of noisy images", file=sys.stderr)
            return 1
    levels = noise_levels(args.folder)
    exclude = {path.stem for path in (args.exclude / "real").iterdir()} if args.exclude else set()
    chosen = noisiest(levels, args.noisiest or len(levels), exclude)
    for level, stem in levels:
        if stem in chosen:
            print(f"{level:7.2f} dB  {stem}")
    if args.copy_to:
        copy_pairs(args.folder, chosen, args.copy_to)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a crop set (real/ and mean/)")
    parser.add_argument("--noisiest", type=int, help="only the N noisiest (default: all)")
    parser.add_argument("--exclude", type=Path, help="a crop set whose stems are left out")
    parser.add_argument("--copy_to", type=Path, help="copy the chosen pairs into this set")
    args = parser.parse_args(argv)
    if args.noisiest is not None and args.noisiest < 1:
        parser.error(f"--noisiest must be at least 1, got {args.noisiest}")
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
