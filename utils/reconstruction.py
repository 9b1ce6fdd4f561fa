"""Step 1 of the pipeline: reconstruct every noisy image of a folder with DIP.

Output layout under `output_path`:
    args.json                  settings and versions of the run
    summary.csv                one row per finished image (rebuilt from the per-image files)
    <stem>_psnr.png            PSNR curve of each image
    <stem>/00020.png ...       snapshots of the averaged output, every save_iter iterations
    <stem>/metrics.csv         one row per snapshot (see snapshots.METRIC_COLUMNS)
    <stem>/net.pt              the final network, with the settings to rebuild it
    <stem>/summary.json        written last: marks the image as finished
    <stem>/state.pt            resumable state of an unfinished image (removed when done)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import platform
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.skip import SkipConfig, SkipNet
from utils import image_io, plots
from utils.dip import DipFit, FitSettings, build_network, pad_image, run_fit, to_tensor
from utils.snapshots import Checkpointer, Progress, SnapshotWriter, save_torch

LOGGER = logging.getLogger(__name__)
NETWORK_FILE = "net.pt"
SUMMARY_FILE = "summary.json"
STATE_FILE = "state.pt"
SUMMARY_COLUMNS = (
    "image", "height", "width", "reference", "init", "iterations", "best_iteration",
    "best_psnr", "best_ssim", "final_psnr", "seconds", "iterations_per_second",
)


@dataclasses.dataclass(frozen=True)
class ImageJob:
    """One noisy image and its clean reference (None: blind)."""

    noisy: Path
    clean: Path | None

    @property
    def stem(self) -> str:
        return self.noisy.stem


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Settings of a folder run besides the fit's own hyper-parameters."""

    output_path: Path
    network: SkipConfig
    fit: FitSettings
    seed: int
    init_from: str
    checkpoint_every: int
    device: torch.device
    quiet: bool = False
    show_iter: int = 0


def plan_jobs(noisy_folder: Path, clean_folder: Path | None) -> list[ImageJob]:
    """Noisy images sorted by name, each paired with the clean image of the same stem."""
    noisy_paths = image_io.list_images(noisy_folder)
    stems = [path.stem for path in noisy_paths]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise ValueError(f"{noisy_folder}: several images share a name: {duplicates}")
    clean_by_stem = {}
    if clean_folder is not None:
        clean_by_stem = {path.stem: path for path in image_io.list_images(clean_folder)}
    return [ImageJob(path, clean_by_stem.get(path.stem)) for path in noisy_paths]


def image_seed(seed: int, stem: str) -> int:
    """Per-image seed from the run seed and the image name (independent of order and sharding)."""
    return (seed * 1_000_003 + zlib.crc32(stem.encode("utf-8"))) % 2**31


