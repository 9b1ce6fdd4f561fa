"""Helpers shared by the experiment scripts: run_BDN.py outputs (read with the core's
`utils.run_output`), noisy/clean pairs, small statistics, tables.

No torch or keras, so the report scripts do not depend on them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils import image_io, run_output, selection

REPO = Path(__file__).resolve().parents[1]
REPRODUCTION = REPO / "docs" / "REPRODUCTION.md"  # the document whose marked blocks studies rewrite
# The experiments' working folders (git-ignored): flag name -> (default, what it holds)
FOLDERS = {
    "crops": ("devdata/crops", "crops of prepare_data.py, <dataset>/{real,mean}"),
    "runs": ("devdata/runs", "run_BDN.py output folders"),
    "selection": ("devdata/selection", "test_BIQAN.py outputs, <run>/<model>/<image>_scores.csv"),
    "tables": ("devdata/tables", "tables, CSVs and caches"),
}


def read_metrics(image_dir: Path) -> dict[str, np.ndarray] | None:
    """`<image_dir>/metrics.csv` as arrays by column (NaN where empty, `run_output.read_metrics`),
    or None when it is absent or unreadable."""
    try:
        metrics = run_output.read_metrics(image_dir)
    except ValueError:
        return None
    return {column: getattr(metrics, column) for column in run_output.METRICS_COLUMNS}


def run_step(command: list[str], log: Path | None = None) -> int:
    """Run one step of a study, echoing its command line (its output to `log` if given, else to
    this console); a failure is echoed with its exit code, which is returned."""
    print(" ".join(command), flush=True)
    if log is None:
        code = subprocess.call(command)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle:
            code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        print(f"exit code {code}: {command[1]}", flush=True)
    return code


@dataclasses.dataclass(frozen=True)
class BiqanTraining:
    """One train_BIQAN.py run of a study: MobileNetV2 on `labels` (generator_dataset.py's) of
    the snapshots under `image_set`; checkpoints to `checkpoint`, validation report to `report`.
    `weights`: a converted ImageNet backbone file or "none"; `side`: the input side (32k + 1
    keeps the converted ImageNet features exact); `alpha`: the width."""

    image_set: Path
    labels: Path
    checkpoint: Path
    report: Path
    mode: str
    side: int
    weights: str
    epochs: int
    early_stopping_patience: int
    alpha: float = 1.0
    seed: int = 0
    gpu_id: str = "cpu"

    def command(self) -> list[str]:
        """train_BIQAN.py's command line, one worker."""
        flags = {
            "--dataset_image_path": self.image_set,
            "--dataset_file_path": self.labels,
            "--output_checkpoint": self.checkpoint,
            "--output_path": self.report,
            "--classification_model": "mobilenet_v2",
            "--weights": self.weights,
            "--alpha": self.alpha,
            "--input_mode": self.mode,
            "--image_size": self.side,
            "--epochs": self.epochs,
            "--early_stopping_patience": self.early_stopping_patience,
            "--seed": self.seed,
            "--workers": 1,
            "--gpu_id": self.gpu_id,
        }
        return script_command("train_BIQAN.py", flags)


def script_command(script: str, flags: dict[str, object]) -> list[str]:
    """The command line running the repository's `script` with this Python and each flag
    followed by its value as text."""
    command = [sys.executable, str(REPO / script)]
    for flag, value in flags.items():
        command += [flag, str(value)]
    return command


# generator_dataset.py's flags for each kind of labels: absolute (the paper's: PSNR over a fixed
# range) or relative (each image's own PSNR range spread over the scores)
LABEL_FLAGS = {"absolute": (), "relative": ("--is_use_fix_minmax", "false")}


def label_command(image_set: Path, labels: Path, kind: str = "absolute") -> list[str]:
    """generator_dataset.py's command line writing the `kind` labels of `image_set` to `labels`."""
    flags = {"--dataset_path": image_set, "--output_path": labels}
    return script_command("generator_dataset.py", flags) + list(LABEL_FLAGS[kind])


def add_imagenet_flag(parser: argparse.ArgumentParser) -> None:
    """--imagenet_weights: the converted ImageNet MobileNetV2 backbone of the BIQAN studies."""
    parser.add_argument(
        "--imagenet_weights",
        default="devdata/weights/mobilenet_v2_imagenet_backbone.weights.h5",
        help="converted ImageNet backbone (tools/convert_mobilenet_v2.py)",
    )


def finished(image_dir: Path) -> bool:
    """run_BDN.py marks a finished image with `summary.json`."""
    return (Path(image_dir) / run_output.SUMMARY_FILE).is_file()


def pairs(data: Path, dataset: str, every: int = 1) -> list[tuple[str, Path, Path]]:
    """(stem, noisy, clean) of `<data>/<dataset>/{real,mean}` paired by stem, sorted by name,
    every `every`-th pair; [] when the dataset's folders are absent."""
    real, mean = Path(data) / dataset / "real", Path(data) / dataset / "mean"
    if not (real.is_dir() and mean.is_dir()):
        return []
    means = {path.stem: path for path in image_io.list_images(mean)}
    reals = [path for path in image_io.list_images(real) if path.stem in means]
    return [(path.stem, path, means[path.stem]) for path in reals[::every]]


def run_images(run_dir: Path) -> list[str]:
    """Stems of the finished images of a run_BDN.py output folder, sorted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.is_dir() and finished(p))


def read_args(run_dir: Path) -> dict:
    """The run's recorded arguments (`run_output.RUN_RECORD_FILE`), {} when absent."""
    path = Path(run_dir) / run_output.RUN_RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def first_reaching(iterations: np.ndarray, values: np.ndarray, target: float) -> float:
    """First iteration whose value is >= target, or NaN if never reached."""
    hits = np.flatnonzero(values >= target)
    return float(iterations[hits[0]]) if hits.size else math.nan


def tune_fixed(runs: Sequence[Any]) -> int:
    """The iteration with the best mean PSNR over `runs` (objects with `iteration` and `psnr`
    arrays (N,), all saved at the same iterations): the fixed stop tuned on them."""
    iterations = runs[0].iteration
    return int(iterations[int(np.argmax(np.mean([run.psnr for run in runs], axis=0)))])


def count_of(count: int, noun: str) -> str:
    """'1 run', '2 runs': `count` and `noun`, in the plural unless `count` is 1."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def mean_std(values: Iterable[float | None], digits: int = 2) -> str:
    """'mean ± std (n)' over the finite values, '-' when there are none."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if values.size == 0:
        return "-"
    if values.size == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f} (n={values.size})"


