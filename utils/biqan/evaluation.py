"""Numbers that judge a quality network: rank and linear correlations, pick-vs-best gaps.

Numpy only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils import image_io


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of a 1-D array, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        stop = start + 1
        while stop < len(values) and sorted_values[stop] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0
        start = stop
    return ranks


def pearson(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson linear correlation (PLCC) of two 1-D arrays; NaN when either is constant."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"need two 1-D arrays of one length, got {first.shape}, {second.shape}")
    if len(first) < 2:
        return float("nan")
    if np.ptp(first) == 0 or np.ptp(second) == 0:  # exactly constant: the mean's rounding
        return float("nan")  # would leave tiny centred values and a meaningless ratio
    first_centred, second_centred = first - first.mean(), second - second.mean()
    denominator = np.sqrt(np.sum(first_centred**2) * np.sum(second_centred**2))
    return float(np.sum(first_centred * second_centred) / denominator)


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation (SRCC) of two 1-D arrays; NaN when either is constant."""
    return pearson(average_ranks(first), average_ranks(second))


@dataclasses.dataclass(frozen=True)
class CorrelationReport:
    """SRCC/PLCC over all snapshots and within each image (``per_image``: name -> (srcc, plcc))."""

    srcc: float
    plcc: float
    per_image: dict[str, tuple[float, float]]

    @property
    def mean_within_image(self) -> tuple[float, float]:
        """Mean SRCC and PLCC over images (NaN entries ignored)."""
        values = np.array(list(self.per_image.values()), dtype=np.float64).reshape(-1, 2)
        if values.size == 0 or np.all(np.isnan(values)):
            return float("nan"), float("nan")
        return float(np.nanmean(values[:, 0])), float(np.nanmean(values[:, 1]))


def correlation_report(
    images: Sequence[str], predicted: np.ndarray, true_psnr: np.ndarray
) -> CorrelationReport:
    """Correlations of predicted mean scores (N,) with true PSNRs (N,), overall and per image."""
    images = np.asarray(images)
    predicted = np.asarray(predicted, dtype=np.float64)
    true_psnr = np.asarray(true_psnr, dtype=np.float64)
    per_image = {}
    for image in np.unique(images):
        members = images == image
        per_image[str(image)] = (
            spearman(predicted[members], true_psnr[members]),
            pearson(predicted[members], true_psnr[members]),
        )
    return CorrelationReport(
        srcc=spearman(predicted, true_psnr), plcc=pearson(predicted, true_psnr), per_image=per_image
    )


def mean_gap_by_selector(rows: Sequence[dict]) -> dict[str, float]:
    """Mean ``loss_db`` (best PSNR - picked PSNR) per ``selector`` over rows that have one."""
    gaps: dict[str, list[float]] = {}
    for row in rows:
        if row.get("loss_db") is not None and np.isfinite(row["loss_db"]):
            gaps.setdefault(row["selector"], []).append(float(row["loss_db"]))
    return {selector: float(np.mean(values)) for selector, values in gaps.items()}


def write_table(path: str | Path, rows: Sequence[dict]) -> None:
    """Write dictionaries as a CSV with the union of their keys as header (first-seen order),
    atomically."""
    fieldnames: list[str] = []
    for row in rows:
        fieldnames.extend(key for key in row if key not in fieldnames)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(rows)
    image_io.write_text(path, buffer.getvalue())
