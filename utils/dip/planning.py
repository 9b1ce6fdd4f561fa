"""Plan the work of a folder run: which images, paired with which references, in which groups.

An `ImageJob` is one noisy image and its clean reference; `prepare` decodes and pads it; images of
one padded size (and one resume iteration) are fitted `batch_images` at a time (`make_groups`).
`RunSettings` are the settings of a run besides the fit's own hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from pathlib import Path

import numpy as np
import torch

from models.skip import SkipConfig
from utils import image_io, pairing, run_output
from utils.cluster import StopRequest
from utils.dip import devices, run_guard
from utils.dip.fitting import Padding, pad_image, padded_side
from utils.dip.snapshots import resume_iteration
from utils.early_stopping import EarlyStopSettings, latest_stop
from utils.method import FitSettings
from utils.run_output import SUMMARY_FILE

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageJob:
    """One noisy image and its clean reference (None: blind)."""

    noisy: Path
    clean: Path | None

    @property
    def stem(self) -> str:
        """The noisy file's name without its suffix: the image's name in the outputs."""
        return self.noisy.stem


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Settings of a folder run besides the fit's own hyper-parameters."""

    output_path: Path
    network: SkipConfig
    fit: FitSettings
    device: torch.device
    seed: int = 0
    init_from: str = "scratch"
    checkpoint_every: int = 500
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
        """1 for a grey image, 3 for RGB."""
        return 1 if self.noisy.pixels.ndim == 2 else 3

    @property
    def hashes(self) -> tuple[str, str | None]:
        """SHA-256 of the noisy and clean bytes that were decoded (None: no reference)."""
        return self.noisy.sha256, None if self.clean is None else self.clean.sha256

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


def refuse_unsafe_names(
    jobs: list[ImageJob], output_path: Path
) -> tuple[list[ImageJob], list[tuple[Path, str]]]:
    """(jobs whose image folder lies inside `output_path`, (file, reason) for the others: a name
    that is not UTF-8, a stem '.', '..' or hidden, or a folder that is a symbolic link); each
    refusal is logged in one line."""
    kept, refused = [], []
    for job in jobs:
        try:
            check_utf8_names(job)
            run_output.check_image_stem(job.noisy)
            run_output.image_folder(output_path, job.stem)
        except ValueError as error:
            refused.append((job.noisy, str(error)))
            LOGGER.error("%s", error)
            continue
        kept.append(job)
    return kept, refused


def shard(jobs: list[ImageJob], num_shards: int, shard_index: int) -> list[ImageJob]:
    """Deterministic share of the (name-sorted) jobs: every num_shards-th from shard_index."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} is not in 0..{num_shards - 1}")
    return jobs[shard_index::num_shards]


def image_seed(seed: int, stem: str) -> int:
    """Per-image seed from the run seed and the image name (independent of order and sharding)."""
    return (seed * 1_000_003 + zlib.crc32(stem.encode("utf-8"))) % 2**31


def check_utf8_names(job: ImageJob) -> None:
    """ValueError naming the noisy image or its reference when its name is not valid UTF-8."""
    for path in (job.noisy, job.clean):
        if path is not None and not valid_utf8(path.name):
            raise ValueError(f"{image_io.shown(path)}: file name is not valid UTF-8; rename it")


def valid_utf8(name: str) -> bool:
    """False for a file name holding bytes that are not UTF-8 (decoded as surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fit_memory_bytes(network: SkipConfig, height: int, width: int) -> int:
    """A low estimate of the memory one fit of a padded `height` x `width` image takes: the
    float32 activations its network keeps for the backward pass, scale by scale, and its
    parameters five times (weights, gradients, two Adam moments, the backtracking copy)."""
    channels, parameters, previous = float(network.input_depth), 0, network.input_depth
    for scale in range(network.num_scales):
        down, up, skip = network.scale_channels(scale)
        channels += (6 * down / 4 + 3 * skip + 6 * up) / 4**scale
        parameters += 9 * (previous * down + down * down + (skip + up) * up) + previous * skip
        previous = down
    return int(4 * height * width * channels + 4 * 5 * parameters)


def check_fit_memory(
    job: ImageJob, size: tuple[int, int], network: SkipConfig, memory: int
) -> None:
    """ValueError naming the image when its fit (at the padded size the network needs) cannot fit
    in `memory` bytes of its device: refused before anything is allocated."""
    height, width = (padded_side(side, network.size_multiple) for side in size)
    needed = fit_memory_bytes(network, height, width)
    if needed > memory:
        raise ValueError(
            f"{job.noisy}: fitting it at {width}x{height} pixels (padded to a multiple of "
            f"{network.size_multiple}, {network.num_scales} scales) needs at least "
            f"{needed / 2**30:.0f} GiB, more than the device's {memory / 2**30:.0f} GiB; lower "
            "--num_scales or --channels, or crop the image"
        )


def prepare(
    job: ImageJob, multiple: int, network: SkipConfig | None = None, memory: int | None = None
) -> PreparedImage:
    """Decode the noisy image and its reference and pad; ValueError naming the file on any problem
    (with `network` and `memory`, a fit that cannot fit in `memory` bytes, before padding)."""
    check_utf8_names(job)
    noisy = image_io.read_image(job.noisy)
    clean = None
    if job.clean is not None:
        clean = image_io.read_image(job.clean)
        if clean.pixels.shape != noisy.pixels.shape:
            raise ValueError(
                f"{job.clean}: reference is {'x'.join(map(str, clean.pixels.shape))}, "
                f"noisy image {job.noisy.name} is {'x'.join(map(str, noisy.pixels.shape))}"
            )
    if network is not None and memory is not None:
        check_fit_memory(job, noisy.size, network, memory)
    try:
        padded, padding = pad_image(noisy.pixels, multiple)
    except ValueError as error:
        raise ValueError(f"{job.noisy}: {error}") from None
    return PreparedImage(job, noisy, clean, padded, padding)


def prepare_for_fit(job: ImageJob, settings: RunSettings) -> PreparedImage:
    """`prepare` with the run's memory check, then refuse (ValueError) pixels other than those
    the image's earlier results in the run folder came from (compared by the decoded bytes)."""
    memory = devices.memory_bytes(settings.device)
    image = prepare(job, settings.network.size_multiple, settings.network, memory)
    run_guard.check_input(settings.output_path / job.stem, job.noisy, job.clean, image.hashes)
    return image


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
            prepared.append(prepare_for_fit(job, settings))
        except ValueError as error:
            failures.append((job.noisy, str(error)))
            LOGGER.error("%s", error)
    return prepared, failures


def for_group(settings: RunSettings, images: list[PreparedImage]) -> RunSettings:
    """`settings` with the fit's length for these images: an auto --num_iter
    (`FitSettings.run_length`) reaches the latest stop of every image of the group."""
    stop = max(latest_stop(settings.early_stop, image.noisy.pixels.shape[:2]) for image in images)
    fit = dataclasses.replace(settings.fit, num_iter=settings.fit.run_length(stop))
    return dataclasses.replace(settings, fit=fit)


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
