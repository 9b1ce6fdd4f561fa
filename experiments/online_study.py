"""Section 5: online early stopping at every size, from `results/` alone.

`run_BDN.py --early_stop wmv` and `denoise.py` decide on the saved snapshots only, so the stop
and pick of an online run equal the rule replayed on a finished fixed-length run (tested). For
every size, precision and CC folder (from scratch, or from another network; scale_study's
tabled runs): the fixed-length pipeline (every iteration, then a pick; its true best bounds any
picker) against each shipped stop: the default WMV (its patience scaled with the size) and
`fixed:auto` (a fixed iteration scaled with the size). Per rule: how many runs it stopped before
their end, the iteration it stopped at, the speed-up over the fixed length, its pick against
the true best and the last snapshot. `denoise.py photo.png` runs at least to the default rule's
latest stop (its --num_iter auto), so the default row is what it does at every size.

    python -m experiments.online_study [--write]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from experiments import scale_study
from experiments.common import report_main
from utils import selection

RESULTS = scale_study.RESULTS
TABLE_FILE = "online.md"
DOC_BLOCK = "online"  # section 5's block in docs/REPRODUCTION.md


def wmv_stop(run: scale_study.ImageRun) -> tuple[int, int | None]:
    """The default WMV rule online: (its pick, the candidate index where it stopped, after its
    patience or at `fixed:auto`'s stop, or None when it ran to the end)."""
    variances = run.variances[selection.DEFAULT_WMV.window]
    return selection.default_wmv_replay(variances, run.iterations, run.height, run.width)


def fixed_stop(run: scale_study.ImageRun) -> tuple[int, int | None]:
    """`fixed:auto` online: it stops at (and picks) its scaled iteration, if the run gets there."""
    pick = scale_study.fixed_pick(run, selection.scaled_stop(run.height, run.width))
    return pick, pick if run.iterations[pick] < run.iterations[-1] else None


STOPS = {"wmv (default)": wmv_stop, "fixed:auto": fixed_stop}


def rule_row(runs: list[scale_study.ImageRun], name: str) -> list[str]:
    """One rule's cells over `runs` (one size, precision and folder set)."""
    decisions = [STOPS[name](run) for run in runs]
    stopped = [
        int(run.iterations[-1] if stop is None else run.iterations[stop])
        for run, (_, stop) in zip(runs, decisions)
    ]
    picked = np.array([run.psnr[pick] for run, (pick, _) in zip(runs, decisions)])
    length = np.mean([run.iterations[-1] for run in runs])
    fired = sum(stop is not None for _, stop in decisions)
    return [
        name,
        f"{fired}/{len(runs)}",
        f"{np.mean(stopped):.0f} [{min(stopped)}, {max(stopped)}]",
        f"{length / np.mean(stopped):.2f}x",
        f"{picked.mean():.2f}",
        f"{(picked - np.array([run.best for run in runs])).mean():+.2f}",
    ]


def report_lines(results: Path) -> list[str]:
    """The markdown table: per size, precision and CC folder set, a row per shipped stop."""
    lines = [
        "The fixed-length pipeline against each shipped rule run online, on the CC crops (means "
        "over image runs; speed-up: the fixed length over the mean iteration stopped at):",
        "",
        "| size | precision | init | seeds | image runs | fixed: iterations | fixed: true best "
        "(dB) | fixed: last (dB) | online rule | stopped early | stopped at, mean [range] | "
        "speed-up | online pick (dB) | pick - true best (dB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = scale_study.cc_groups(scale_study.read_runs(results), inits=True)
    for (size, precision, set_name), runs in groups.items():
        init = set_name.partition("_")[2] or "scratch"
        seeds = ",".join(str(seed) for seed in sorted({run.seed for run in runs}))
        fixed = [
            str(size), precision, init, seeds, str(len(runs)),
            f"{np.mean([run.iterations[-1] for run in runs]):.0f}",
            f"{np.mean([run.best for run in runs]):.2f}",
            f"{np.mean([run.psnr[-1] for run in runs]):.2f}",
        ]  # fmt: skip
        for name in STOPS:
            lines.append("| " + " | ".join(fixed + rule_row(runs, name)) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(report_main(sys.modules[__name__]))
