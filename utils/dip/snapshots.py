"""Callbacks of the fit loop: snapshots with metrics, resumable checkpoints, progress.

Snapshot work (device -> host copy, PNG encoding, PSNR/SSIM, early-stopping rules) runs on a
background thread so the loop never waits for it; the loop only clones the averaged output at
snapshot iterations. With early stopping the loop waits, at each snapshot, for the previous
snapshot's decision (one snapshot of lag), so a fit stops exactly `save_iter` iterations after
its rule fires, whatever the timing, and no snapshot after the stop is written.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from utils import image_io, metrics
from utils.cluster import StopRequest
from utils.dip.fitting import DipFit, Padding, to_array
from utils.method import StoppingRule
from utils.run_output import METRICS_COLUMNS, METRICS_FILE, STATE_FILE, metrics_csv, snapshot_path

if TYPE_CHECKING:
    from tqdm import tqdm

MAX_PENDING_SNAPSHOTS = 4


def snapshot_metrics(
    raw: np.ndarray, average: np.ndarray, noisy: np.ndarray, clean: np.ndarray | None
) -> dict:
    """Quality of one snapshot; arrays HWC/HW in [0, 1], already quantised as saved."""
    row = {"psnr_noisy": metrics.psnr(average, noisy)}
    for name, image in (("raw", raw), ("avg", average)):
        row[f"psnr_{name}"] = None if clean is None else metrics.psnr(image, clean)
        row[f"ssim_{name}"] = None if clean is None else metrics.ssim(image, clean)
    return row


@dataclasses.dataclass
class SnapshotTarget:
    """One image of a fit, as the snapshot writer needs it; `rows` grows as snapshots are made."""

    folder: Path
    padding: Padding
    noisy: np.ndarray
    clean: np.ndarray | None
    bit_depth: int
    rows: list[dict]
    stopper: StoppingRule | None = None
    stop_iteration: int | None = None

    def saved_pixels(self, tensor: torch.Tensor) -> np.ndarray:
        """(1, C, H, W) host tensor of the padded size -> cropped array, quantised as it is saved."""
        pixels = self.padding.crop(to_array(tensor))
        maximum = 255.0 if self.bit_depth == 8 else 65535.0
        return image_io.quantize(pixels, self.bit_depth).astype(np.float32) / maximum


class SnapshotWriter:
    """Every `save_iter` iterations: write each image's averaged output and a metrics.csv row."""

    def __init__(
        self,
        targets: list[SnapshotTarget],
        save_iter: int,
        on_row: Callable[[int, dict], None] | None = None,
    ) -> None:
        self.targets = targets
        self.save_iter = save_iter
        self.on_row = on_row
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.pending: list[concurrent.futures.Future] = []

    def record(
        self, iteration: int, raw: torch.Tensor, average: torch.Tensor, losses: torch.Tensor
    ) -> None:
        """Runs on the writer thread: one device-to-host copy per tensor, then per-image work."""
        raw, average, losses = raw.cpu(), average.cpu(), losses.cpu()
        for index, target in enumerate(self.targets):
            if target.stop_iteration is not None:
                continue
            average_pixels = target.saved_pixels(average[index : index + 1])
            image_io.write_png(
                snapshot_path(target.folder, iteration), average_pixels, target.bit_depth
            )
            row = {"iteration": iteration, "loss": float(losses[index])}
            row.update(
                snapshot_metrics(
                    target.saved_pixels(raw[index : index + 1]),
                    average_pixels,
                    target.noisy,
                    target.clean,
                )
            )
            target.rows.append(row)
            image_io.write_text(target.folder / METRICS_FILE, metrics_csv(target.rows))
            if target.stopper is not None:
                target.stopper.push(iteration, average_pixels)
                if target.stopper.fired:
                    target.stop_iteration = iteration
            if self.on_row is not None:
                self.on_row(index, row)

    @property
    def early_stopping(self) -> bool:
        """Whether any image has a stopping rule."""
        return any(target.stopper is not None for target in self.targets)

    def all_stopped(self, iteration: int) -> bool:
        """Whether every image's rule fired at a snapshot `save_iter` or more iterations before
        `iteration`: the fit ends there, one snapshot after the last firing, whatever the timing
        of the writer thread (and wherever a resume started)."""
        return all(
            target.stop_iteration is not None
            and target.stop_iteration <= iteration - self.save_iter
            for target in self.targets
        )

    def on_iteration(self, fit: DipFit, output: torch.Tensor, losses: torch.Tensor) -> None:
        """Every `save_iter` iterations: queue the snapshots for the writer thread (waiting while
        too many are pending) and stop the fit once every image's rule has fired."""
        if fit.iteration % self.save_iter:
            return
        future = self.executor.submit(
            self.record, fit.iteration, output, fit.average.clone(), losses
        )
        self.pending.append(future)
        backlog = 1 if self.early_stopping else MAX_PENDING_SNAPSHOTS
        while len(self.pending) > backlog:
            self.pending.pop(0).result()
        if self.early_stopping and self.all_stopped(fit.iteration):
            fit.stopped = True

    def flush(self) -> None:
        """Wait for every queued snapshot (re-raising its error, if any)."""
        while self.pending:
            self.pending.pop(0).result()

    def close(self) -> None:
        """Wait for the queued snapshots, then stop the writer thread."""
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
    """Every `every` iterations: flush snapshots, then save each image's fit state atomically.

    `<folder>/state.pt` holds the image's fit state, its metrics rows so far and its fit time.
    """

    def __init__(self, writer: SnapshotWriter, every: int, elapsed: list[float]) -> None:
        self.writer = writer
        self.every = every
        self.clock_start = time.perf_counter()
        self.elapsed = elapsed

    def seconds(self, index: int) -> float:
        """Fit time of image `index` so far, including time spent before a resume."""
        return self.elapsed[index] + time.perf_counter() - self.clock_start

    def on_iteration(self, fit: DipFit, output: torch.Tensor, losses: torch.Tensor) -> None:
        """Save every `every` iterations, except at the last (a finished image keeps no state)."""
        if fit.iteration % self.every or fit.iteration == fit.settings.num_iter:
            return
        self.save(fit)

    def save(self, fit: DipFit) -> None:
        """Flush snapshots, then write every image's state at the fit's current iteration."""
        self.writer.flush()
        for index, (target, state) in enumerate(zip(self.writer.targets, fit.state_dicts())):
            save_torch(
                target.folder / STATE_FILE,
                {"fit": state, "rows": list(target.rows), "elapsed": self.seconds(index)},
            )


