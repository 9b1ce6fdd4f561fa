"""The paper's claims beside ours: the first table of docs/REPRODUCTION.md, quoted from the
results-backed tables.

    python -m experiments.claims [--write]

Each cell quotes the table of the study that measures it (`results/scale.md`, `blend.md`,
`transfer.md`, `precision/precision.md`, as `python -m experiments.tables` writes them), so that
every figure is written once, by its study, and the claims follow each new run and retune. Per
size, the shipped precision (bf16; section 9 also has fp32 at 64 and 256 px), or fp32 where a
size has CC runs in fp32 alone (a CPU without bf16 instructions; section 8's check compares the
two), its cells marked so, and the rules measured on CC: "best pick" is the no-reference rule
with the best pick against CBM3D, leaving out the (bound) rows tuned on CC in hindsight. Our two bars decide a "yes" or "no"; the paper's claims
are set beside our figures without a verdict.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from experiments import blend_study, precision_study, scale_study, transfer_study
from experiments.common import REPO, count_of, report_main

RESULTS = REPO / "results"
TABLE_FILE = "claims.md"
DOC_BLOCK = "claims"
PRECISION = "bf16"  # the precision quoted: the shipped CPU fast path ...
FALLBACK = precision_study.REFERENCE  # ... or, at a size with CC runs in it alone, fp32
SIZES = (64, 128, 256, 512)
PICK_BAR_DB = 0.15  # our bar: a no-reference pick within this of the true best ...
SRCC_BAR = 0.8  # ... with a score of at least this within-image SRCC
OUTPUT_BAR_DB = 0.3  # our bar: the best no-reference output this far above PolyU-tuned CBM3D
BOUND = "(bound)"  # the rows tuned on CC itself, in hindsight: not results
DIFFERENCE = re.compile(r"\(([+-]\d+\.\d+)\)")  # "37.66 (+0.34)": the difference to CBM3D
SEEDS = re.compile(r"\((\d+)[;)]")  # "37.66 (+0.34) (3)": a seed mean of 3 fits

Row = dict[str, str]


class Tables(NamedTuple):
    """The rows of the quoted tables, each a header -> cell dict."""

    quality: list[Row]  # scale.md, table 1: DIP and CBM3D on CC
    rules: list[Row]  # scale.md, table 2: the no-reference rules
    blend: list[Row]  # blend.md: seed averaging and the CBM3D blend
    transfer: list[Row]  # transfer.md
    precision: list[Row]  # precision/precision.md, paired differences


def markdown_tables(text: str) -> list[list[Row]]:
    """The tables of a markdown text, in order: each a list of rows (header -> cell)."""
    tables: list[list[Row]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[index + 1].startswith("|---"):
            header = cells_of(line)
            rows = []
            for body in lines[index + 2 :]:
                if not body.startswith("|"):
                    break
                rows.append(dict(zip(header, cells_of(body))))
            tables.append(rows)
    return tables


def cells_of(line: str) -> list[str]:
    """The cells of one markdown table line, stripped."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def study_tables(results: Path, study: types.ModuleType) -> list[list[Row]]:
    """The tables of the file `study` writes under `results` (its RESULTS may be a subfolder of
    RESULTS); none while the file is missing."""
    path = results / study.RESULTS.relative_to(RESULTS) / study.TABLE_FILE
    return markdown_tables(path.read_text()) if path.exists() else []


def read_tables(results: Path) -> Tables:
    """The quoted tables under `results` (a missing file: no rows)."""
    quality, rules = (study_tables(results, scale_study) + [[], []])[:2]
    blend, transfer, precision = (
        (study_tables(results, study) or [[]])[0]
        for study in (blend_study, transfer_study, precision_study)
    )
    return Tables(quality, rules, blend, transfer, precision)


def quoted_precision(tables: Tables, size: int) -> str:
    """The precision quoted at `size`: PRECISION, unless the CC runs of that size are tabled in
    FALLBACK alone."""
    tabled = {row.get("precision") for row in tables.quality if row.get("size") == str(size)}
    return FALLBACK if tabled == {FALLBACK} else PRECISION


def at(tables: Tables, size: int, precision: str) -> Tables:
    """`tables` with the rows of `size` and `precision` alone (the paired precision rows, which
    have no precision, whole)."""

    def keep(rows: list[Row]) -> list[Row]:
        return [
            row
            for row in rows
            if row.get("size") == str(size) and row.get("precision") == precision
        ]

    return tables._replace(
        quality=keep(tables.quality),
        rules=keep(tables.rules),
        blend=keep(tables.blend),
        transfer=keep(tables.transfer),
    )


