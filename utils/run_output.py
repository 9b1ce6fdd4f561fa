"""The output folder of run_BDN.py (step 1): every file name and schema, their writers and readers.

Layout under the run folder (the contract between step 1 and steps 2 to 4):
    args.json                  settings and versions of the run (RUN_RECORD_FILE)
    summary.csv                one row per finished image, SUMMARY_COLUMNS (rebuilt from the
                               per-image summary.json files)
    <stem>_psnr.png            PSNR curves of each image (curve_path)
    <stem>/00020.png ...       snapshots of the averaged output, every save_iter iterations
                               (snapshot_path)
    <stem>/metrics.csv         one row per snapshot, METRICS_COLUMNS (metrics_csv, read_metrics);
                               reference columns are empty for blind images
    <stem>/net.pt              the final network, with the settings to rebuild it
    <stem>/denoised.png        the early-stopping rule's pick (with --early_stop)
    <stem>/summary.json        written last: marks the image as finished (keys: SUMMARY_COLUMNS)
    <stem>/state.pt            resumable fit state of an unfinished image (removed when done)
    <stem>/input.json          the input files and their SHA-256 (see utils.dip.run_guard)
The locks of the runs writing a folder are run_guard's.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np

from utils.image_io import IMAGE_SUFFIXES

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
RUN_RECORD_FILE = "args.json"
SUMMARY_TABLE_FILE = "summary.csv"
NETWORK_FILE = "net.pt"
DENOISED_FILE = "denoised.png"
STATE_FILE = "state.pt"
INPUT_FILE = "input.json"
METRICS_COLUMNS = (
    "iteration",
    "loss",
    "psnr_noisy",
    "psnr_raw",
    "ssim_raw",
    "psnr_avg",
    "ssim_avg",
)
REFERENCE_COLUMNS = ("psnr_raw", "ssim_raw", "psnr_avg", "ssim_avg")
NOISY_PSNR = "noisy_psnr"  # summary key: PSNR (dB) of the noisy input vs the reference, or null
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


@dataclasses.dataclass(frozen=True)
class ImageMetrics:
    """Per-snapshot metrics of one image; every array has shape (snapshots,).

    ``iteration`` is int64 (counted from 1); the other columns are float64, NaN where empty
    (reference columns of a blind image).
    """

    folder: Path
    iteration: np.ndarray
    loss: np.ndarray
    psnr_noisy: np.ndarray
    psnr_raw: np.ndarray
    ssim_raw: np.ndarray
    psnr_avg: np.ndarray
    ssim_avg: np.ndarray

    @property
    def name(self) -> str:
        """Image stem (the folder name)."""
        return self.folder.name

    @property
    def has_reference(self) -> bool:
        """True when every snapshot has a PSNR against a clean reference."""
        return bool(np.all(np.isfinite(self.psnr_avg)))

    @property
    def true_psnr(self) -> np.ndarray:
        """PSNR (dB) of each saved (averaged) snapshot against the reference, shape (snapshots,)."""
        return self.psnr_avg

    @property
    def snapshot_interval(self) -> int:
        """Iterations between two snapshots (the run's --save_iter): the first saved iteration."""
        return int(self.iteration[0])

    def snapshot_paths(self) -> list[Path]:
        """Snapshot file of every row, in row order."""
        return [snapshot_path(self.folder, int(iteration)) for iteration in self.iteration]


def snapshot_path(image_folder: str | Path, iteration: int) -> Path:
    """Path of the snapshot saved at ``iteration``: ``<folder>/<iteration:05d>.png``."""
    return Path(image_folder) / f"{iteration:05d}.png"


def check_image_stem(path: Path) -> None:
    """ValueError naming `path` when its stem cannot name a folder inside a run folder: '.',
    '..' or any stem starting with a dot (hidden names are the runs' own: locks, temporaries)."""
    if not path.stem or path.stem.startswith(".") or "/" in path.stem:
        raise ValueError(
            f"{path}: a name whose stem is '.', '..' or starts with a dot cannot name an "
            "output folder; rename it"
        )


def image_folder(run_folder: str | Path, stem: str) -> Path:
    """`<run_folder>/<stem>`, checked to lie inside the run folder: ValueError for a stem that
    is not a plain visible name (see `check_image_stem`) or a folder that is a symbolic link."""
    folder = Path(run_folder) / stem
    if not stem or stem.startswith(".") or "/" in stem:
        raise ValueError(f"{folder}: not a plain folder name, would lie outside {run_folder}")
    if folder.is_symlink():
        raise ValueError(
            f"{folder}: a symbolic link; a run writes only inside its own folder, remove the link"
        )
    return folder


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` (resolved, links followed) lies inside `folder`."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def curve_path(run_folder: str | Path, stem: str) -> Path:
    """The image's PSNR-curve figure: ``<run>/<stem>_psnr.png``."""
    return Path(run_folder) / f"{stem}_psnr.png"


def format_value(value: float | None) -> str:
    """CSV cell: '' for a missing value, else a compact float."""
    if value is None:
        return ""
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def metrics_csv(rows: list[dict]) -> str:
    """Rows of METRICS_COLUMNS -> CSV text with header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRICS_COLUMNS)
    for row in rows:
        writer.writerow(
            [row["iteration"]] + [format_value(row[column]) for column in METRICS_COLUMNS[1:]]
        )
    return buffer.getvalue()


def _parse_float(text: str, column: str, where: str, allow_empty: bool) -> float:
    """One metrics.csv cell as float; empty -> NaN where allowed, else ValueError naming it."""
    if text.strip() == "":
        if allow_empty:
            return float("nan")
        raise ValueError(f"{where}: column {column!r} is empty")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} is not a number: {text!r}") from None


def read_metrics(image_folder: str | Path) -> ImageMetrics:
    """Read ``<image_folder>/metrics.csv``; ValueError naming the file when missing or broken."""
    folder = Path(image_folder)
    path = folder / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: not found; {folder} is not a run_BDN image folder")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(cell.strip() for cell in header) != METRICS_COLUMNS:
            raise ValueError(
                f"{path}: header must be {','.join(METRICS_COLUMNS)}, "
                f"got {','.join(header or [])!r}"
            )
        columns: dict[str, list[float]] = {column: [] for column in METRICS_COLUMNS}
        for line_number, cells in enumerate(reader, 2):
            if not cells or all(cell.strip() == "" for cell in cells):
                continue
            where = f"{path}:{line_number}"
            if len(cells) != len(METRICS_COLUMNS):
                raise ValueError(
                    f"{where}: expected {len(METRICS_COLUMNS)} columns, got {len(cells)}"
                )
            for column, cell in zip(METRICS_COLUMNS, cells):
                columns[column].append(
                    _parse_float(cell, column, where, column in REFERENCE_COLUMNS)
                )
    if not columns["iteration"]:
        raise ValueError(f"{path}: has a header but no snapshot rows")
    iterations = np.array(columns["iteration"])
    if np.any(iterations != np.round(iterations)) or np.any(iterations < 1):
        raise ValueError(f"{path}: iterations must be positive integers")
    if np.any(np.diff(iterations) <= 0):
        raise ValueError(f"{path}: iterations must be strictly increasing")
    arrays = {column: np.array(values, dtype=np.float64) for column, values in columns.items()}
    arrays["iteration"] = iterations.astype(np.int64)
    return ImageMetrics(folder=folder, **arrays)


@dataclasses.dataclass(frozen=True)
class RunFolders:
    """Image folders of a run: ``finished`` ones (sorted by name) and ``skipped`` with reasons."""

    finished: list[Path]
    skipped: list[tuple[Path, str]]


def list_image_folders(run_folder: str | Path) -> RunFolders:
    """Finished image folders of a run_BDN output folder, sorted by name.

    A sub-folder without metrics.csv is not a run_BDN image folder; one without summary.json
    is not finished. Both are returned in ``skipped`` with the reason. Raises ValueError when
    ``run_folder`` is missing or holds no finished image folder.
    """
    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        raise ValueError(f"{run_folder}: run folder not found")
    finished: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for folder in sorted(path for path in run_folder.iterdir() if path.is_dir()):
        if not (folder / METRICS_FILE).is_file():
            skipped.append((folder, f"no {METRICS_FILE}: not a run_BDN image folder"))
        elif not (folder / SUMMARY_FILE).is_file():
            skipped.append((folder, f"no {SUMMARY_FILE}: the run of this image did not finish"))
        else:
            finished.append(folder)
    if not finished:
        raise ValueError(
            f"{run_folder}: no finished run_BDN image folders (sub-folders with "
            f"{METRICS_FILE} and {SUMMARY_FILE})"
        )
    return RunFolders(finished=finished, skipped=skipped)


def check_complete(metrics: ImageMetrics) -> None:
    """ValueError naming metrics.csv when it lacks rows that ``summary.json`` says were made.

    Snapshots are taken every ``s`` iterations (``s`` = the first row's iteration), so the rows
    must be s, 2s, ... up to the last snapshot before the run ended: ``stop_iteration`` when an
    early-stopping rule stopped it, else the largest multiple of ``s`` within ``iterations``.
    A summary without ``iterations`` (not written by run_BDN.py) is not checked."""
    path = metrics.folder / METRICS_FILE
    try:
        summary = json.loads((metrics.folder / SUMMARY_FILE).read_text())
        if "iterations" not in summary:
            return
        iterations = int(summary["iterations"])
        stop = summary.get("stop_iteration")
    except (OSError, ValueError, TypeError):
        raise ValueError(f"{metrics.folder / SUMMARY_FILE}: unreadable; rerun step 1") from None
    every = int(metrics.iteration[0])
    last = int(stop) if stop is not None else iterations // every * every
    expected = np.arange(every, last + 1, every)
    if not np.array_equal(metrics.iteration, expected):
        raise ValueError(
            f"{path}: rows end at iteration {metrics.iteration[-1]} but the run made snapshots "
            f"up to {last} every {every}; the file is damaged, rerun step 1 for "
            f"{metrics.folder.name}"
        )


def read_noisy_psnr(image_folder: str | Path) -> float:
    """PSNR (dB) of the image's noisy input against its reference, from ``summary.json``.

    NaN when the image is blind or its run predates the key; ValueError naming a broken file.
    """
    path = Path(image_folder) / SUMMARY_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(NOISY_PSNR)
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path}: not a readable run_BDN summary ({error})") from None
    return float("nan") if value is None else float(value)


def check_snapshots_exist(paths: list[Path]) -> None:
    """Raise ValueError naming the first snapshot file in ``paths`` that does not exist."""
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: snapshot listed in {path.parent / METRICS_FILE} not found")


def noisy_input(run_folder: str | Path, stem: str, noisy_folder: str | Path | None = None) -> Path:
    """The noisy input image of `stem`: in `noisy_folder` when given, else in the folder that the
    run's args.json records (`dataset_real_path`, relative to the working directory as typed).

    ValueError naming the folder when it has no single image of that stem.
    """
    if noisy_folder is None:
        record = Path(run_folder) / RUN_RECORD_FILE
        try:
            noisy_folder = json.loads(record.read_text())["dataset_real_path"]
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"{record}: cannot read the noisy input folder ({error}); give it with --noisy_path"
            ) from None
    folder = Path(noisy_folder)
    matches = sorted(folder.glob(f"{glob_escape(stem)}.*")) if folder.is_dir() else []
    matches = [path for path in matches if path.suffix.lower() in IMAGE_SUFFIXES]
    if len(matches) != 1:
        raise ValueError(
            f"{folder}: no single noisy image named {stem} (found {len(matches)}); "
            "give the noisy input folder with --noisy_path"
        )
    return matches[0]


def glob_escape(text: str) -> str:
    """`text` with glob wildcards escaped."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)