class Progress:
    """Advance a tqdm bar by one per iteration (host-side counter only)."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def on_iteration(self, fit: DipFit, output: torch.Tensor, losses: torch.Tensor) -> None:
        """Advance the bar by one."""
        self.bar.update(1)


class StopOnRequest:
    """Stop the loop after the current iteration once a stop signal arrived (see utils.cluster)."""

    def __init__(self, request: StopRequest) -> None:
        self.request = request

    def on_iteration(self, fit: DipFit, output: torch.Tensor, losses: torch.Tensor) -> None:
        """Set `fit.stopped` once a stop signal arrived."""
        if self.request.requested:
            fit.stopped = True


FIT_STATE_TENSORS = ("base_input", "generator", "last_psnr")


def check_state_layout(state: object) -> None:
    """TypeError (a short reason) unless `state` has the layout `Checkpointer.save` writes: the fit's tensors,
    metrics rows of numbers and the fit time (a state file is untrusted input)."""
    if not isinstance(state, dict) or not isinstance(state.get("fit"), dict):
        raise TypeError("not a fit state")
    fit = state["fit"]
    if not isinstance(fit.get("iteration"), int) or fit["iteration"] < 0:
        raise TypeError("no iteration")
    tensors = [fit.get(key) for key in FIT_STATE_TENSORS] + list(fit.get("last_good") or [None])
    if not isinstance(fit.get("net"), dict) or not isinstance(fit.get("optimizer"), dict):
        raise TypeError("no network or optimiser state")
    tensors += list(fit["net"].values())
    if fit.get("average") is not None:
        tensors.append(fit["average"])
    if not all(isinstance(tensor, torch.Tensor) for tensor in tensors):
        raise TypeError("a fit tensor is missing")
    if fit["generator"].dtype != torch.uint8:
        raise TypeError("the random generator state is not bytes")
    rows = state.get("rows")
    if not isinstance(rows, list) or not isinstance(state.get("elapsed"), (int, float)):
        raise TypeError("no metrics rows or fit time")
    previous = 0
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(METRICS_COLUMNS):
            raise TypeError("a metrics row has other columns")
        if not isinstance(row["iteration"], int) or not previous < row["iteration"]:
            raise TypeError("metrics rows are not in iteration order")
        if not all(
            value is None or isinstance(value, (int, float))
            for key, value in row.items()
            if key != "iteration"
        ):
            raise TypeError("a metrics value is not a number")
        previous = row["iteration"]
    if previous > fit["iteration"]:
        raise TypeError("metrics rows after the saved iteration")


def load_resume_state(folder: Path, device: torch.device, mmap: bool = False) -> dict | None:
    """The image's saved fit state, or None when it has none; ValueError when it is damaged or
    not a state this tool wrote. Loaded with `weights_only=True`: tensors and plain containers
    only, so a crafted file cannot run code."""
    path = folder / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
        check_state_layout(state)
    except Exception as error:  # noqa: BLE001 (unpickling a damaged file can raise anything)
        reason = str(error) if isinstance(error, TypeError) else type(error).__name__
        raise ValueError(
            f"{path}: damaged resume state, or not one this tool wrote ({reason}); delete it "
            f"to refit {folder.name} from the start"
        ) from None
    return state


def resume_iteration(folder: Path) -> int:
    """Iteration the image's saved state resumes from (0 without one); ValueError if damaged."""
    state = load_resume_state(folder, torch.device("cpu"), mmap=True)
    return 0 if state is None else int(state["fit"]["iteration"])
