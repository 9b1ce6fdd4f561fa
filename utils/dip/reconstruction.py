"""Step 1 of the pipeline: reconstruct every noisy image of a folder with DIP.

Output layout under `output_path`:
    args.json                  settings and versions of the run
    summary.csv                one row per finished image (rebuilt from the per-image files)
    .summary.lock              lock file of the summary.csv rebuild (several tasks, one folder)
    <stem>_psnr.png            PSNR curve of each image
    <stem>/00020.png ...       snapshots of the averaged output, every save_iter iterations
    <stem>/metrics.csv         one row per snapshot (see run_output.METRICS_COLUMNS)
    <stem>/net.pt              the final network, with the settings to rebuild it
    <stem>/summary.json        written last: marks the image as finished
    <stem>/state.pt            resumable state of an unfinished image (removed when done)
    <stem>/input.json          the input files and their SHA-256 (see utils.dip.run_guard)

Images of one padded size are fitted `batch_images` at a time, each with its own network
(see `models.skip.SkipNet(groups=K)`); results per image do not depend on the grouping.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import logging
import math
import platform
import re
import sys
import zlib
from pathlib import Path
from typing import IO

import numpy as np
import torch
from tqdm import tqdm

from models.skip import SkipConfig, SkipNet, stack_states
from utils import image_io, metrics, pairing, plots
from utils.dip import run_guard
from utils.cluster import Interrupted, StopRequest
from utils.dip.fitting import DipFit, FitSettings, Padding, build_network, pad_image, run_fit, to_tensor
from utils.early_stopping import EarlyStopSettings, make_stoppers
from utils.run_output import NOISY_PSNR, SUMMARY_FILE, read_metrics, snapshot_path
from utils.dip.snapshots import (
    STATE_FILE,
    Checkpointer,
    Progress,
    SnapshotTarget,
    SnapshotWriter,
    StopOnRequest,
    save_torch,
)

LOGGER = logging.getLogger(__name__)
NETWORK_FILE = "net.pt"
SUMMARY_COLUMNS = (
    "image",
    "height",
    "width",
    "reference",
    "init",
    "iterations",
    NOISY_PSNR,
    "best_iteration",
    "best_psnr",
    "best_ssim",
    "final_psnr",
    "stop_iteration",
    "picked_iteration",
    "picked_psnr",
    "seconds",
    "iterations_per_second",
)
DENOISED_FILE = "denoised.png"
RESULT_KEYS = ("network", "fit", "seed", "init_from", "early_stop", "precision")


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
    batch_images: int = 1
    precision: str = "fp32"
    compile_network: bool = False
    early_stop: EarlyStopSettings = EarlyStopSettings()
    stop_request: StopRequest = dataclasses.field(default_factory=StopRequest)


@dataclasses.dataclass
class PreparedImage:
    """A decoded, padded image ready to fit; `padded` is HWC/HW float32 of a valid network size."""

    job: ImageJob
    noisy: image_io.Image
    clean: image_io.Image | None
    padded: np.ndarray
    padding: Padding

    @property
    def channels(self) -> int:
        return 1 if self.noisy.pixels.ndim == 2 else 3

    @property
    def group_key(self) -> tuple:
        """Images sharing this key can be fitted together."""
        return self.padded.shape


def check_unique_stems(folder: Path, paths: list[Path]) -> None:
    """ValueError naming the images of `folder` that share a stem (which one is meant?)."""
    stems = [path.stem for path in paths]
    duplicates = sorted(path.name for path in paths if stems.count(path.stem) > 1)
    if duplicates:
        raise ValueError(
            f"{folder}: several images share a name: {duplicates}; keep one of each, or rename"
        )


def plan_jobs(noisy_folder: Path, clean_folder: Path | None) -> list[ImageJob]:
    """Noisy images sorted by name, each paired with its clean image (rule: `utils.pairing`)."""
    noisy_paths = image_io.list_images(noisy_folder)
    check_unique_stems(noisy_folder, noisy_paths)
    if clean_folder is None:
        return [ImageJob(path, None) for path in noisy_paths]
    clean_paths = image_io.list_images(clean_folder)
    check_unique_stems(clean_folder, clean_paths)
    references = pairing.pair_references(noisy_paths, clean_paths)
    report = pairing.unpaired_report(clean_folder, noisy_paths, clean_paths, references)
    if report:
        LOGGER.warning("%s", report)
    return [ImageJob(path, reference) for path, reference in zip(noisy_paths, references)]


def shard(jobs: list[ImageJob], num_shards: int, shard_index: int) -> list[ImageJob]:
    """Deterministic share of the (name-sorted) jobs: every num_shards-th from shard_index."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} is not in 0..{num_shards - 1}")
    return jobs[shard_index::num_shards]


def image_seed(seed: int, stem: str) -> int:
    """Per-image seed from the run seed and the image name (independent of order and sharding)."""
    return (seed * 1_000_003 + zlib.crc32(stem.encode("utf-8"))) % 2**31


