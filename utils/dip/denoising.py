"""One-command denoising (denoise.py): inputs -> DIP with online stopping -> one image per input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from utils import image_io, ownership, run_output, selection
from utils.dip import planning, reconstruction, run_guard
from utils.method import FitSettings
from utils.run_output import SUMMARY_FILE, snapshot_path

LOGGER = logging.getLogger(__name__)
WORK_FOLDER = "snapshots"
SAVE_ITER = FitSettings.save_iter
# The WMV window tuned on the PolyU runs (selection.DEFAULT_WMV), in iterations; the patience
# defaults to auto (selection.scaled_patience).
WMV_WINDOW = selection.DEFAULT_WMV.window * SAVE_ITER


def collect_inputs(inputs: list[Path], output: Path) -> list[planning.ImageJob]:
    """Image files named directly or found in folders, as blind jobs; ValueError when an input is
    missing, two inputs share a name, or an output would overwrite an input."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = image_io.list_images(item)
            if not found:
                raise ValueError(f"{item}: no images (png, jpg, jpeg, bmp, tif) in this folder")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise ValueError(f"{item}: no such file or folder")
    names: dict[str, Path] = {}
    for path in paths:
        if path.stem in names:
            raise ValueError(f"{path}: another input, {names[path.stem]}, has the same name")
        names[path.stem] = path
        if (output / path.name).resolve() == path.resolve():
            raise ValueError(
                f"{path}: the output folder is this image's folder; refusing to overwrite the input"
            )
    return [planning.ImageJob(path, None) for path in paths]


def picked_iteration(summary: dict, rows_folder: Path) -> int:
    """The stopping rule's pick, or the last snapshot when no rule ran."""
    if summary["picked_iteration"] is not None:
        return int(summary["picked_iteration"])
    return max(int(path.stem) for path in rows_folder.glob("[0-9]*.png"))


def write_result(job: planning.ImageJob, work: Path, output: Path) -> None:
    """Copy the image's picked snapshot to `output/<input name>` in the input's format."""
    folder = work / job.stem
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    snapshot = image_io.read_image(snapshot_path(folder, picked_iteration(summary, folder)))
    data = image_io.encode_image(
        image_io.quantize(snapshot.pixels, snapshot.bit_depth), job.noisy.suffix
    )
    target = output / job.noisy.name
    if not run_output.is_inside(target, output):
        raise ValueError(f"{job.noisy}: its result {target} would lie outside {output}")
    ownership.claim(output, [target.name])
    image_io.write_atomic(target, data)


def denoise(
    jobs: list[planning.ImageJob],
    settings: planning.RunSettings,
    output: Path,
    keep_snapshots: bool,
) -> list[tuple[Path, str]]:
    """Fit every job in `settings.output_path`, write the picks to `output`; returns the failures.

    Without `keep_snapshots` the work folder's files are deleted afterwards, and only those
    (`run_guard.remove_run`): a folder there that is not a run folder is refused up front.
    An input whose name cannot name a work folder (stem '.', '..' or hidden) fails in one line;
    an existing `output/<input name>` that denoise.py did not write is refused up front, and each
    result is recorded as ours just before it is written (`utils.ownership`)."""
    jobs, refused = planning.refuse_unsafe_names(jobs, settings.output_path)
    ownership.check(output, [job.noisy.name for job in jobs])
    with reconstruction.start_folder(
        settings.output_path, reconstruction.run_record(settings, output, None), jobs
    ):
        failures = reconstruction.reconstruct_folder(jobs, settings)
        failed = {path for path, _ in failures}
        for job in jobs:
            if job.noisy in failed:
                continue
            try:
                write_result(job, settings.output_path, output)
            except OSError as error:
                message = f"{job.noisy}: cannot write {error.filename} ({error.strerror})"
                LOGGER.error("%s", message)
                failures.append((job.noisy, message))
            except ValueError as error:
                LOGGER.error("%s", error)
                failures.append((job.noisy, str(error)))
    if not keep_snapshots:
        failed = {path for path, _ in failures}
        done = [
            job.stem
            for job in jobs
            if job.noisy not in failed or not run_guard.has_results(settings.output_path / job.stem)
        ]
        run_guard.remove_run(settings.output_path, done)
    return refused + failures
