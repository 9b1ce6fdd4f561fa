"""Section 4: DIP's run-to-run spread over seeds on the CC crops, from `results/` alone.

For every size and precision whose CC crops were fitted from scratch with two seeds or more
(scale_study's tabled runs: a seed still filling is left out): per crop, each seed's true best
(the best saved snapshot against the clean image, with its iteration), their mean ± sd and
range, and the mean ± sd over seeds of the last snapshot and of the default WMV pick
(`scale_study.shipped_rules`).

    python -m experiments.seed_spread [--write]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from experiments import scale_study
from experiments.common import mean_std, report_main

RESULTS = scale_study.RESULTS
TABLE_FILE = "seeds.md"
DOC_BLOCK = "q4"  # section 4's block in docs/REPRODUCTION.md
DEFAULT_RULE = "wmv (default)"


def seed_groups(
    runs: list[scale_study.ImageRun],
) -> dict[tuple[int, str], dict[str, list[scale_study.ImageRun]]]:
    """(size, precision) -> CC stem -> its scratch runs in seed order, for the groups with two
    seeds or more."""
    groups: dict[tuple[int, str], dict[str, list[scale_study.ImageRun]]] = {}
    by_seed = sorted(runs, key=lambda run: run.seed)
    for (size, precision, _), report in scale_study.cc_groups(by_seed).items():
        if len({run.seed for run in report}) > 1:
            for run in report:
                groups.setdefault((size, precision), {}).setdefault(run.stem, []).append(run)
    return groups


def image_row(
    size: int, precision: str, stem: str, runs: list[scale_study.ImageRun]
) -> tuple[list[str], np.ndarray]:
    """One crop's cells and its true bests over the seeds (dB, (seeds,))."""
    pick = scale_study.shipped_rules()[DEFAULT_RULE].pick
    best = np.array([run.best for run in runs])
    per_seed = ", ".join(
        f"s{run.seed} {run.best:.2f} ({run.iterations[np.argmax(run.psnr)]})" for run in runs
    )
    cells = [str(size), precision, stem, per_seed, mean_std(best), f"{np.ptp(best):.2f}"]
    cells.append(mean_std([run.psnr[-1] for run in runs]))
    cells.append(mean_std([run.psnr[pick(run)] for run in runs]))
    return cells, best


def report_lines(results: Path) -> list[str]:
    """The markdown table: one row per crop, size and precision, and one of means per group."""
    lines = [
        "Per CC crop: each seed's true best (dB, its iteration), their mean ± sd and range, and "
        f"over the seeds the last snapshot and the default WMV pick (`{DEFAULT_RULE}` of section "
        "9's rules table):",
        "",
        "| size | precision | image | true best per seed (iteration) | true best mean ± sd | "
        "range | last, mean ± sd | default WMV pick, mean ± sd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (size, precision), stems in seed_groups(scale_study.read_runs(results)).items():
        spreads, ranges = [], []
        for stem, runs in stems.items():
            cells, best = image_row(size, precision, stem, runs)
            lines.append("| " + " | ".join(cells) + " |")
            if len(best) > 1:
                spreads.append(np.std(best, ddof=1))
                ranges.append(np.ptp(best))
        summary = [str(size), precision, "**mean over crops**", ""]
        summary += [f"sd {np.mean(spreads):.2f}", f"{np.mean(ranges):.2f}", "", ""]
        lines.append("| " + " | ".join(summary) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(report_main(sys.modules[__name__]))