def load_network(path: Path, device: torch.device) -> SkipNet:
    """Rebuild a network saved by `save_network`; ValueError naming the file if unusable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = SkipNet(SkipConfig.from_dict(saved["config"]))
        net.load_state_dict(saved["state_dict"])
    except Exception as error:  # noqa: BLE001 (unpickling a foreign file can raise anything)
        raise ValueError(
            f"{path}: not a usable network file ({type(error).__name__}: {error})"
        ) from None
    return net.to(device)


def save_network(path: Path, config: SkipConfig, state: dict, source: str, iterations: int) -> None:
    """Save one network's state with everything needed to rebuild it."""
    state = {key: value.detach().cpu() for key, value in state.items()}
    save_torch(
        path,
        {
            "config": config.to_dict(),
            "state_dict": state,
            "source": source,
            "iterations": iterations,
        },
    )


def valid_utf8(name: str) -> bool:
    """False for a file name holding bytes that are not UTF-8 (decoded as surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def prepare(job: ImageJob, multiple: int) -> PreparedImage:
    """Decode the noisy image and its reference and pad; ValueError naming the file on any problem."""
    for path in (job.noisy, job.clean):
        if path is not None and not valid_utf8(path.name):
            raise ValueError(f"{path}: file name is not valid UTF-8; rename it")
    noisy = image_io.read_image(job.noisy)
    clean = None
    if job.clean is not None:
        clean = image_io.read_image(job.clean)
        if clean.pixels.shape != noisy.pixels.shape:
            raise ValueError(
                f"{job.clean}: reference is {'x'.join(map(str, clean.pixels.shape))}, "
                f"noisy image {job.noisy.name} is {'x'.join(map(str, noisy.pixels.shape))}"
            )
    try:
        padded, padding = pad_image(noisy.pixels, multiple)
    except ValueError as error:
        raise ValueError(f"{job.noisy}: {error}") from None
    return PreparedImage(job, noisy, clean, padded, padding)


def network_config(settings: RunSettings, channels: int) -> SkipConfig:
    """The run's network for an image of `channels` channels (also its input depth when the
    noisy image is the input)."""
    if settings.fit.input_kind == "noisy_image":
        return dataclasses.replace(settings.network, output_channels=channels, input_depth=channels)
    return dataclasses.replace(settings.network, output_channels=channels)


def initial_state(
    image: PreparedImage, settings: RunSettings, previous: Path | None
) -> tuple[dict, str]:
    """(network state the image's fit starts from, init label): fresh or transferred."""
    config = network_config(settings, image.channels)
    source = None
    if settings.init_from == "previous":
        source = previous
    elif settings.init_from != "scratch":
        source = Path(settings.init_from)
    if source is None:
        net = build_network(config, image_seed(settings.seed, image.job.stem), torch.device("cpu"))
        return net.state_dict(), "scratch"
    transferred = load_network(source, torch.device("cpu"))
    if transferred.config != config:
        raise ValueError(
            f"{source}: network settings {transferred.config.to_dict()} do not fit "
            f"{image.job.noisy.name} with this run's settings {config.to_dict()}"
        )
    return transferred.state_dict(), settings.init_from


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


def load_resume_state(folder: Path, device: torch.device, mmap: bool = False) -> dict | None:
    """The image's saved fit state, or None when it has none; ValueError when it is damaged."""
    path = folder / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False, mmap=mmap)
        state["fit"]["iteration"]
    except Exception as error:  # noqa: BLE001 (unpickling a damaged file can raise anything)
        raise ValueError(
            f"{path}: damaged resume state ({type(error).__name__}); delete it to refit "
            f"{folder.name} from the start"
        ) from None
    return state