def load_network(path: Path, device: torch.device) -> SkipNet:
    """Rebuild a network saved by `save_network`; ValueError naming the file if unusable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = SkipNet(SkipConfig.from_dict(saved["config"]))
        net.load_state_dict(saved["state_dict"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a usable network file ({type(error).__name__}: {error})") from None
    return net.to(device)


def save_network(path: Path, net: SkipNet, source: str, iterations: int) -> None:
    """Save the network with everything needed to rebuild it."""
    state = {key: value.detach().cpu() for key, value in net.state_dict().items()}
    save_torch(path, {"config": net.config.to_dict(), "state_dict": state, "source": source, "iterations": iterations})


def read_pair(job: ImageJob) -> tuple[image_io.Image, image_io.Image | None]:
    """Decode the noisy image and its reference; ValueError naming the file on any problem."""
    noisy = image_io.read_image(job.noisy)
    if job.clean is None:
        return noisy, None
    clean = image_io.read_image(job.clean)
    if clean.pixels.shape != noisy.pixels.shape:
        raise ValueError(
            f"{job.clean}: reference is {'x'.join(map(str, clean.pixels.shape))}, "
            f"noisy image {job.noisy.name} is {'x'.join(map(str, noisy.pixels.shape))}"
        )
    return noisy, clean


def initial_network(job: ImageJob, settings: RunSettings, previous: Path | None, channels: int) -> SkipNet:
    """Fresh network (seeded per image), with transferred weights when `init_from` asks for them."""
    config = dataclasses.replace(settings.network, output_channels=channels)
    source = None
    if settings.init_from == "previous":
        source = previous
    elif settings.init_from != "scratch":
        source = Path(settings.init_from)
    if source is not None:
        transferred = load_network(source, settings.device)
        if transferred.config != config:
            raise ValueError(f"{source}: network settings {transferred.config.to_dict()} do not fit this image/run {config.to_dict()}")
        return transferred
    return build_network(config, image_seed(settings.seed, job.stem), settings.device)


def summarize(job: ImageJob, rows: list[dict], size: tuple[int, int], settings: RunSettings, seconds: float, init: str) -> dict:
    """Per-image summary (best snapshot by PSNR of the averaged output where a reference exists)."""
    with_reference = [row for row in rows if row["psnr_avg"] is not None]
    best = max(with_reference, key=lambda row: row["psnr_avg"]) if with_reference else None
    iterations = settings.fit.num_iter
    return {
        "image": job.stem,
        "height": size[0],
        "width": size[1],
        "reference": job.clean is not None,
        "init": init,
        "iterations": iterations,
        "best_iteration": best["iteration"] if best else None,
        "best_psnr": best["psnr_avg"] if best else None,
        "best_ssim": best["ssim_avg"] if best else None,
        "final_psnr": rows[-1]["psnr_avg"] if rows else None,
        "seconds": round(seconds, 3),
        "iterations_per_second": round(iterations / seconds, 3) if seconds > 0 else None,
    }


def reconstruct_image(job: ImageJob, settings: RunSettings, previous: Path | None, position: int = 1) -> dict:
    """Fit one image (resuming from its state file when present); returns its summary."""
    noisy, clean = read_pair(job)
    folder = settings.output_path / job.stem
    try:
        padded, padding = pad_image(noisy.pixels, settings.network.size_multiple)
    except ValueError as error:
        raise ValueError(f"{job.noisy}: {error}") from None
    channels = 1 if noisy.pixels.ndim == 2 else 3
    init = settings.init_from if settings.init_from in ("scratch", "previous") else str(settings.init_from)
    if settings.init_from == "previous" and previous is None:
        init = "scratch"
    net = initial_network(job, settings, previous, channels)
    fit = DipFit(net, to_tensor(padded, settings.device), settings.fit, image_seed(settings.seed, job.stem))
    state_path = folder / STATE_FILE
    rows: list[dict] = []
    elapsed = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    if state_path.exists():
        state = torch.load(state_path, map_location=settings.device, weights_only=False)
        fit.load_state_dict(state["fit"])
        rows, elapsed = state["rows"], state["elapsed"]
    bar = tqdm(total=settings.fit.num_iter, initial=fit.iteration, desc=job.stem, position=position,
               leave=False, disable=settings.quiet, dynamic_ncols=True)

    def show(row: dict) -> None:
        postfix = {"loss": f"{row['loss']:.2e}"}
        if row["psnr_avg"] is not None:
            postfix["psnr"] = f"{row['psnr_avg']:.2f}"
        bar.set_postfix(postfix, refresh=False)
        if settings.quiet and settings.show_iter and row["iteration"] % settings.show_iter == 0:
            LOGGER.info("%s: iteration %d, %s", job.stem, row["iteration"], ", ".join(f"{k} {v}" for k, v in postfix.items()))

    writer = SnapshotWriter(folder, settings.fit.save_iter, padding, noisy.pixels,
                            None if clean is None else clean.pixels, noisy.bit_depth, rows, show)
    checkpointer = Checkpointer(state_path, settings.checkpoint_every, writer, time.perf_counter(), elapsed)
    try:
        run_fit(fit, [writer, checkpointer, Progress(bar)])
        writer.flush()
    finally:
        writer.close()
        bar.close()
    summary = summarize(job, rows, noisy.size, settings, checkpointer.seconds(), init)
    save_network(folder / NETWORK_FILE, fit.net, job.stem, fit.iteration)
    plots.psnr_curve(rows, settings.output_path / f"{job.stem}_psnr.png", job.stem)
    image_io.write_text(folder / SUMMARY_FILE, json.dumps(summary, indent=2))
    state_path.unlink(missing_ok=True)
    return summary


def summary_csv(output_path: Path) -> str:
    """summary.csv text built from every finished image's summary.json under `output_path`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for path in sorted(output_path.glob(f"*/{SUMMARY_FILE}")):
        summary = json.loads(path.read_text())
        writer.writerow({key: "" if value is None else value for key, value in summary.items()})
    return buffer.getvalue()


def run_record(settings: RunSettings, noisy_folder: Path, clean_folder: Path | None) -> dict:
    """What args.json holds: every setting that shapes the results, plus versions."""
    return {
        "dataset_real_path": str(noisy_folder),
        "dataset_mean_path": None if clean_folder is None else str(clean_folder),
        "network": settings.network.to_dict(),
        "fit": dataclasses.asdict(settings.fit),
        "seed": settings.seed,
        "init_from": settings.init_from,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "command": sys.argv,
    }


RESULT_KEYS = ("network", "fit", "seed", "init_from")


def check_compatible(output_path: Path, record: dict) -> None:
    """Refuse to mix runs: an existing args.json must have the same result-shaping settings."""
    path = output_path / "args.json"
    if not path.exists():
        return
    try:
        existing = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{path}: unreadable; remove it or use another --output_path") from None
    changed = [key for key in RESULT_KEYS if existing.get(key) != record[key]]
    if changed:
        raise ValueError(f"{output_path} holds a run with other settings ({', '.join(changed)}); use another --output_path")


def reconstruct_folder(jobs: list[ImageJob], settings: RunSettings, record: dict) -> list[tuple[Path, str]]:
    """Reconstruct every job not yet finished; returns (file, reason) for each failed image."""
    output = settings.output_path
    check_compatible(output, record)
    output.mkdir(parents=True, exist_ok=True)
    image_io.write_text(output / "args.json", json.dumps(record, indent=2))
    failures: list[tuple[Path, str]] = []
    previous: Path | None = None
    folder_bar = tqdm(jobs, desc="images", position=0, disable=settings.quiet, dynamic_ncols=True)
    for job in folder_bar:
        finished = output / job.stem / SUMMARY_FILE
        if not finished.exists():
            try:
                summary = reconstruct_image(job, settings, previous)
            except ValueError as error:
                failures.append((job.noisy, str(error)))
                LOGGER.error("%s", error)
                continue
            if not settings.quiet:
                tqdm.write(describe(summary))
            image_io.write_text(output / "summary.csv", summary_csv(output))
        previous = output / job.stem / NETWORK_FILE
    image_io.write_text(output / "summary.csv", summary_csv(output))
    return failures


def describe(summary: dict) -> str:
    """One line per finished image."""
    text = f"{summary['image']}: {summary['iterations']} iterations in {summary['seconds']:.1f} s"
    if summary["best_psnr"] is not None:
        text += f", best {summary['best_psnr']:.2f} dB at iteration {summary['best_iteration']}"
    return text
