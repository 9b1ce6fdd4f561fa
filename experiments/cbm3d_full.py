"""The classical baseline at full scale: CBM3D on the 512x512 pairs, sigma chosen on PolyU only.

For every PolyU tuning image (every `--polyu_every`-th pair by name) and every CC pair, CBM3D
(`bm3d.bm3d_rgb`, the package's default profile) runs at each sigma of `SIGMAS` (8-bit units)
and once at the blind estimate (`skimage.restoration.estimate_sigma`, channels averaged). The
sigma with the best mean PSNR on PolyU is the tuned one; each CC image's best grid sigma is the
oracle. Rows go to `<tables>/cbm3d_full.csv` as they are computed (one row per image and sigma,
with seconds), so an interrupted run resumes where it stopped; `<tables>/cbm3d_full.md` is
written at the end, beside the paper's published per-image numbers for the same CC crops.

    OMP_NUM_THREADS=1 python experiments/cbm3d_full.py --data ../shared/data --tables devdata/tables
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common
from utils import image_io, metrics

SIGMAS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
BLIND = "blind"
# The original README's table "Quantitative results using PSNR on the CC dataset": the first
# crop (_1) of each camera/ISO, columns CBM3D and Proposed (the BIQAN pick at 512x512).
PUBLISHED_CC = {
    "5dmark3_iso3200_1": (37.79, 40.83),
    "d600_iso3200_1": (33.70, 34.97),
    "d800_iso1600_1": (36.15, 38.39),
    "d800_iso3200_1": (34.00, 39.76),
    "d800_iso6400_1": (29.97, 34.94),
}
COLUMNS = ["dataset", "image", "sigma", "sigma_255", "psnr", "ssim", "noisy_psnr", "seconds"]
RESULTS = common.REPO / "results" / "cbm3d" / "512px"  # section 7's rows (scale_runs.sh cbm3d512)
ROWS_FILE, TABLE_FILE = "cbm3d_full.csv", "cbm3d_full.md"
DOC_BLOCK = "cbm3d_full"  # section 7's block in docs/REPRODUCTION.md


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit RGB image as float64 HWC in [0, 1]."""
    pixels = image_io.read_image(path).pixels.astype(np.float64)
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels


def denoise_row(noisy: np.ndarray, clean: np.ndarray, sigma: str) -> dict:
    """CBM3D of `noisy` at `sigma` (a grid value in 8-bit units, or BLIND); quantised result scored."""
    import bm3d
    from skimage.restoration import estimate_sigma

    start = time.perf_counter()
    if sigma == BLIND:
        sigma_255 = 255.0 * float(estimate_sigma(noisy, channel_axis=-1, average_sigmas=True))
    else:
        sigma_255 = float(sigma)
    estimate = bm3d.bm3d_rgb(noisy, max(sigma_255, 0.01) / 255.0)
    denoised = image_io.quantize(estimate, 8) / 255.0
    seconds = time.perf_counter() - start
    return {
        "sigma": sigma,
        "sigma_255": round(sigma_255, 3),
        "psnr": round(metrics.psnr(denoised, clean), 4),
        "ssim": round(metrics.ssim(denoised, clean), 4),
        "noisy_psnr": round(metrics.psnr(noisy, clean), 4),
        "seconds": round(seconds, 2),
    }


