"""Step 1 over a folder: run the fits of every image, keep the run's books, report the results.

The files a run writes are listed in `utils.run_output`; jobs and groups are planned in
`utils.dip.planning` and fitted in `utils.dip.group_fit`. Images of one padded size are fitted
`batch_images` at a time, each with its own network (see `models.skip.SkipNet(groups=K)`);
results per image do not depend on the grouping.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import logging
import platform
import sys
from pathlib import Path
from typing import IO

import numpy as np
import torch
from tqdm import tqdm

from models.skip import SkipConfig
from utils import image_io
from utils.cluster import Interrupted
from utils.dip import run_guard
from utils.dip.group_fit import fit_claimed, fit_with_fallback
from utils.dip.planning import ImageJob, RunSettings, make_groups, prepare_all
from utils.method import FitSettings
from utils.run_output import (
    DENOISED_FILE,
    NETWORK_FILE,
    NOISY_PSNR,
    STATE_FILE,
    SUMMARY_COLUMNS,
    SUMMARY_FILE,
    SUMMARY_TABLE_FILE,
    curve_path,
    read_metrics,
    snapshot_path,
)

LOGGER = logging.getLogger(__name__)
RESULT_KEYS = ("network", "fit", "seed", "init_from", "early_stop", "precision")


def summary_csv(output_path: Path) -> str:
    """summary.csv text built from every finished image's summary.json under `output_path`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    for path in sorted(output_path.glob(f"*/{SUMMARY_FILE}")):
        summary = json.loads(path.read_text())
        writer.writerow({key: "" if value is None else value for key, value in summary.items()})
    return buffer.getvalue()


