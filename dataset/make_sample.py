"""Build dataset/sample/: small noisy/clean pairs from scikit-image's built-in images.

Each clean image is a square region of a built-in image, downscaled to SIZE x SIZE (small, so
that the README's quick start runs in minutes on a CPU). The noise imitates a camera's:
signal-dependent (Poisson-Gaussian, variance shot * x + read) and slightly correlated between
neighbouring pixels and channels, as demosaicing leaves it, then quantised to 8 bits; at the
default strength the noisy images are at 24-26 dB PSNR, noisy enough to see.
Run: python dataset/make_sample.py [--output dataset/sample]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import data, transform

from utils import image_io

SIZE = 64
# name: (loader, top, left, side of the square region downscaled to SIZE x SIZE)
REGIONS = {
    "astronaut": (data.astronaut, 40, 150, 96),
    "coffee": (data.coffee, 130, 200, 160),
    "chelsea": (data.chelsea, 50, 150, 96),
    "camera": (data.camera, 60, 180, 96),
}


def camera_noise(
    clean: np.ndarray, rng: np.random.Generator, shot: float = 0.008, read: float = 0.0008
) -> np.ndarray:
    """Add Poisson-Gaussian noise (variance shot * x + read), mildly correlated; [0, 1] in and out."""
    white = rng.standard_normal(clean.shape)
    spatial_axes = (0.6, 0.6) + ((0.0,) if clean.ndim == 3 else ())
    correlated = ndimage.gaussian_filter(white, sigma=spatial_axes)
    correlated /= correlated.std()
    if clean.ndim == 3:
        correlated = 0.8 * correlated + 0.2 * correlated.mean(axis=2, keepdims=True)
    noisy = clean + np.sqrt(shot * clean + read) * correlated
    return np.clip(noisy, 0.0, 1.0)


def clean_image(loader, top: int, left: int, side: int) -> np.ndarray:
    """A region of a built-in 8-bit image, downscaled to SIZE x SIZE; 8-bit values in [0, 1]."""
    region = loader()[top : top + side, left : left + side] / 255.0
    small = transform.resize(region, (SIZE, SIZE) + region.shape[2:], anti_aliasing=True)
    return image_io.quantize(small, 8) / 255.0


def main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    for name, region in REGIONS.items():
        clean = clean_image(*region)
        noisy = camera_noise(clean, rng)
        image_io.write_png(args.output / "mean" / f"{name}.png", clean)
        image_io.write_png(args.output / "real" / f"{name}.png", noisy)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "sample")
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args())