def fmt(value: float | np.number | None, digits: int = 2) -> str:
    """A table cell: an integer as is, a float with `digits` decimals, '-' for None, NaN, inf."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: strings as they are, other cells through `fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += [
        "| " + " | ".join(fmt(cell) if not isinstance(cell, str) else cell for cell in row) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write `rows` as CSV atomically, the columns in order of first appearance (an empty
    file for no rows); the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        path.write_text("")
        return
    fields = list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file as dicts of strings ('' where empty); [] when absent or empty."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")


def writers_of(out: Path) -> list[int]:
    """PIDs of other processes whose command line has `--output_path` equal to `out` (resolved)."""
    target = Path(out).resolve()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        for flag, value in zip(argv, argv[1:]):
            if (
                flag == b"--output_path"
                and (cwd / value.decode(errors="replace")).resolve() == target
            ):
                pids.append(int(proc.name))
    return pids


def wait_until_free(out: Path, poll_seconds: float = 60.0) -> None:
    """Wait while another process writes into the run folder `out` (two writers would clash)."""
    announced = False
    while pids := writers_of(out):
        if not announced:
            print(f"{out}: written by process(es) {pids}; waiting", flush=True)
            announced = True
        time.sleep(poll_seconds)


def replace_block(text: str, name: str, content: str) -> str:
    """`text` with what lies between `<!-- BEGIN name -->` and `<!-- END name -->` replaced by
    `content` (a warning and `text` unchanged when there is no such block)."""
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pattern.search(text):
        print(f"warning: no block {name} in the document")
        return text
    return pattern.sub(lambda m: m.group(1) + content.rstrip() + "\n" + m.group(2), text)


def add_folder_flags(parser: argparse.ArgumentParser, *names: str, path: bool = False) -> None:
    """Add a flag --<name> with its default folder for each of `names` (keys of FOLDERS); its
    value a Path where `path`, else a str."""
    for name in names:
        default, holds = FOLDERS[name]
        parser.add_argument(
            f"--{name}",
            type=Path if path else str,
            default=default,
            help=f"{holds} (default {default})",
        )


def add_start_index_flag(parser: argparse.ArgumentParser) -> None:
    """Add --start_index: the snapshots every selector skips (test_BIQAN.py's default)."""
    parser.add_argument(
        "--start_index",
        type=int,
        default=selection.START_INDEX,
        help="snapshots skipped by every selector (default %(default)s)",
    )


def write_table(tables: Path | str, name: str, text: str) -> None:
    """Write `text` to the file `name` in the folder `tables` (made if missing) and print it."""
    Path(tables).mkdir(parents=True, exist_ok=True)
    (Path(tables) / name).write_text(text)
    print(text)


def add_report_flags(parser: argparse.ArgumentParser, results: Path, table_file: str) -> None:
    """A study report's flags: --results (the committed rows, default `results`) and --write
    (also write `table_file` beside them and its block of docs/REPRODUCTION.md)."""
    parser.add_argument("--results", type=Path, default=results, help="the committed rows")
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"also write <results>/{table_file} and its block in {REPRODUCTION.name}",
    )


def report_main(study: types.ModuleType, argv: list[str] | None = None) -> int:
    """The command line of a results-backed study (a module with RESULTS, TABLE_FILE,
    DOC_BLOCK and report_lines(results) -> markdown lines): print its table; with --write also
    write it beside its rows and into its block of docs/REPRODUCTION.md."""
    parser = argparse.ArgumentParser(description=study.__doc__.splitlines()[0])
    add_report_flags(parser, study.RESULTS, study.TABLE_FILE)
    args = parser.parse_args(argv)
    lines = study.report_lines(args.results)
    publish_table(lines, args.results / study.TABLE_FILE, study.DOC_BLOCK, args.write)
    return 0


def publish_table(lines: list[str], table: Path, block: str, write: bool) -> None:
    """Print the markdown `lines`; with `write`, also write them to `table` (beside the rows they
    come from) and into `block` of docs/REPRODUCTION.md."""
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if write:
        image_io.write_text(table, text)
        image_io.write_text(REPRODUCTION, replace_block(REPRODUCTION.read_text(), block, text))