def write_summary(output_path: Path) -> None:
    """Rebuild summary.csv under an exclusive lock (`run_guard.SUMMARY_LOCK`): every task writes its
    summary.json before taking the lock, so the last of tasks finishing together lists them all.
    A failure to write it is one line (it is rebuilt by every run)."""
    try:
        with run_guard.open_lock(output_path / run_guard.SUMMARY_LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            image_io.write_text(output_path / SUMMARY_TABLE_FILE, summary_csv(output_path))
    except OSError as error:
        LOGGER.error("%s: cannot write (%s); rerun to rebuild it", error.filename, error.strerror)


def run_record(settings: RunSettings, noisy_folder: Path, clean_folder: Path | None) -> dict:
    """What args.json holds: every setting that shapes the results, plus versions."""
    return {
        "dataset_real_path": str(noisy_folder),
        "dataset_mean_path": None if clean_folder is None else str(clean_folder),
        "network": settings.network.to_dict(),
        "fit": dataclasses.asdict(settings.fit),
        "seed": settings.seed,
        "init_from": settings.init_from,
        "batch_images": settings.batch_images,
        "precision": settings.precision,
        "early_stop": dataclasses.asdict(settings.early_stop)
        | {"model_path": str(settings.early_stop.model_path)},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "command": sys.argv,
    }


def with_defaults(record: dict) -> dict:
    """A run record (args.json) with the fit and network settings added since it was written
    filled in at their defaults, the values those runs had."""
    filled = dict(record)
    for key, defaults in (
        ("fit", dataclasses.asdict(FitSettings())),
        ("network", SkipConfig().to_dict()),
    ):
        if isinstance(record.get(key), dict):
            filled[key] = {**defaults, **record[key]}
    return filled


def start_folder(output_path: Path, record: dict, jobs: list[ImageJob]) -> IO:
    """Refuse a folder that is not ours or holds results of other settings or inputs, then
    record this run's settings; returns the run lock, to keep open while the run writes
    (see `utils.dip.run_guard`)."""
    for job in jobs:
        run_guard.check_input(output_path / job.stem, job.noisy, job.clean)
    check_resume_grouping(output_path, record, jobs)
    return run_guard.open_run(output_path, record, RESULT_KEYS, with_defaults)


def check_resume_grouping(output_path: Path, record: dict, jobs: list[ImageJob]) -> None:
    """ValueError when an interrupted image (one with a state file) would resume with another
    --batch_images than the run that saved it: grouping changes the last digits of a fit."""
    try:
        saved = json.loads((output_path / run_guard.RECORD_FILE).read_text()).get("batch_images")
    except (OSError, ValueError, AttributeError):
        return  # no record, or one that open_run reports
    if saved is None or saved == record["batch_images"]:
        return
    waiting = [job.stem for job in jobs if (output_path / job.stem / STATE_FILE).exists()]
    if waiting:
        raise ValueError(
            f"{output_path}: {len(waiting)} interrupted image(s) ({', '.join(waiting[:3])}) were fitted "
            f"with --batch_images {saved}; resume with --batch_images {saved} so that they end "
            "as an uninterrupted run would"
        )


def reconstruct_chained(jobs: list[ImageJob], settings: RunSettings) -> list[tuple[Path, str]]:
    """`--init_from previous`: one image at a time, each starting from the last finished network."""
    failures = []
    previous = None
    for job in tqdm(jobs, desc="images", position=0, disable=settings.quiet, dynamic_ncols=True):
        folder = settings.output_path / job.stem
        if not (folder / SUMMARY_FILE).exists():
            image, job_failures = prepare_all([job], settings)
            failures += job_failures
            if not image:
                continue
            with run_guard.claim([folder]) as (refusal,):
                if refusal is not None:  # the next images start from this one's network: stop
                    busy = [(job.noisy, f"{job.noisy}: {refusal}")]
                    return failures + report([], busy, settings)
                summaries, fit_failures = (
                    ([], [])
                    if (folder / SUMMARY_FILE).exists()
                    else fit_with_fallback(image, settings, previous)
                )
            failures += report(summaries, fit_failures, settings)
            if fit_failures:
                continue
        previous = folder / NETWORK_FILE
    return failures


def report(
    summaries: list[dict], failures: list[tuple[Path, str]], settings: RunSettings
) -> list[tuple[Path, str]]:
    """Log finished images and failures, refresh summary.csv; returns the failures."""
    for summary in summaries:
        if settings.quiet:
            LOGGER.info("%s", describe(summary))
        else:
            tqdm.write(describe(summary))
    for _, message in failures:
        LOGGER.error("%s", message)
    write_summary(settings.output_path)
    return failures


def reconstruct_folder(jobs: list[ImageJob], settings: RunSettings) -> list[tuple[Path, str]]:
    """Reconstruct every job not yet finished on one device; returns (file, reason) per failed image."""
    if settings.init_from == "previous":
        return reconstruct_chained(jobs, settings)
    images, failures = prepare_all(jobs, settings)
    groups = make_groups(images, settings)
    with tqdm(
        total=len(images), desc="images", position=0, disable=settings.quiet, dynamic_ncols=True
    ) as folder_bar:
        for group in groups:
            if settings.stop_request.requested:
                raise Interrupted(f"stopped by {settings.stop_request.signal_name} between images")
            failures += report(*fit_claimed(group, settings), settings)
            folder_bar.update(len(group))
    write_summary(settings.output_path)
    return failures


def describe(summary: dict) -> str:
    """One line per finished image."""
    text = f"{summary['image']}: {summary['iterations']} iterations in {summary['seconds']:.1f} s"
    if summary.get(NOISY_PSNR) is not None:
        text += f", noisy input {summary[NOISY_PSNR]:.2f} dB"
    if summary["stop_iteration"] is not None:
        text += f", stopped at {summary['stop_iteration']}"
    if summary["picked_iteration"] is not None:
        text += f", picked {summary['picked_iteration']}"
        if summary["picked_psnr"] is not None:
            text += f" ({summary['picked_psnr']:.2f} dB)"
    if summary["best_psnr"] is not None:
        text += f", best {summary['best_psnr']:.2f} dB at iteration {summary['best_iteration']}"
    return text


def output_image(folder: Path, summary: dict) -> Path:
    """The image's result: the early-stopping pick (denoised.png), else its last snapshot (the
    folder itself when its metrics.csv cannot be read)."""
    if summary["picked_iteration"] is not None:
        return folder / DENOISED_FILE
    try:
        return snapshot_path(folder, int(read_metrics(folder).iteration[-1]))
    except ValueError:
        return folder


def gains(summary: dict) -> str:
    """'noisy input 24.07 dB, picked 27.10 dB (+3.03), best 27.50 dB (+3.43)', or 'no reference'."""
    noisy = summary.get(NOISY_PSNR)
    if noisy is None:
        return "no reference"
    text = f"noisy input {noisy:.2f} dB"
    for label in ("picked", "best"):
        if summary[f"{label}_psnr"] is not None:
            value = summary[f"{label}_psnr"]
            text += f", {label} {value:.2f} dB ({value - noisy:+.2f})"
    return text


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the values, or None when any is missing."""
    return None if None in values else float(np.mean(values))


def closing_lines(output_path: Path, stems: list[str]) -> list[str]:
    """End-of-run report of the finished images among `stems`: the noisy input's PSNR beside the
    picked and best PSNR (means, then per image), and where each result and curve figure is."""
    summaries = [
        json.loads(path.read_text())
        for path in (output_path / stem / SUMMARY_FILE for stem in stems)
        if path.exists()
    ]
    referenced = [summary for summary in summaries if summary.get(NOISY_PSNR) is not None]
    lines = []
    if len(referenced) > 1:
        mean = {
            key: mean_or_none([summary[key] for summary in referenced])
            for key in (NOISY_PSNR, "picked_psnr", "best_psnr")
        }
        lines.append(f"mean of {len(referenced)} images with a reference: {gains(mean)}")
    for summary in summaries:
        folder = output_path / summary["image"]
        lines.append(
            f"{summary['image']}: {gains(summary)} -> {output_image(folder, summary)} "
            f"(PSNR curves: {curve_path(output_path, summary['image'])})"
        )
    return lines


def exit_code(failures: list[tuple[Path, str]], total: int) -> int:
    """Log one line naming the failed files (each already reported); 1 if any failed, else 0."""
    if not failures:
        return 0
    LOGGER.error(
        "%d of %d images failed: %s",
        len(failures),
        total,
        ", ".join(image_io.shown(path.name) for path, _ in failures),
    )
    return 1
