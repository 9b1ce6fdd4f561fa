"""Callbacks of the fit loop: snapshots with metrics, resumable checkpoints, progress.

Snapshot work (device -> host copy, PNG encoding, PSNR/SSIM) runs on a background thread so
the loop never waits for it; the loop only clones the averaged output at snapshot iterations.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import math
import time
from pathlib import Path

import numpy as np
import torch

from utils import image_io, metrics
from utils.dip import DipFit, Padding, to_array

METRIC_COLUMNS = ("iteration", "loss", "psnr_noisy", "psnr_raw", "ssim_raw", "psnr_avg", "ssim_avg")
MAX_PENDING_SNAPSHOTS = 4


def snapshot_path(folder: Path, iteration: int) -> Path:
    """`<folder>/<iteration:05d>.png`."""
    return folder / f"{iteration:05d}.png"


def format_value(value: float | None) -> str:
    """CSV cell: '' for a missing value, else a compact float."""
    if value is None:
        return ""
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def metrics_csv(rows: list[dict]) -> str:
    """Rows of METRIC_COLUMNS -> CSV text with header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in rows:
        writer.writerow([row["iteration"]] + [format_value(row[column]) for column in METRIC_COLUMNS[1:]])
    return buffer.getvalue()


def read_metrics(path: Path) -> list[dict]:
    """metrics.csv -> rows with floats (None for empty cells); ValueError naming the file if broken."""
    try:
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            if tuple(reader.fieldnames or ()) != METRIC_COLUMNS:
                raise ValueError(f"{path}: header is not {','.join(METRIC_COLUMNS)}")
            return [
                {"iteration": int(row["iteration"]), **{c: float(row[c]) if row[c] else None for c in METRIC_COLUMNS[1:]}}
                for row in reader
            ]
    except (OSError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: unreadable metrics ({error})") from None


def snapshot_metrics(
    raw: np.ndarray, average: np.ndarray, noisy: np.ndarray, clean: np.ndarray | None
) -> dict:
    """Quality of one snapshot; arrays HWC/HW in [0, 1], already quantised as saved."""
    row = {"psnr_noisy": metrics.psnr(average, noisy)}
    for name, image in (("raw", raw), ("avg", average)):
        row[f"psnr_{name}"] = None if clean is None else metrics.psnr(image, clean)
        row[f"ssim_{name}"] = None if clean is None else metrics.ssim(image, clean)
    return row


class SnapshotWriter:
    """Every `save_iter` iterations: write the averaged output and a metrics.csv row."""

    def __init__(
        self,
        folder: Path,
        save_iter: int,
        padding: Padding,
        noisy: np.ndarray,
        clean: np.ndarray | None,
        bit_depth: int,
        rows: list[dict],
        on_row=None,
    ) -> None:
        self.folder = folder
        self.save_iter = save_iter
        self.padding = padding
        self.noisy = noisy
        self.clean = clean
        self.bit_depth = bit_depth
        self.rows = rows
        self.on_row = on_row
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.pending: list[concurrent.futures.Future] = []

    def quantized(self, tensor: torch.Tensor) -> np.ndarray:
        """Device tensor of the padded size -> cropped host array as it is saved."""
        pixels = self.padding.crop(to_array(tensor))
        maximum = 255.0 if self.bit_depth == 8 else 65535.0
        return image_io.quantize(pixels, self.bit_depth).astype(np.float32) / maximum

    def record(self, iteration: int, raw: torch.Tensor, average: torch.Tensor, loss: torch.Tensor) -> None:
        average_pixels = self.quantized(average)
        image_io.write_png(snapshot_path(self.folder, iteration), average_pixels, self.bit_depth)
        row = {"iteration": iteration, "loss": float(loss)}
        row.update(snapshot_metrics(self.quantized(raw), average_pixels, self.noisy, self.clean))
        self.rows.append(row)
        image_io.write_text(self.folder / "metrics.csv", metrics_csv(self.rows))
        if self.on_row is not None:
            self.on_row(row)

    def on_iteration(self, fit: DipFit, output: torch.Tensor, loss: torch.Tensor) -> None:
        if fit.iteration % self.save_iter:
            return
        future = self.executor.submit(self.record, fit.iteration, output, fit.average.clone(), loss)
        self.pending.append(future)
        if len(self.pending) > MAX_PENDING_SNAPSHOTS:
            self.pending.pop(0).result()

    def flush(self) -> None:
        """Wait for every queued snapshot (re-raising its error, if any)."""
        while self.pending:
            self.pending.pop(0).result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.executor.shutdown(wait=True)


def save_torch(path: Path, payload: dict) -> None:
    """torch.save, atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    image_io.write_atomic(path, buffer.getvalue())


class Checkpointer:
    """Every `every` iterations: flush snapshots, then save the fit's full state atomically."""

    def __init__(self, path: Path, every: int, writer: SnapshotWriter, clock_start: float, elapsed: float) -> None:
        self.path = path
        self.every = every
        self.writer = writer
        self.clock_start = clock_start
        self.elapsed = elapsed

    def seconds(self) -> float:
        """Fit time so far, including time spent before a resume."""
        return self.elapsed + time.perf_counter() - self.clock_start

    def on_iteration(self, fit: DipFit, output: torch.Tensor, loss: torch.Tensor) -> None:
        if fit.iteration % self.every or fit.iteration == fit.settings.num_iter:
            return
        self.writer.flush()
        save_torch(self.path, {"fit": fit.state_dict(), "rows": list(self.writer.rows), "elapsed": self.seconds()})


class Progress:
    """Advance a tqdm bar by one per iteration (host-side counter only)."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def on_iteration(self, fit: DipFit, output: torch.Tensor, loss: torch.Tensor) -> None:
        self.bar.update(1)