def mean_of(cell: str) -> float:
    """The mean of a "mean ± sd [largest]" cell, or of a plain number."""
    return float(cell.split()[0])


def results_of(rules: list[Row]) -> list[Row]:
    """The rule rows that are results: not the (bound) rows."""
    return [row for row in rules if BOUND not in row["rule"]]


def best_pick(tables: Tables, size: int) -> tuple[str, str] | None:
    """(pick - CBM3D, rule) of the rule whose pick is best against CBM3D, or None."""
    measured = [row for row in results_of(tables.rules) if row["pick - CBM3D"] != "-"]
    if not measured:
        return None
    row = max(measured, key=lambda row: float(row["pick - CBM3D"]))
    return row["pick - CBM3D"], row["rule"]


def above_noisy(tables: Tables, size: int) -> str:
    """Claim 1: DIP's true best against the noisy input."""
    rows = tables.quality
    return f"{rows[0]['best - noisy']} dB" if rows else "-"


def against_cbm3d(tables: Tables, size: int) -> str:
    """Claim 2: DIP's true best and one fit's best pick against CBM3D tuned on PolyU."""
    rows, pick = tables.quality, best_pick(tables, size)
    if not rows or rows[0]["best - CBM3D"] == "-":
        return "-"
    cell = f"best {rows[0]['best - CBM3D']} dB"
    return cell if pick is None else f"{cell}; best pick {pick[0]} ({pick[1]})"


def biqan_pick(tables: Tables, size: int) -> str:
    """Claim 3: BIQAN with the paper's recipe, its gap and within-image SRCC."""
    rows = [row for row in tables.rules if row["rule"] == "biqan, paper's recipe"]
    if not rows:
        return "-"
    row = rows[0]
    return f"{mean_of(row['gap to best']):.2f} dB below, SRCC {row['within-image SRCC']}"


def pick_bar(tables: Tables, size: int) -> str:
    """Claim 4 (our bar): the least gap and the best within-image SRCC of any rule."""
    rules = results_of(tables.rules)
    if not rules:
        return "-"
    closest = min(rules, key=lambda row: mean_of(row["gap to best"]))
    scored = [row for row in rules if row["within-image SRCC"] != "-"]
    gap = mean_of(closest["gap to best"])
    cell = f"{gap:.2f} dB ({closest['rule']})"
    srcc = None
    if scored:
        ranked = max(scored, key=lambda row: float(row["within-image SRCC"]))
        srcc = float(ranked["within-image SRCC"])
        cell += f", SRCC {ranked['within-image SRCC']} ({ranked['rule']})"
    holds = gap <= PICK_BAR_DB and srcc is not None and srcc >= SRCC_BAR
    return f"{'yes' if holds else 'no'}: {cell}"


def outputs(tables: Tables, size: int) -> list[tuple[float, str, bool]]:
    """(difference to CBM3D, what, complete) of each averaged or blended output in the blend
    table (a row that leaves runs or images out, their snapshots gone, is not complete)."""
    found = []
    for row in tables.blend:
        if BOUND in row["rule"]:
            continue
        fits = SEEDS.search(row["seed mean (seeds)"])
        averaged = f"{fits.group(1) if fits else 'seeds'} fits averaged"
        columns = {
            "seed mean (seeds)": averaged,
            "one fit, blended": "one fit blended",
            "seed mean, blended": f"{averaged} and blended",
        }
        for column, what in columns.items():
            difference = DIFFERENCE.search(row[column])
            if difference is None:
                continue
            left_out = [f"{row['CC runs']} runs"] if " of " in row["CC runs"] else []
            if column.startswith("seed mean") and " of " in row["seed mean (seeds)"]:
                left_out.append("some images")
            label = f"{what} ({', '.join([row['rule'], *left_out])})"
            found.append((float(difference.group(1)), label, not left_out))
    return found


