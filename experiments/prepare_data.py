"""Centre crops of the real/mean pairs of PolyU and CC, for reduced-scale experiments.

Writes `<out>/<dataset>/{real,mean}/<stem>.png` (lossless PNG, 8-bit RGB) for every pair of
`<data>/<dataset>/{real,mean}/`, paired by file name stem, and prints each crop's noisy-input
PSNR against its mean (data range 255). Deterministic (an unchanged file is not rewritten): the crop is the exact centre
(top = (H - size) // 2, left = (W - size) // 2) and nothing is random. Rerunning overwrites.

    python experiments/prepare_data.py --data ../shared/data --out devdata/crops --size 64

The crops are cut from the licensed data: keep `--out` outside the repository's tracked files
(devdata/ is git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from experiments import common
from utils import image_io

DATASETS = ("PolyU", "CC")
CROPS = common.FOLDERS["crops"][0]


def list_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of `folder` keyed by stem, sorted by name."""
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in image_io.IMAGE_SUFFIXES
    )
    return {p.stem: p for p in files}


def centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The `size` x `size` centre of an HWC array; ValueError if the image is smaller."""
    height, width = array.shape[:2]
    if height < size or width < size:
        raise ValueError(f"image {width}x{height} is smaller than the crop {size}")
    top, left = (height - size) // 2, (width - size) // 2
    return array[top : top + size, left : left + size]


def psnr_255(noisy: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays, data range 255."""
    mse = np.mean((noisy.astype(np.float64) - clean.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically, and only when the file is missing or differs (runs may be reading it)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    data = buffer.getvalue()
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def prepare(data: Path, out: Path, size: int, datasets: list[str]) -> list[dict]:
    rows = []
    for dataset in datasets:
        real_dir, mean_dir = data / dataset / "real", data / dataset / "mean"
        reals, means = list_by_stem(real_dir), list_by_stem(mean_dir)
        missing = sorted(set(reals) ^ set(means))
        if missing:
            print(f"{dataset}: unpaired files skipped: {missing}", file=sys.stderr)
        for kind in ("real", "mean"):
            (out / dataset / kind).mkdir(parents=True, exist_ok=True)
        for stem in sorted(set(reals) & set(means)):
            real = centre_crop(read_rgb(reals[stem]), size)
            mean = centre_crop(read_rgb(means[stem]), size)
            save_png(real, out / dataset / "real" / f"{stem}.png")
            save_png(mean, out / dataset / "mean" / f"{stem}.png")
            rows.append(
                {
                    "dataset": dataset,
                    "image": stem,
                    "size": size,
                    "psnr_noisy": round(psnr_255(real, mean), 4),
                    "psnr_noisy_full": round(
                        psnr_255(read_rgb(reals[stem]), read_rgb(means[stem])), 4
                    ),
                }
            )
    return rows


def main(args: argparse.Namespace) -> int:
    rows = prepare(Path(args.data), Path(args.out), args.size, args.datasets)
    with open(Path(args.out) / "noisy_psnr.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'dataset':8s} {'image':40s} {'crop dB':>8s} {'full dB':>8s}")
    for row in rows:
        print(
            f"{row['dataset']:8s} {row['image']:40s} {row['psnr_noisy']:8.2f} {row['psnr_noisy_full']:8.2f}"
        )
    for dataset in args.datasets:
        values = [r for r in rows if r["dataset"] == dataset]
        print(
            f"{dataset}: {len(values)} pairs, noisy-input PSNR mean {np.mean([r['psnr_noisy'] for r in values]):.2f} dB "
            f"(crop), {np.mean([r['psnr_noisy_full'] for r in values]):.2f} dB (full image)"
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default="../shared/data",
        help="folder holding PolyU/ and CC/ (default ../shared/data)",
    )
    parser.add_argument("--out", default=CROPS, help=f"output folder (default {CROPS})")
    parser.add_argument("--size", type=int, default=64, help="crop side in pixels (default 64)")
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), help="datasets to crop (default PolyU CC)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