def fit_group(
    images: list[PreparedImage], settings: RunSettings, previous: Path | None = None
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Fit K same-size images together (resuming from their state files); returns the
    summaries of the finished images and (file, reason) for each whose fit diverged."""
    device = settings.device
    folders = [settings.output_path / image.job.stem for image in images]
    starts = [initial_state(image, settings, previous) for image in images]
    for folder, image in zip(folders, images):
        run_guard.write_input(folder, image.job.noisy, image.job.clean)
    config = network_config(settings, images[0].channels)
    net = SkipNet(config, groups=len(images))
    net.load_state_dict(stack_states([state for state, _ in starts]))
    noisy = torch.cat([to_tensor(image.padded, torch.device("cpu")) for image in images]).to(device)
    seeds = [image_seed(settings.seed, image.job.stem) for image in images]
    net = net.to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    fit = DipFit(net, noisy, settings.fit, seeds, settings.precision, settings.compile_network)
    resumed = [load_resume_state(folder, device) for folder in folders]
    if any(state is not None for state in resumed):
        fit.load_state_dicts([state["fit"] for state in resumed])
        LOGGER.info("%s: resuming at iteration %d", images[0].job.stem, fit.iteration)
    stoppers = make_stoppers(
        settings.early_stop, [image.noisy.pixels for image in images]
    ) or [None] * len(images)
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
    summaries, failures = [], []
    for index, (image, folder, target) in enumerate(zip(images, folders, targets)):
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
        if target.stopper is not None and target.stopper.pick_iteration is not None:
            image_io.write_atomic(
                folder / DENOISED_FILE,
                snapshot_path(folder, target.stopper.pick_iteration).read_bytes(),
            )
        save_network(
            folder / NETWORK_FILE,
            config,
            fit.state_dicts()[index]["net"],
            image.job.stem,
            fit.iteration,
        )
        plots.psnr_curve(
            target.rows, curve_path(settings.output_path, image.job.stem), image.job.stem
        )
        image_io.write_text(folder / SUMMARY_FILE, json.dumps(summary, indent=2))
        (folder / STATE_FILE).unlink(missing_ok=True)
        summaries.append(summary)
    return summaries, failures


def first_non_finite_loss(rows: list[dict]) -> int | None:
    """Iteration of the first snapshot row whose loss is NaN or infinite, or None."""
    return next((row["iteration"] for row in rows if not math.isfinite(row["loss"])), None)


def stopped_by_signal(fit: DipFit, writer: SnapshotWriter, settings: RunSettings) -> bool:
    """Whether the loop ended on a stop signal with work left (not at num_iter or an early stop)."""
    early_stopped = writer.early_stopping and writer.all_stopped()
    return (
        settings.stop_request.requested
        and fit.iteration < settings.fit.num_iter
        and not early_stopped
    )


def replay_snapshots(target: SnapshotTarget) -> None:
    """After a resume, feed the snapshots already saved to the early-stopping rule, in order."""
    if target.stopper is None:
        return
    for row in target.rows:
        target.stopper.push(
            row["iteration"],
            image_io.read_image(snapshot_path(target.folder, row["iteration"])).pixels,
        )
        if target.stopper.fired:
            target.stop_iteration = row["iteration"]
            return


def progress_reporter(images: list[PreparedImage], settings: RunSettings, bar):
    """Callback for each metrics row: bar postfix, and a log line every show_iter when quiet."""

    def report(index: int, row: dict) -> None:
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
    with run_guard.claim(folders) as claimed:
        busy = [
            (image.job.noisy, run_guard.busy_message(image.job.noisy, folder))
            for image, folder, got in zip(images, folders, claimed)
            if not got
        ]
        free = [
            image
            for image, folder, got in zip(images, folders, claimed)
            if got and not (folder / SUMMARY_FILE).exists()
        ]
        summaries, failures = fit_with_fallback(free, settings, previous) if free else ([], [])
    return summaries, failures + busy


def make_groups(images: list[PreparedImage], settings: RunSettings) -> list[list[PreparedImage]]:
    """Groups of at most batch_images images of one padded size and one resume iteration, in name order."""
    by_key: dict[tuple, list[PreparedImage]] = {}
    for image in images:
        iteration = resume_iteration(settings.output_path / image.job.stem)
        by_key.setdefault((image.group_key, iteration), []).append(image)
    groups = []
    for members in by_key.values():
        groups += [
            members[start : start + settings.batch_images]
            for start in range(0, len(members), settings.batch_images)
        ]
    return sorted(groups, key=lambda group: group[0].job.stem)


def resume_iteration(folder: Path) -> int:
    """Iteration the image's saved state resumes from (0 without one); ValueError if damaged."""
    state = load_resume_state(folder, torch.device("cpu"), mmap=True)
    return 0 if state is None else int(state["fit"]["iteration"])


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
        with open(output_path / run_guard.SUMMARY_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            image_io.write_text(output_path / "summary.csv", summary_csv(output_path))
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
    return run_guard.open_run(output_path, record, RESULT_KEYS, with_defaults)


def prepare_all(
    jobs: list[ImageJob], settings: RunSettings
) -> tuple[list[PreparedImage], list[tuple[Path, str]]]:
    """Decode and check every unfinished image up front; bad ones become (file, reason) failures."""
    prepared, failures = [], []
    for job in jobs:
        if (settings.output_path / job.stem / SUMMARY_FILE).exists():
            continue
        try:
            resume_iteration(settings.output_path / job.stem)
            prepared.append(prepare(job, settings.network.size_multiple))
        except ValueError as error:
            failures.append((job.noisy, str(error)))
            LOGGER.error("%s", error)
    return prepared, failures


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
            with run_guard.claim([folder]) as (claimed,):
                if not claimed:  # the next images start from this one's network: stop here
                    busy = [(job.noisy, run_guard.busy_message(job.noisy, folder))]
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


def curve_path(output_path: Path, stem: str) -> Path:
    """The image's PSNR-curve figure."""
    return output_path / f"{stem}_psnr.png"


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
        ", ".join(path.name for path, _ in failures),
    )
    return 1