def output_bar(tables: Tables, size: int) -> str:
    """Claim 5 (our bar): one fit's best pick, and the best averaged or blended output against
    CBM3D: "yes" once an output measured on every run clears the bar, "open" where only one
    measured on some runs does."""
    pick, found = best_pick(tables, size), outputs(tables, size)
    if pick is None:
        return "-"
    cells = [f"one fit {pick[0]} ({pick[1]})"]
    complete = max((output for output in found if output[2]), default=None)
    if complete is not None:
        cells.append(f"{complete[1]} {complete[0]:+.2f}")
    reached = max(float(pick[0]), complete[0] if complete else float("-inf"))
    partial = max((output for output in found if not output[2]), default=None)
    if partial is not None and partial[0] > reached:
        cells.append(f"{partial[1]} {partial[0]:+.2f}")
    if reached >= OUTPUT_BAR_DB:
        verdict = "yes"
    else:
        verdict = "open" if partial is not None and partial[0] >= OUTPUT_BAR_DB else "no"
    return f"{verdict}: " + "; ".join(cells)


def transfer_saving(tables: Tables, size: int) -> str:
    """Claim 6: each init's saving of summed iterations to the scratch peak, the best first,
    with its peak against scratch."""
    rows = sorted(
        tables.transfer,
        key=lambda row: -float(row["saving of summed iterations"].rstrip("%")),
    )
    if not rows:
        return "-"
    first = f"{rows[0]['init']} {rows[0]['saving of summed iterations']}"
    first += f" (peak {rows[0]['init peak - scratch peak (dB)']} dB)"
    others = [f"{row['init']} {row['saving of summed iterations']}" for row in rows[1:]]
    return ", ".join([first, *others])


def precision_kept(tables: Tables, size: int) -> str:
    """Claim 7: bf16 - fp32 in the true best, per set, paired over crops and seeds."""
    rows = [
        row for row in tables.precision
        if row.get("difference") == "bf16 - fp32" and row.get("size") == str(size)
    ]  # fmt: skip
    if not rows:
        return "-"
    best = "best PSNR (dB)"
    return ", ".join(
        f"{row['set'].split()[0]} {' '.join(row[best].split()[:3])} dB"
        f" ({count_of(int(row['image runs']), 'run')})"
        for row in rows
    )


class Claim(NamedTuple):
    claim: str
    paper: str
    cell: Callable[[Tables, int], str]
    command: str
    of_one_precision: bool = True  # False: the cell compares precisions (it is never marked)


SCALE = "`python -m experiments.scale_study`"
CLAIMS = (
    Claim("1. DIP's best snapshot far above the noisy input", "+4.4 dB (37.83 vs 33.41)",
          above_noisy, SCALE),
    Claim("2. DIP beats CBM3D", "37.47 vs 33.99 dB (σ not stated)", against_cbm3d, SCALE),
    Claim("3. BIQAN's pick near the true best", "0.36 dB below", biqan_pick,
          "`python -m experiments.biqan_scale --size SIZE`"),
    Claim(f"4. a no-reference pick within {PICK_BAR_DB} dB of the best, within-image SRCC at "
          f"least {SRCC_BAR} (our bar)", "-", pick_bar, SCALE),
    Claim(f"5. the best no-reference output at least {OUTPUT_BAR_DB} dB above CBM3D tuned on "
          "PolyU (our bar)", "-", output_bar,
          f"{SCALE}, `python -m experiments.blend_study report`"),
    Claim("6. transfer learning: 36 % fewer iterations", "36 %", transfer_saving,
          "`python -m experiments.transfer_study`"),
    Claim("7. bf16 keeps DIP's quality (ours: the CPU fast path; bf16 - fp32)", "-",
          precision_kept, "`python -m experiments.precision_study report`", False),
)  # fmt: skip


def quoted_cell(claim: Claim, tables: Tables, size: int) -> str:
    """`claim`'s cell at `size`, from that size's rows in its quoted precision, which the cell
    names where it is not PRECISION."""
    precision = quoted_precision(tables, size)
    cell = claim.cell(at(tables, size, precision), size)
    if precision == PRECISION or cell == "-" or not claim.of_one_precision:
        return cell
    return f"{cell} ({precision})"


def report_lines(results: Path) -> list[str]:
    """The claims table, quoted from the table files under `results`."""
    tables = read_tables(results)
    sizes = " | ".join(f"ours, {size}x{size}" for size in SIZES)
    lines = [
        f"| claim | paper (15 CC, 512x512) | {sizes} | command |",
        "|---|---|" + "---|" * len(SIZES) + "---|",
    ]
    for claim in CLAIMS:
        cells = [claim.claim, claim.paper, *(quoted_cell(claim, tables, size) for size in SIZES)]
        lines.append("| " + " | ".join([*cells, claim.command]) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(report_main(sys.modules[__name__]))
