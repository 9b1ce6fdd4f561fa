"""Fit a group of same-size images together: start, resume, snapshot, stop and finish each one.

A group of K images is one grouped network (`fitting.grouped_network`); each image still gets its
own snapshots, metrics, network file, summary and state file, so a batched run resumes like any
other. Out of memory, a group is retried in halves.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from models.skip import SkipConfig
from utils import image_io, metrics, plots
from utils.cluster import Interrupted
from utils.dip import networks, run_guard
from utils.dip.fitting import DipFit, grouped_network, run_fit, to_tensor
from utils.dip.planning import PreparedImage, RunSettings, for_group, image_seed
from utils.dip.snapshots import (
    Checkpointer,
    Progress,
    SnapshotTarget,
    SnapshotWriter,
    StopOnRequest,
    load_resume_state,
)
from utils.early_stopping import make_stoppers
from utils.method import replay
from utils.run_output import (
    DENOISED_FILE,
    NETWORK_FILE,
    NOISY_PSNR,
    STATE_FILE,
    SUMMARY_FILE,
    curve_path,
    snapshot_path,
)

LOGGER = logging.getLogger(__name__)


def fit_group(
    images: list[PreparedImage], settings: RunSettings, previous: Path | None = None
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Fit K same-size images together (resuming from their state files); returns the
    summaries of the finished images and (file, reason) for each whose fit diverged."""
    settings = for_group(settings, images)
    folders = [settings.output_path / image.job.stem for image in images]
    starts = [networks.initial_state(image, settings, previous) for image in images]
    for folder, image in zip(folders, images):
        run_guard.write_input(folder, image.job.noisy, image.job.clean, image.hashes)
    config = networks.network_config(settings, images[0].channels)
    fit = start_fit(images, settings, config, [state for state, _ in starts])
    resumed = [load_resume_state(folder, settings.device) for folder in folders]
    if any(state is not None for state in resumed):
        resume_fit(fit, resumed, folders, [state for state, _ in starts])
        LOGGER.info("%s: resuming at iteration %d", images[0].job.stem, fit.iteration)
    targets = snapshot_targets(images, settings, folders, resumed)
    checkpointer = run_group(fit, images, settings, targets, resumed)
    summaries, failures = [], []
    for index, (image, target) in enumerate(zip(images, targets)):
        diverged = first_non_finite_loss(target.rows)
        if diverged is not None:
            message = (
                f"{image.job.noisy}: the fit diverged (loss not finite at iteration {diverged}); "
                "lower --lr and use another output folder"
            )
            failures.append((image.job.noisy, message))
            continue
        summary = summarize(
            image, target, fit.iteration, checkpointer.seconds(index), starts[index][1]
        )
        finish_image(image, target, fit, index, config, settings)
        image_io.write_text(target.folder / SUMMARY_FILE, json.dumps(summary, indent=2))
        (target.folder / STATE_FILE).unlink(missing_ok=True)
        summaries.append(summary)
    return summaries, failures


def start_fit(
    images: list[PreparedImage], settings: RunSettings, config: SkipConfig, states: list[dict]
) -> DipFit:
    """The fit of the images' padded noisy inputs from the networks' start `states`."""
    device = settings.device
    net = grouped_network(config, states, device, settings.precision)
    noisy = torch.cat([to_tensor(image.padded, torch.device("cpu")) for image in images]).to(device)
    seeds = [image_seed(settings.seed, image.job.stem) for image in images]
    return DipFit(net, noisy, settings.fit, seeds, settings.precision, settings.compile_network)


def snapshot_targets(
    images: list[PreparedImage],
    settings: RunSettings,
    folders: list[Path],
    resumed: list[dict | None],
) -> list[SnapshotTarget]:
    """Each image's snapshot target with its stopping rule, the saved rows replayed into it."""
    stoppers = make_stoppers(settings.early_stop, [image.noisy.pixels for image in images]) or [
        None
    ] * len(images)
    targets = [
        SnapshotTarget(
            folder,
            image.padding,
            image.noisy.pixels,
            None if image.clean is None else image.clean.pixels,
            image.noisy.bit_depth,
            [] if state is None else state["rows"],
            stopper,
        )
        for folder, image, state, stopper in zip(folders, images, resumed, stoppers)
    ]
    for target in targets:
        replay_snapshots(target)
    return targets


