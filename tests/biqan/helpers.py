"""Helpers of the BIQAN tests: fake run_BDN output folders built from tiny random images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from utils import image_io, run_output

HEADER = ",".join(run_output.METRICS_COLUMNS)


def write_fake_image_folder(
    run_folder: Path,
    stem: str,
    iterations: list[int],
    psnr: list[float] | None,
    size: int = 40,
    grayscale: bool = False,
    seed: int = 0,
    finished: bool = True,
) -> Path:
    """One fake image folder: random snapshots, metrics.csv (blind when psnr is None)."""
    folder = run_folder / stem
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size) if grayscale else (size, size, 3)
    lines = [HEADER]
    for number, iteration in enumerate(iterations):
        image_io.write_png(run_output.snapshot_path(folder, iteration), rng.random(shape))
        if psnr is None:
            reference = ",,,"
        else:
            reference = f"{psnr[number] + 0.5:.4f},0.5,{psnr[number]:.4f},0.6"
        lines.append(f"{iteration},0.01,30.0,{reference}")
    (folder / run_output.METRICS_FILE).write_text("\n".join(lines) + "\n")
    if finished:
        (folder / run_output.SUMMARY_FILE).write_text(json.dumps({"image": stem}))
    return folder
