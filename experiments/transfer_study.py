"""Section 2: transfer learning at every size, from `results/` alone.

The CC runs started from another network (run folders `CC_<init>_s<seed>`: `polyu1` of
experiments/scale_runs.sh at 64, 128 and 256 px; `previous` and `polyu_chain8_short` of its
`chains64` at 64 px; experiments/transfer.py describes each init) against the scratch run of
the same crop, size, precision and seed: how many reach the scratch peak less TOLERANCE_DB, in
how many iterations, and their own peak. A folder is tabled once all its crops are in
(scale_study's tabled runs).

    python -m experiments.transfer_study [--write]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from experiments import scale_study
from experiments.common import report_main
from experiments.transfer import TOLERANCE_DB

RESULTS = scale_study.RESULTS
TABLE_FILE = "transfer.md"
DOC_BLOCK = "q2"  # section 2's block in docs/REPRODUCTION.md
CHAIN_INIT = "previous"  # run_BDN.py's init that chains a folder's images in name order


def first_reach(run: scale_study.ImageRun, target: float) -> int | None:
    """The first candidate iteration whose PSNR reaches `target` (dB), or None."""
    reached = np.flatnonzero(run.psnr >= target)
    return int(run.iterations[reached[0]]) if reached.size else None


def transfer_lines(runs: list[scale_study.ImageRun]) -> list[str]:
    """The CC runs started from another network (sets `CC_<init>`) against the scratch
    run of the same image, size, precision and seed: how many reach the scratch peak less
    TOLERANCE_DB, in how many iterations (a miss counts as the run's length), and their
    own peak; a `previous` chain's first image, fitted from scratch, is left out."""
    scratch = {
        (r.size, r.precision, r.seed, r.stem): r
        for r in runs
        if r.set_name == scale_study.REPORT_SET
    }
    chain_starts: dict[tuple[int, str, str, int], str] = {}  # folder -> its first image's stem
    for run in runs:
        if run.set_name == f"{scale_study.REPORT_SET}_{CHAIN_INIT}":
            folder = scale_study.report_folder(run)
            chain_starts[folder] = min(chain_starts.get(folder, run.stem), run.stem)
    groups: dict[tuple[int, str, str], list[tuple[scale_study.ImageRun, scale_study.ImageRun]]] = {}
    for run in runs:
        if run.set_name.startswith(f"{scale_study.REPORT_SET}_") and run.stem != chain_starts.get(
            scale_study.report_folder(run)
        ):
            reference = scratch.get((run.size, run.precision, run.seed, run.stem))
            if reference is not None:
                key = (run.size, run.precision, run.set_name[len(scale_study.REPORT_SET) + 1 :])
                groups.setdefault(key, []).append((reference, run))
    if not groups:
        return ["No CC run started from another network is collected yet."]
    lines = [
        "Transfer learning on the CC crops: each run started from another network against the "
        f"scratch run of the same image and seed; reached: the scratch peak less "
        f"{TOLERANCE_DB:g} dB, over test_BIQAN's candidates (a miss counts as the "
        "run's length):",
        "",
        "| size | precision | init | image runs | reached | iterations to reach, scratch | "
        "iterations to reach, init | saving of summed iterations | init peak - scratch peak "
        "(dB) | init's best iteration, median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (size, precision, init), pairs in sorted(groups.items()):
        scratch_iterations, init_iterations, misses = [], [], 0
        for reference, run in pairs:
            target = reference.best - TOLERANCE_DB
            scratch_iterations.append(first_reach(reference, target))
            reached = first_reach(run, target)
            misses += reached is None
            init_iterations.append(int(run.iterations[-1]) if reached is None else reached)
        saving = 1 - sum(init_iterations) / sum(scratch_iterations)
        peaks = np.mean([run.best - reference.best for reference, run in pairs])
        best_iterations = [int(run.iterations[np.argmax(run.psnr)]) for _, run in pairs]
        cells = [
            str(size), precision, init, str(len(pairs)), f"{len(pairs) - misses}/{len(pairs)}",
            f"{np.mean(scratch_iterations):.0f}", f"{np.mean(init_iterations):.0f}",
            f"{saving:+.0%}", f"{peaks:+.2f}", f"{np.median(best_iterations):.0f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report_lines(results: Path) -> list[str]:
    """The markdown table."""
    return transfer_lines(scale_study.read_runs(results))


if __name__ == "__main__":
    sys.exit(report_main(sys.modules[__name__]))