def run_group(
    fit: DipFit,
    images: list[PreparedImage],
    settings: RunSettings,
    targets: list[SnapshotTarget],
    resumed: list[dict | None],
) -> Checkpointer:
    """Run the fit to its end with the snapshot, checkpoint, progress and signal callbacks;
    returns the checkpointer (the fit times). `Interrupted` after saving on a stop signal."""
    name = (
        images[0].job.stem
        if len(images) == 1
        else f"{len(images)} images {images[0].padded.shape[1]}x{images[0].padded.shape[0]}"
    )
    bar = tqdm(
        total=settings.fit.num_iter,
        initial=fit.iteration,
        desc=name,
        position=1,
        leave=False,
        disable=settings.quiet,
        dynamic_ncols=True,
    )
    writer = SnapshotWriter(
        targets, settings.fit.save_iter, progress_reporter(images, settings, bar)
    )
    checkpointer = Checkpointer(
        writer,
        settings.checkpoint_every,
        [0.0 if state is None else state["elapsed"] for state in resumed],
    )
    try:
        run_fit(fit, [writer, checkpointer, Progress(bar), StopOnRequest(settings.stop_request)])
        if stopped_by_signal(fit, writer, settings):
            checkpointer.save(fit)
            raise Interrupted(
                f"{name}: stopped by {settings.stop_request.signal_name} at iteration "
                f"{fit.iteration} of {settings.fit.num_iter}; state saved"
            )
    finally:
        writer.close()
        bar.close()
    return checkpointer


def finish_image(
    image: PreparedImage,
    target: SnapshotTarget,
    fit: DipFit,
    index: int,
    config: SkipConfig,
    settings: RunSettings,
) -> None:
    """A finished image's files: denoised.png (the rule's pick), net.pt and the PSNR curve."""
    folder = target.folder
    if target.stopper is not None and target.stopper.pick_iteration is not None:
        image_io.write_atomic(
            folder / DENOISED_FILE,
            snapshot_path(folder, target.stopper.pick_iteration).read_bytes(),
        )
    networks.save_network(
        folder / NETWORK_FILE,
        config,
        fit.state_dicts()[index]["net"],
        image.job.stem,
        fit.iteration,
    )
    plots.psnr_curve(target.rows, curve_path(settings.output_path, image.job.stem), image.job.stem)


def resume_fit(fit: DipFit, resumed: list[dict], folders: list[Path], initial: list[dict]) -> None:
    """Load the saved states into `fit`; ValueError naming a state file whose tensors do not
    fit this run's network and image (a foreign or damaged file)."""
    for state, folder, network in zip(resumed, folders, initial):
        if state is None:
            continue
        saved = state["fit"]
        expected = {key: tensor.shape for key, tensor in network.items()}
        shapes = {key: getattr(tensor, "shape", None) for key, tensor in saved["net"].items()}
        average = saved["average"]
        if (
            shapes != expected
            or saved["base_input"].shape[2:] != fit.noisy.shape[2:]
            or (average is not None and average.shape[1:] != fit.noisy.shape[1:])
            or len(saved["last_good"]) != len(fit.parameters)
        ):
            raise ValueError(
                f"{folder / STATE_FILE}: saved for another network or image size; delete it "
                f"to refit {folder.name} from the start"
            )
    try:
        fit.load_state_dicts([state["fit"] for state in resumed])
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError, ValueError) as error:
        names = ", ".join(str(folder / STATE_FILE) for folder in folders)
        raise ValueError(
            f"{names}: a resume state does not load ({type(error).__name__}); delete it to "
            "refit from the start"
        ) from None


def first_non_finite_loss(rows: list[dict]) -> int | None:
    """Iteration of the first snapshot row whose loss is NaN or infinite, or None."""
    return next((row["iteration"] for row in rows if not math.isfinite(row["loss"])), None)


def stopped_by_signal(fit: DipFit, writer: SnapshotWriter, settings: RunSettings) -> bool:
    """Whether the loop ended on a stop signal before its planned end (num_iter, or the snapshot
    after the last rule fired): then it is an interruption, whatever a rule said, and the rerun
    resumes to the end an uninterrupted run has."""
    planned_end = fit.iteration >= settings.fit.num_iter or (
        writer.early_stopping and writer.all_stopped(fit.iteration)
    )
    return settings.stop_request.requested and not planned_end


def replay_snapshots(target: SnapshotTarget) -> None:
    """After a resume, feed the snapshots already saved to the early-stopping rule, in order."""
    if target.stopper is None:
        return
    snapshots = (
        (
            row["iteration"],
            image_io.read_image(snapshot_path(target.folder, row["iteration"])).pixels,
        )
        for row in target.rows
    )
    target.stop_iteration = replay(target.stopper, snapshots)


