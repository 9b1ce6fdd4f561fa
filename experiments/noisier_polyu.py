"""Issue 9: PolyU crops made noisier, to test whether the noise level explains why selectors
trained on PolyU do not transfer to CC (CC's noise is at or beyond the noisy end of PolyU's).

For each PolyU subset `<crops>/PolyU_every10_<offset>` (made by experiments/run_polyu.py) writes
`<crops>/PolyU_noisier_<offset>/{real,mean}`: the same noisy crop plus white Gaussian noise of a
standard deviation drawn per image from `--sigmas` (out of 255; seeded by the image name, so
reruns are identical), rounded to 8 bits; the clean reference is unchanged. Then runs run_BDN.py
on it into `<runs>/PolyU_s0_n<offset>` (resumable, as run_polyu.py).

    python experiments/noisier_polyu.py --offsets 0 1 --code devdata/code/SHA

The added noise is white, unlike real camera noise (spatially correlated after demosaicing): a
ranker trained on it learns noisier inputs, not CC's noise structure.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from experiments import common, run_polyu


def name_seed(name: str) -> int:
    """A stable 32-bit seed from a file name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def add_noise(noisy: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """uint8 HWC image plus white Gaussian noise of std `sigma` (out of 255), rounded and clipped."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, noisy.shape)
    return np.clip(np.rint(noisy.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def make_noisier(source: Path, target: Path, sigmas: list[float]) -> None:
    """Noisier copies of `source`/real into `target`/real; `source`/mean copied unchanged."""
    for kind in ("real", "mean"):
        (target / kind).mkdir(parents=True, exist_ok=True)
    for real in sorted((source / "real").iterdir()):
        destination = target / "real" / real.name
        if not destination.exists():
            seed = name_seed(real.name)
            sigma = sigmas[seed % len(sigmas)]
            with Image.open(real) as image:
                noisy = np.asarray(image.convert("RGB"))
            Image.fromarray(add_noise(noisy, sigma, seed)).save(destination)
    for mean in sorted((source / "mean").iterdir()):
        if not (target / "mean" / mean.name).exists():
            shutil.copyfile(mean, target / "mean" / mean.name)


def main(args: argparse.Namespace) -> int:
    failures = 0
    for offset in args.offsets:
        source = Path(args.crops) / f"PolyU_every10_{offset}"
        if not (source / "real").is_dir():
            print(f"{source}: missing (run experiments/run_polyu.py --offset {offset} first)")
            failures += 1
            continue
        target = Path(args.crops) / f"PolyU_noisier_{offset}"
        make_noisier(source, target, args.sigmas)
        command = run_polyu.run_bdn_command(
            target / "real",
            target / "mean",
            Path(args.runs) / f"PolyU_s0_n{offset}",
            args,
        )
        print(" ".join(command), flush=True)
        failures += subprocess.call(command) != 0
    return 1 if failures else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_folder_flags(parser, "crops", "runs")
    parser.add_argument("--offsets", type=int, nargs="+", default=[0, 1], help="PolyU subsets")
    parser.add_argument(
        "--sigmas", type=float, nargs="+", default=[3.0, 5.0, 8.0], help="added std, /255"
    )
    parser.add_argument("--seed", type=int, default=0, help="DIP seed (default 0)")
    run_polyu.add_run_flags(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
