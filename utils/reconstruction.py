"""Step 1 of the pipeline: reconstruct every noisy image of a folder with DIP.

Output layout under `output_path`:
    args.json                  settings and versions of the run
    summary.csv                one row per finished image (rebuilt from the per-image files)
    <stem>_psnr.png            PSNR curve of each image
    <stem>/00020.png ...       snapshots of the averaged output, every save_iter iterations
    <stem>/metrics.csv         one row per snapshot (see run_output.METRICS_COLUMNS)
    <stem>/net.pt              the final network, with the settings to rebuild it
    <stem>/summary.json        written last: marks the image as finished
    <stem>/state.pt            resumable state of an unfinished image (removed when done)

Images of one padded size are fitted `batch_images` at a time, each with its own network
(see `models.skip.SkipNet(groups=K)`); results per image do not depend on the grouping.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import platform
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.skip import SkipConfig, SkipNet, stack_states
from utils import image_io, pairing, plots
from utils.dip import DipFit, FitSettings, Padding, build_network, pad_image, run_fit, to_tensor
from utils.early_stopping import EarlyStopSettings, make_stoppers
from utils.run_output import SUMMARY_FILE, snapshot_path
from utils.snapshots import (
    STATE_FILE,
    Checkpointer,
    Progress,
    SnapshotTarget,
    SnapshotWriter,
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
RESULT_KEYS = ("network", "fit", "seed", "init_from", "early_stop")


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


def plan_jobs(noisy_folder: Path, clean_folder: Path | None) -> list[ImageJob]:
    """Noisy images sorted by name, each paired with its clean image (rule: `utils.pairing`)."""
    noisy_paths = image_io.list_images(noisy_folder)
    stems = [path.stem for path in noisy_paths]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise ValueError(f"{noisy_folder}: several images share a name: {duplicates}")
    if clean_folder is None:
        return [ImageJob(path, None) for path in noisy_paths]
    clean_paths = image_io.list_images(clean_folder)
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
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as error:
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


def prepare(job: ImageJob, multiple: int) -> PreparedImage:
    """Decode the noisy image and its reference and pad; ValueError naming the file on any problem."""
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
    """Per-image summary: best snapshot by PSNR of the averaged output where a reference exists,
    and the early-stopping rule's stop and pick where one ran."""
    rows = target.rows
    with_reference = [row for row in rows if row["psnr_avg"] is not None]
    best = max(with_reference, key=lambda row: row["psnr_avg"]) if with_reference else None
    picked = target.stopper.pick_iteration if target.stopper is not None else None
    picked_psnr = next((row["psnr_avg"] for row in rows if row["iteration"] == picked), None)
    return {
        "image": image.job.stem,
        "height": image.noisy.size[0],
        "width": image.noisy.size[1],
        "reference": image.job.clean is not None,
        "init": init,
        "iterations": iterations,
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


def load_resume_state(folder: Path, device: torch.device) -> dict | None:
    """The image's saved fit state, or None when it has none."""
    path = folder / STATE_FILE
    return torch.load(path, map_location=device, weights_only=False) if path.exists() else None


def fit_group(
    images: list[PreparedImage], settings: RunSettings, previous: Path | None = None
) -> list[dict]:
    """Fit K same-size images together (resuming from their state files); returns their summaries."""
    device = settings.device
    folders = [settings.output_path / image.job.stem for image in images]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    starts = [initial_state(image, settings, previous) for image in images]
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
    stoppers = make_stoppers(settings.early_stop, len(images)) or [None] * len(images)
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
        run_fit(fit, [writer, checkpointer, Progress(bar)])
    finally:
        writer.close()
        bar.close()
    summaries = []
    for index, (image, folder, target) in enumerate(zip(images, folders, targets)):
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
            target.rows, settings.output_path / f"{image.job.stem}_psnr.png", image.job.stem
        )
        image_io.write_text(folder / SUMMARY_FILE, json.dumps(summary, indent=2))
        (folder / STATE_FILE).unlink(missing_ok=True)
        summaries.append(summary)
    return summaries


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
        return fit_group(images, settings, previous), []
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


def make_groups(images: list[PreparedImage], settings: RunSettings) -> list[list[PreparedImage]]:
    """Groups of at most batch_images images of one padded size and one resume iteration, in name order."""
    by_key: dict[tuple, list[PreparedImage]] = {}
    for image in images:
        state_path = settings.output_path / image.job.stem / STATE_FILE
        iteration = (
            torch.load(state_path, map_location="cpu", weights_only=False, mmap=True)["fit"][
                "iteration"
            ]
            if state_path.exists()
            else 0
        )
        by_key.setdefault((image.group_key, iteration), []).append(image)
    groups = []
    for members in by_key.values():
        groups += [
            members[start : start + settings.batch_images]
            for start in range(0, len(members), settings.batch_images)
        ]
    return sorted(groups, key=lambda group: group[0].job.stem)


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
    image_io.write_text(output_path / "summary.csv", summary_csv(output_path))


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


def check_compatible(output_path: Path, record: dict) -> None:
    """Refuse to mix runs: an existing args.json must have the same result-shaping settings."""
    path = output_path / "args.json"
    if not path.exists():
        return
    try:
        existing = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{path}: unreadable; remove it or use another --output_path") from None
    existing = with_defaults(existing)
    changed = [key for key in RESULT_KEYS if existing.get(key) != record[key]]
    if changed:
        raise ValueError(
            f"{output_path} holds a run with other settings ({', '.join(changed)}); use another --output_path"
        )


def start_folder(output_path: Path, record: dict) -> None:
    """Check an existing run folder is compatible, then record this run's settings."""
    check_compatible(output_path, record)
    output_path.mkdir(parents=True, exist_ok=True)
    image_io.write_text(output_path / "args.json", json.dumps(record, indent=2))


def prepare_all(
    jobs: list[ImageJob], settings: RunSettings
) -> tuple[list[PreparedImage], list[tuple[Path, str]]]:
    """Decode and check every unfinished image up front; bad ones become (file, reason) failures."""
    prepared, failures = [], []
    for job in jobs:
        if (settings.output_path / job.stem / SUMMARY_FILE).exists():
            continue
        try:
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
            summaries, fit_failures = fit_with_fallback(image, settings, previous)
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
        if not settings.quiet:
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
            failures += report(*fit_with_fallback(group, settings), settings)
            folder_bar.update(len(group))
    write_summary(settings.output_path)
    return failures


def describe(summary: dict) -> str:
    """One line per finished image."""
    text = f"{summary['image']}: {summary['iterations']} iterations in {summary['seconds']:.1f} s"
    if summary["stop_iteration"] is not None:
        text += f", stopped at {summary['stop_iteration']}"
    if summary["picked_iteration"] is not None:
        text += f", picked {summary['picked_iteration']}"
        if summary["picked_psnr"] is not None:
            text += f" ({summary['picked_psnr']:.2f} dB)"
    if summary["best_psnr"] is not None:
        text += f", best {summary['best_psnr']:.2f} dB at iteration {summary['best_iteration']}"
    return text


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