def summarize(
    image: PreparedImage, target: SnapshotTarget, iterations: int, seconds: float, init: str
) -> dict:
    """Per-image summary: the noisy input's PSNR and the best snapshot by PSNR of the averaged
    output where a reference exists, and the early-stopping rule's stop and pick where one ran."""
    rows = target.rows
    with_reference = [row for row in rows if row["psnr_avg"] is not None]
    best = max(with_reference, key=lambda row: row["psnr_avg"]) if with_reference else None
    picked = target.stopper.pick_iteration if target.stopper is not None else None
    picked_psnr = next((row["psnr_avg"] for row in rows if row["iteration"] == picked), None)
    noisy_psnr = (
        None if image.clean is None else metrics.psnr(image.noisy.pixels, image.clean.pixels)
    )
    return {
        "image": image.job.stem,
        "height": image.noisy.size[0],
        "width": image.noisy.size[1],
        "reference": image.job.clean is not None,
        "init": init,
        "iterations": iterations,
        NOISY_PSNR: None if noisy_psnr is None else round(noisy_psnr, 4),
        "best_iteration": best["iteration"] if best else None,
        "best_psnr": round(best["psnr_avg"], 4) if best else None,
        "best_ssim": round(best["ssim_avg"], 5) if best else None,
        "final_psnr": round(rows[-1]["psnr_avg"], 4)
        if rows and rows[-1]["psnr_avg"] is not None
        else None,
        "stop_iteration": target.stop_iteration,
        "picked_iteration": picked,
        "picked_psnr": None if picked_psnr is None else round(picked_psnr, 4),
        "seconds": round(seconds, 3),
        "iterations_per_second": round(iterations / seconds, 3) if seconds > 0 else None,
    }


def progress_reporter(
    images: list[PreparedImage], settings: RunSettings, bar: tqdm
) -> Callable[[int, dict], None]:
    """Callback for each metrics row: bar postfix, and a log line every show_iter when quiet."""

    def report(index: int, row: dict) -> None:
        """Show metrics row `row` of image `index` (the bar follows image 0)."""
        postfix = {"loss": f"{row['loss']:.2e}"}
        if row["psnr_avg"] is not None:
            postfix["psnr"] = f"{row['psnr_avg']:.2f}"
        if index == 0:
            bar.set_postfix(postfix, refresh=False)
        if settings.quiet and settings.show_iter and row["iteration"] % settings.show_iter == 0:
            details = ", ".join(f"{key} {value}" for key, value in postfix.items())
            LOGGER.info("%s: iteration %d, %s", images[index].job.stem, row["iteration"], details)

    return report


def out_of_memory_message(
    images: list[PreparedImage], settings: RunSettings, error: Exception
) -> str:
    """One line: which image, how much memory was asked for, what to lower."""
    asked = re.search(r"Tried to allocate ([\d.]+ [KMGT]i?B)", str(error))
    height, width = images[0].padded.shape[:2]
    text = f"{images[0].job.noisy}: out of memory on {settings.device} fitting {len(images)} image(s) of {height}x{width}"
    if asked:
        text += f" (tried to allocate {asked.group(1)}"
        if settings.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(settings.device)
            text += f"; {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
        text += ")"
    return text + "; lower --channels or --batch_images, or use a larger device"


def fit_with_fallback(
    images: list[PreparedImage], settings: RunSettings, previous: Path | None = None
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """`fit_group`, splitting the group in halves when it runs out of memory; (summaries, failures)."""
    try:
        return fit_group(images, settings, previous)
    except ValueError as error:
        return [], [(image.job.noisy, f"{image.job.noisy}: {error}") for image in images]
    except OSError as error:
        message = (
            f"cannot write its results ({error.strerror}: {error.filename}); free space or fix "
            "permissions, then rerun the same command to resume"
        )
        return [], [(image.job.noisy, f"{image.job.noisy}: {message}") for image in images]
    except torch.OutOfMemoryError as error:
        if settings.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(images) == 1:
            return [], [(images[0].job.noisy, out_of_memory_message(images, settings, error))]
        LOGGER.warning("out of memory with %d images of one size: retrying in halves", len(images))
        half = len(images) // 2
        first, second = (
            fit_with_fallback(images[:half], settings),
            fit_with_fallback(images[half:], settings),
        )
        return first[0] + second[0], first[1] + second[1]


def fit_claimed(
    images: list[PreparedImage], settings: RunSettings, previous: Path | None = None
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """`fit_with_fallback` on the images no other process is fitting (see `run_guard.claim`);
    an image another process holds fails with a line saying so, one it finished is skipped."""
    folders = [settings.output_path / image.job.stem for image in images]
    with run_guard.claim(folders) as refusals:
        busy = [
            (image.job.noisy, f"{image.job.noisy}: {refusal}")
            for image, refusal in zip(images, refusals)
            if refusal is not None
        ]
        free = [
            image
            for image, folder, refusal in zip(images, folders, refusals)
            if refusal is None and not (folder / SUMMARY_FILE).exists()
        ]
        summaries, failures = fit_with_fallback(free, settings, previous) if free else ([], [])
    return summaries, failures + busy