def compute(data: Path, table: Path, polyu_every: int) -> pd.DataFrame:
    """Fill `table` (CSV, appended row by row) for PolyU tuning images then CC; return all rows."""
    done = (
        pd.read_csv(table, dtype={"sigma": str})
        if table.is_file()
        else pd.DataFrame(columns=COLUMNS)
    )
    seen = set(zip(done["dataset"], done["image"], done["sigma"].astype(str)))
    table.parent.mkdir(parents=True, exist_ok=True)
    for dataset, every in (("PolyU", polyu_every), ("CC", 1)):
        for stem, real_path, mean_path in common.pairs(data, dataset, every):
            noisy, clean = read_rgb(real_path), read_rgb(mean_path)
            for sigma in [BLIND] + [f"{value:g}" for value in SIGMAS]:
                if (dataset, stem, sigma) in seen:
                    continue
                row = {"dataset": dataset, "image": stem, **denoise_row(noisy, clean, sigma)}
                pd.DataFrame([row], columns=COLUMNS).to_csv(
                    table, mode="a", header=not table.is_file(), index=False
                )
                print(
                    f"{dataset} {stem} sigma {row['sigma_255']:.2f}: {row['psnr']:.2f} dB "
                    f"({row['seconds']:.0f} s)",
                    flush=True,
                )
    return pd.read_csv(table, dtype={"sigma": str})


def report(rows: pd.DataFrame) -> str:
    """Markdown: the PolyU sigma curve, the tuned sigma, and per CC image blind/tuned/oracle/published."""
    grid = rows[rows["sigma"] != BLIND]
    polyu = grid[grid["dataset"] == "PolyU"].groupby("sigma_255")["psnr"].mean()
    tuned = float(polyu.idxmax())
    lines = [
        f"PolyU tuning images: {rows[rows['dataset'] == 'PolyU']['image'].nunique()}; mean PSNR "
        "per sigma: " + ", ".join(f"{s:g}: {p:.2f}" for s, p in polyu.items()),
        f"Tuned sigma: {tuned:g}/255.",
        "",
        "| CC image | noisy | CBM3D blind (sigma) | CBM3D tuned | CBM3D oracle (sigma) | "
        "paper CBM3D | paper BIQAN pick | s/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cc = rows[rows["dataset"] == "CC"]
    summary = []
    for image, group in cc.groupby("image"):
        blind = group[group["sigma"] == BLIND].iloc[0]
        on_grid = group[group["sigma"] != BLIND]
        tuned_row = on_grid[on_grid["sigma_255"] == tuned].iloc[0]
        oracle = on_grid.loc[on_grid["psnr"].idxmax()]
        published = PUBLISHED_CC.get(image, (np.nan, np.nan))
        summary.append(
            [
                blind["noisy_psnr"],
                blind["psnr"],
                tuned_row["psnr"],
                oracle["psnr"],
                *published,
                on_grid["seconds"].mean(),
            ]
        )
        lines.append(
            f"| {image} | {blind['noisy_psnr']:.2f} | {blind['psnr']:.2f} ({blind['sigma_255']:.1f}) "
            f"| {tuned_row['psnr']:.2f} | {oracle['psnr']:.2f} ({oracle['sigma_255']:g}) | "
            f"{published[0]:.2f} | {published[1]:.2f} | {on_grid['seconds'].mean():.0f} |"
        )
    mean = np.nanmean(np.array(summary, dtype=float), axis=0)
    lines.append(
        f"| mean | {mean[0]:.2f} | {mean[1]:.2f} | {mean[2]:.2f} | {mean[3]:.2f} | {mean[4]:.2f} "
        f"| {mean[5]:.2f} | {mean[6]:.0f} |"
    )
    return "\n".join(lines) + "\n"


def report_lines(results: Path) -> list[str]:
    """The table of the rows under `results` (experiments.tables' entry)."""
    rows = results / ROWS_FILE
    if not rows.is_file():
        return ["Not measured yet (experiments/scale_runs.sh, `cbm3d512`)."]
    return report(pd.read_csv(rows, dtype={"sigma": str})).splitlines()


def main(args: argparse.Namespace) -> int:
    table = Path(args.tables) / ROWS_FILE
    rows = compute(Path(args.data), table, args.polyu_every)
    text = report(rows)
    common.write_table(args.tables, TABLE_FILE, text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="folder with PolyU/ and CC/")
    common.add_folder_flags(parser, "tables")
    parser.add_argument(
        "--polyu_every",
        type=int,
        default=10,
        help="PolyU tuning images: every N-th pair by name (default 10)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
