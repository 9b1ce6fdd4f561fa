"""The DIP runs whose per-iteration rows are committed under `results/`, one line per run folder:
what the tables of docs/REPRODUCTION.md are computed from.

    python -m experiments.inventory [--write]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from experiments import scale_study
from experiments.common import report_main
from experiments.precision_study import DIP_STUDIES, IMAGES_FILE

RESULTS = scale_study.RESULTS
TABLE_FILE = "inventory.md"
DOC_BLOCK = "progress"  # the runs block of docs/REPRODUCTION.md


def folder_row(run_dir: Path, results: Path) -> list[str]:
    """One run folder's cells: its path under `results`, size, precision, set, init, seed,
    images and last iteration (the largest over its images)."""
    set_and_init, _, seed = run_dir.name.rpartition("_s")
    set_name, _, init = set_and_init.partition("_")
    stems = pd.read_csv(run_dir / IMAGES_FILE)["stem"]
    last = max(
        int(pd.read_csv(run_dir / f"{stem}.csv", usecols=["iteration"])["iteration"].max())
        for stem in stems
    )
    size, precision = run_dir.parent.parent.name.removesuffix("px"), run_dir.parent.name
    location = run_dir.relative_to(results).as_posix()
    return [
        location,
        size,
        precision,
        set_name,
        init or "scratch",
        seed,
        str(len(stems)),
        str(last),
    ]


def report_lines(results: Path) -> list[str]:
    """The markdown table of every run folder under `results`/{precision,scale}."""
    lines = [
        "| rows under results/ | size | precision | set | init | seed | images | iterations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for folder in DIP_STUDIES:
        for images_file in sorted((results / folder).glob(f"*px/*/*/{IMAGES_FILE}")):
            lines.append("| " + " | ".join(folder_row(images_file.parent, results)) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(report_main(sys.modules[__name__]))
