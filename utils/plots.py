"""Figures of step 1 (matplotlib, Agg backend; every figure is closed after saving)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402  (backend must be chosen first)

from utils import image_io  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_figure(figure: Figure, path: Path) -> None:
    """Save a figure as PNG atomically and close it."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        pyplot.close(figure)
    image_io.write_atomic(path, buffer.getvalue())


def psnr_curve(rows: list[dict], path: Path, title: str) -> None:
    """PSNR per snapshot: vs the noisy input always, vs the reference (raw and averaged) when known."""
    figure, axis = pyplot.subplots(figsize=(6, 4))
    iterations = [row["iteration"] for row in rows]
    axis.plot(
        iterations, [row["psnr_noisy"] for row in rows], label="averaged vs noisy", color="0.6"
    )
    if rows and rows[0]["psnr_avg"] is not None:
        axis.plot(iterations, [row["psnr_raw"] for row in rows], label="raw vs clean", alpha=0.6)
        axis.plot(iterations, [row["psnr_avg"] for row in rows], label="averaged vs clean")
        best = max(rows, key=lambda row: row["psnr_avg"])
        axis.plot(
            [best["iteration"]],
            [best["psnr_avg"]],
            "o",
            color="red",
            label=f"best {best['psnr_avg']:.2f} dB @ {best['iteration']}",
        )
    axis.set_xlabel("iteration")
    axis.set_ylabel("PSNR (dB)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def image_row(panels: list[tuple[np.ndarray, str]], path: Path) -> None:
    """Images side by side, each with its title; pixels in [0, 1], HWC RGB or HW grayscale."""
    figure, axes = pyplot.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for axis, (pixels, title) in zip(np.atleast_1d(axes), panels):
        axis.imshow(
            np.clip(pixels, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    save_figure(figure, path)
