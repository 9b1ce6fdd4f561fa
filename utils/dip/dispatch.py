"""Sharing a folder's images among worker processes (one per GPU, or CPU workers).

The parent decodes and checks every image, groups them (same size, `batch_images` at a time)
and puts the groups on a queue; each worker takes the next group when it is free, so a slow
image does not idle the others. Outputs are the same files a single-device run writes.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import queue as queue_module
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from utils import cli, cluster, run_output
from utils.dip import devices, group_fit, planning, reconstruction

if TYPE_CHECKING:
    import multiprocessing.queues

LOGGER = logging.getLogger(__name__)


def worker(
    settings: planning.RunSettings,
    threads: int,
    jobs: multiprocessing.queues.Queue,
    results: multiprocessing.queues.Queue,
) -> None:
    """Worker process: fit groups from `jobs` until a None arrives; put (summaries, failures) on `results`."""
    cli.configure_logging()
    torch.set_num_threads(threads)
    devices.configure_precision(settings.precision, settings.device)
    settings.stop_request.install()
    while (group := jobs.get()) is not None:
        try:
            images = [planning.prepare_for_fit(job, settings) for job in group]
            summaries, failures = group_fit.fit_claimed(images, settings)
        except cluster.Interrupted:
            return
        except Exception as error:  # report, never hang the parent
            summaries, failures = (
                [],
                [(job.noisy, f"{job.noisy}: {type(error).__name__}: {error}") for job in group],
            )
        results.put((summaries, [(str(path), message) for path, message in failures]))


def reconstruct_parallel(
    jobs: list[planning.ImageJob],
    settings: planning.RunSettings,
    worker_devices: list[torch.device],
    threads: int,
) -> list[tuple[Path, str]]:
    """Fit every unfinished job on `worker_devices` (one process each, `threads` torch threads
    each); returns the failures."""
    images, failures = planning.prepare_all(jobs, settings)
    groups = [[image.job for image in group] for group in planning.make_groups(images, settings)]
    context = multiprocessing.get_context("spawn")
    job_queue, results = context.Queue(), context.Queue()
    for group in groups:
        job_queue.put(group)
    processes = []
    for device in worker_devices:
        job_queue.put(None)
        worker_settings = dataclasses.replace(settings, device=device, quiet=True)
        processes.append(
            context.Process(
                target=worker, args=(worker_settings, threads, job_queue, results), daemon=True
            )
        )
    for process in processes:
        process.start()
    received = 0
    with tqdm(total=len(images), desc="images", disable=settings.quiet, dynamic_ncols=True) as bar:
        while received < len(groups):
            if settings.stop_request.requested:
                stop_workers(processes)
                reconstruction.write_summary(settings.output_path)
                raise cluster.Interrupted(
                    f"stopped by {settings.stop_request.signal_name}; the workers saved their state"
                )
            try:
                summaries, group_failures = results.get(timeout=1.0)
            except queue_module.Empty:
                if not any(process.is_alive() for process in processes):
                    LOGGER.error(
                        "all workers stopped with %d image group(s) unfinished",
                        len(groups) - received,
                    )
                    failures += [
                        (job.noisy, "worker stopped")
                        for group in groups
                        for job in group
                        if not (settings.output_path / job.stem / run_output.SUMMARY_FILE).exists()
                    ]
                    break
                continue
            received += 1
            failures += reconstruction.report(
                summaries, [(Path(path), message) for path, message in group_failures], settings
            )
            bar.update(len(summaries) + len(group_failures))
    for process in processes:
        process.join(timeout=10)
    reconstruction.write_summary(settings.output_path)
    return failures


def stop_workers(processes: list, timeout: float = 60.0) -> None:
    """SIGTERM every live worker (each saves its fit state and exits) and wait for them."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=timeout)
