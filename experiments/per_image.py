"""Section 1: denoising quality per CC crop at every size, from `results/` alone.

For every size and precision whose CC crops were fitted from scratch (seed 0; scale_study's
tabled runs): per crop, the noisy input, CBM3D with a blindly estimated σ, with the σ tuned on
that size's PolyU crops and with the best σ of the grid for that crop (an oracle), DIP's true
best (the best of test_BIQAN's candidates against the clean image, an oracle), the last snapshot,
and the picks of the shipped rules and of BIQAN with the paper's recipe where its scores are
collected; then the mean, and the published means (15 CC images at 512x512).

    python -m experiments.per_image [--write]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import biqan_scale, scale_study
from experiments.common import report_main

RESULTS = scale_study.RESULTS
TABLE_FILE = "per_image.md"
DOC_BLOCK = "quality"  # section 1's block in docs/REPRODUCTION.md
SEED = 0
BIQAN = biqan_scale.LABEL_RULES["absolute"]
PICKS = ("wmv (default)", "fixed:auto", BIQAN)  # the rules whose pick each crop shows
# Means over the 15 CC images at 512x512: CBM3D and BIQAN from the original README's table, the
# true best from the original repository's result file (result/CC_Resume_All32/Denoised_PSNR.txt),
# the noisy input measured on the 15 pairs (the project brief); section 1 says where each is from.
PUBLISHED = {"noisy": 33.41, "CBM3D": 33.99, "best": 37.83, BIQAN: 37.47}


Cell = tuple[float, str]  # a PSNR (dB; nan where not measured) and its note ("" for none)


def text(cell: Cell) -> str:
    """'PSNR (note)', or "-" where not measured."""
    value, note = cell
    return "-" if np.isnan(value) else f"{value:.2f}" + (f" ({note})" if note else "")


def cbm3d_cells(results: Path, size: int) -> tuple[str, dict[str, list[Cell]]]:
    """(the σ tuned on PolyU, 8-bit units, or "-"; CC stem -> [blind (its σ), tuned, oracle
    (its σ)]) from results/cbm3d/<size>px."""
    path = results / scale_study.CBM3D_ROWS / f"{size}px" / "cbm3d_full.csv"
    tuned = scale_study.cbm3d_tuned(results, size)
    if not path.is_file() or tuned is None:
        return "-", {}
    rows = pd.read_csv(path, dtype={"sigma": str})
    cells = {}
    for stem, image in rows[rows["dataset"] == scale_study.REPORT_SET].groupby("image"):
        blind = image[image["sigma"] == "blind"].iloc[0]
        grid = image[image["sigma"] != "blind"]
        oracle = grid.loc[grid["psnr"].idxmax()]
        cells[stem] = [
            (blind.psnr, f"{blind.sigma_255:.1f}"),
            (tuned[2].get(stem, np.nan), ""),
            (oracle.psnr, f"{oracle.sigma_255:g}"),
        ]
    return f"{tuned[0]:g}", cells


def image_cells(run: scale_study.ImageRun, rules: dict[str, scale_study.Rule]) -> list[Cell]:
    """DIP's cells of one crop: true best (its iteration), last, and each of PICKS (its
    iteration; nan where the rule is not measured at this size)."""
    cells = [(run.best, str(run.iterations[np.argmax(run.psnr)])), (run.psnr[-1], "")]
    for name in PICKS:
        index = rules[name].pick(run) if name in rules else None
        cells.append(
            (np.nan, "") if index is None else (run.psnr[index], str(run.iterations[index]))
        )
    return cells


def report_lines(results: Path) -> list[str]:
    """The markdown table: a row per crop, size and precision, a row of means per group, and
    the published means."""
    header = ["size", "precision", "image", "noisy", "CBM3D, blind σ (its σ)", "CBM3D, σ tuned on "
              "PolyU (σ)", "CBM3D, oracle σ (σ)", "DIP true best (iteration)", "DIP last"]  # fmt: skip
    header += [f"{name} pick (iteration)" for name in PICKS]
    lines = [
        f"PSNR (dB) against the clean image, seed {SEED}; σ in 8-bit units; each rule as in "
        "section 9's rules table:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    runs = [run for run in scale_study.read_runs(results) if run.seed == SEED]
    for (size, precision, _), report in scale_study.cc_groups(runs).items():
        rules = scale_study.shipped_rules() | scale_study.biqan_rules(
            results, size, precision, report
        )
        sigma, cbm3d = cbm3d_cells(results, size)
        missing: list[Cell] = [(np.nan, "")] * 3
        rows = [
            [(run.noisy, ""), *cbm3d.get(run.stem, missing), *image_cells(run, rules)]
            for run in report
        ]
        for run, row in zip(report, rows):
            cells = [str(size), precision, run.stem, *map(text, row)]
            lines.append("| " + " | ".join(cells) + " |")
        means = [text((np.mean([value for value, _ in column]), "")) for column in zip(*rows)]
        means = [cell if cell == "-" else f"**{cell}**" for cell in means]
        means[2] += f" (σ {sigma})" if means[2] != "-" else ""
        lines.append("| " + " | ".join([str(size), precision, "**mean**", *means]) + " |")
    published = [PUBLISHED.get(name) for name in ("noisy", "CBM3D", None, None, "best", None)]
    published += [PUBLISHED.get(name) for name in PICKS]
    cells = ["-" if value is None else f"{value:.2f}" for value in published]
    lines.append("| 512 | paper | published mean, 15 CC images | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(report_main(sys.modules[__name__]))
