"""Figures of steps 3 and 4: BIQAN loss curves, score curves, true-best vs pick comparison.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so nothing is left open.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from utils import image_io


def save(figure: Figure, path: str | Path) -> None:
    """Save a figure as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    image_io.write_atomic(path, buffer.getvalue())


def plot_loss_curves(history: dict[str, list[float]], title: str, path: str | Path) -> None:
    """Training and validation loss per epoch (``history``: ``epoch``, ``loss``, ``val_loss``)."""
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    epochs = history["epoch"]
    axes.plot(epochs, history["loss"], "o-", label="training")
    if "val_loss" in history:
        axes.plot(epochs, history["val_loss"], "s-", label="validation")
    axes.set_xlabel("epoch")
    axes.set_ylabel("EMD loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save(figure, path)


def plot_score_curves(
    iterations: np.ndarray,
    means: np.ndarray,
    stds: np.ndarray,
    true_psnr: np.ndarray | None,
    picks: dict[str, int],
    title: str,
    path: str | Path,
) -> None:
    """Predicted mean score (band: +- spread) per iteration, true PSNR on a second axis.

    ``picks``: selector label -> picked iteration, drawn as vertical lines.
    """
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.add_subplot()
    axes.plot(iterations, means, color="tab:blue", label="BIQAN mean score")
    axes.fill_between(
        iterations,
        means - stds,
        means + stds,
        color="tab:blue",
        alpha=0.15,
        label="BIQAN spread (std)",
    )
    axes.set_xlabel("iteration")
    axes.set_ylabel("predicted score (1..10)", color="tab:blue")
    handles, labels = axes.get_legend_handles_labels()
    if true_psnr is not None:
        psnr_axes = axes.twinx()
        psnr_axes.plot(iterations, true_psnr, color="tab:red", label="true PSNR")
        psnr_axes.set_ylabel("PSNR vs reference (dB)", color="tab:red")
        extra_handles, extra_labels = psnr_axes.get_legend_handles_labels()
        handles, labels = handles + extra_handles, labels + extra_labels
    for number, (label, iteration) in enumerate(picks.items()):
        line = axes.axvline(
            iteration, color=f"C{number + 2}", linestyle="--", label=f"{label} pick ({iteration})"
        )
        handles.append(line)
        labels.append(line.get_label())
    axes.legend(handles, labels, loc="best", fontsize="small")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    save(figure, path)


def plot_wmv_variance(
    iterations: np.ndarray,
    variances: np.ndarray,
    pick_iteration: int,
    stop_iteration: int | None,
    title: str,
    path: str | Path,
) -> None:
    """Windowed moving variance per iteration (log scale), the pick and the stop marked."""
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    axes.semilogy(iterations, np.where(variances > 0, variances, np.nan), color="tab:purple")
    axes.axvline(
        pick_iteration,
        color="tab:green",
        linestyle="--",
        label=f"pick (variance minimum, {pick_iteration})",
    )
    if stop_iteration is not None:
        axes.axvline(
            stop_iteration, color="tab:gray", linestyle=":", label=f"rule fired ({stop_iteration})"
        )
    axes.set_xlabel("iteration")
    axes.set_ylabel("windowed moving variance")
    axes.set_title(title if stop_iteration is not None else f"{title} (rule did not fire)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    save(figure, path)


def plot_compare(
    best_image: np.ndarray,
    best_title: str,
    pick_image: np.ndarray,
    pick_title: str,
    path: str | Path,
) -> None:
    """Side-by-side figure: true best snapshot | picked snapshot (RGB [0, 1], H x W x 3)."""
    figure = Figure(figsize=(10, 5.4), dpi=100)
    for position, (image, title) in enumerate(
        ((best_image, best_title), (pick_image, pick_title)), 1
    ):
        axes = figure.add_subplot(1, 2, position)
        axes.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
        axes.set_title(title)
        axes.axis("off")
    figure.tight_layout()
    save(figure, path)
