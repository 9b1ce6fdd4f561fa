"""experiments/report.py: the same document, tables and figures as before its pandas rewrite.

A synthetic devdata tree (16x16 crops, run_BDN-style run folders written with `run_output`'s
writer, selection.csv files written with test_BIQAN.py's writer, a CBM3D cache) in three states:
`full` (every table with values; CBM3D computed for the crops the cache lacks), `cached` (the
cache only: a CC crop without CBM3D, no PolyU-tuned sigma) and `empty` (nothing measured). The
report of commit `REFERENCE` (unpacked with `git archive`) and the current one run on copies of
the same tree; their documents, tables, figures and printed output must be byte-identical but for
the blocks that `experiments.tables` writes from results/ since (transfer, q2, the seed table,
q4, online stopping, online, and the list of runs, progress) and the document's q1 block (section
1 is `experiments.per_image`'s; q1 stays a file and is printed), and a few cells are checked against values computed here. CBM3D is replaced by a cheap stand-in
module (the real one takes about a second per call), the same for both versions.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import common
from tests.conftest import ROOT, make_pair, unpack_commit
from utils import image_io, run_output
from utils.biqan import report as biqan_report

REFERENCE = "da29f37"
SEEDS = ("0", "1", "2")
CC_IMAGES = ("a", "b", "c", "d")  # a, b finished in seed 0; c unfinished; d never started
ITERATIONS = np.arange(20, 220, 20)  # ten snapshots
FAKE_BM3D = '''"""Stand-in for bm3d in the report test: shrinks towards the image mean."""
import numpy as np


def bm3d_rgb(noisy, sigma):
    weight = min(float(sigma) * 4.0, 0.9)
    return (1 - weight) * noisy + weight * noisy.mean(axis=(0, 1))
'''
SIGMAS = (5, 10, 15, 20, 25, 30, 40)
BLOCKS = ("q1", "q4", "q2", "q3", "online", "progress")
RESULTS_BACKED = ("q2", "q4", "online", "progress")  # written by experiments.tables since
DOC_BLOCKS_RETIRED = ("q1", *RESULTS_BACKED)  # report.py leaves them alone in the document


def psnr_curve(image: int, seed: int) -> np.ndarray:
    """PSNR (dB) per snapshot of ITERATIONS: rises to a peak, then falls; shape (10,)."""
    peak = 2 + (image + seed) % 5
    return 28.0 + image + 0.5 * seed - 0.3 * (np.arange(10) - peak) ** 2 / 2


def write_run_image(run: Path, stem: str, image: int, seed: int, finished: bool, snapshots: bool):
    """One run_BDN image folder: metrics.csv (one empty psnr_raw cell), summary.json if
    `finished`, snapshot PNGs if `snapshots`."""
    folder = run / stem
    folder.mkdir(parents=True)
    psnr = psnr_curve(image, seed)
    rows = [
        {
            "iteration": int(iteration),
            "loss": 0.01 / (row + 1),
            "psnr_noisy": 20.0 + row,
            "psnr_raw": None if row == 3 else float(psnr[row] + 0.4 * math.sin(row + image)),
            "ssim_raw": 0.5,
            "psnr_avg": float(psnr[row]),
            "ssim_avg": 0.6 + 0.01 * row + 0.001 * image,
        }
        for row, iteration in enumerate(ITERATIONS)
    ]
    (folder / run_output.METRICS_FILE).write_text(run_output.metrics_csv(rows))
    if finished:
        (folder / run_output.SUMMARY_FILE).write_text(json.dumps({"image": stem}))
    if snapshots:
        for row, iteration in enumerate(ITERATIONS):
            image_io.write_png(
                run_output.snapshot_path(folder, int(iteration)),
                np.full((16, 16, 3), 0.1 + 0.05 * row),
            )


def write_selection(folder: Path, picks: list[tuple[str, str, int, bool]], seed: int) -> None:
    """selection.csv as test_BIQAN.py writes it; picks are (image, selector, iteration, fired)."""
    rows = []
    for stem, selector, iteration, fired in picks:
        psnr = psnr_curve(CC_IMAGES.index(stem), seed)
        index = min(int(np.searchsorted(ITERATIONS, iteration)), len(ITERATIONS) - 1)
        note = "" if selector != "wmv" else ("rule fired" if fired else "rule did not fire: x")
        rows.append(
            {
                "image": stem,
                "selector": selector,
                "picked_iteration": iteration,
                "picked_psnr": float(psnr[index]) - 0.01,
                "best_iteration": int(ITERATIONS[int(np.argmax(psnr))]),
                "best_psnr": float(psnr.max()),
                "loss_db": float(psnr.max() - psnr[index] + 0.01),
                "note": note,
            }
        )
    folder.mkdir(parents=True)
    biqan_report.write_summary(folder, rows, [], rows[0]["selector"])


def cbm3d_row(dataset: str, stem: str, shift: float) -> dict:
    row = {
        "dataset": dataset,
        "image": stem,
        "sigma_est_255": 7.25 + shift,
        "blind_psnr": 30.5 + shift,
        "blind_ssim": 0.81,
    }
    for number, sigma in enumerate(SIGMAS):
        row[f"psnr_s{sigma}"] = 30.0 + shift + (number if number < 3 else 5 - number) * 0.25
        row[f"ssim_s{sigma}"] = 0.8 + 0.01 * number
    return row


def build_tree(root: Path, state: str) -> list[str]:
    """The devdata tree of `state` under `root`; returns report.py's arguments."""
    for dataset, stems in (("CC", CC_IMAGES), ("PolyU", ("p1", "p2", "p3", "p4"))):
        for number, stem in enumerate(stems):
            make_pair(root / "crops" / dataset, stem, height=16, width=16, seed=number)
    tables, runs, selection = root / "tables", root / "runs", root / "selection"
    tables.mkdir()
    doc = "# Report\n\nIntro.\n\n" + "".join(
        f"<!-- BEGIN {name} -->\nold {name}\n<!-- END {name} -->\n\ntext after {name}\n\n"
        for name in BLOCKS
        if not (state == "full" and name == "q3")  # a missing block: a warning
    )
    (root / "doc.md").write_text(doc)
    arguments = ["--compare", "a", "--polyu_every", "2"]
    if state == "empty":
        return arguments + ["--no_cbm3d"]
    rows = [cbm3d_row("CC", "a", 0.0), cbm3d_row("CC", "z", 1.0)]  # z: no crop any more
    if state == "full":
        rows += [cbm3d_row("CC", "c", 0.5), cbm3d_row("PolyU", "p1", -1.0)]
        (tables / "transfer.md").write_text("| transfer |\n|---|\n| 1 |\n")
        (tables / "selection.md").write_text("| selection |\n|---|\n| 2 |\n")
    else:
        (tables / "online_stopping.md").write_text("| online |\n|---|\n| 3 |\n")
    (tables / "cbm3d.csv").write_text(
        ",".join(rows[0]) + "\n" + "".join(",".join(map(str, row.values())) + "\n" for row in rows)
    )
    for seed, finished in ((0, ("a", "b")), (1, ("a", "b", "c")), (2, ("b",))):
        run = runs / f"CC_scratch_s{seed}"
        for number, stem in enumerate(CC_IMAGES[:3]):
            write_run_image(run, stem, number, seed, stem in finished, seed == 0)
        record = {"fit": {"num_iter": 200}, "seed": seed, "init_from": None}
        (run / run_output.RUN_RECORD_FILE).write_text(json.dumps(record))
    for init in ("previous", "polyu1"):
        write_run_image(runs / f"CC_{init}_s0", "a", 5, 0, True, False)
    (runs / "notes.txt").write_text("not a run folder\n")
    scratch = selection / "CC_scratch_s0"
    write_selection(
        scratch / "noref",
        [("a", "wmv", 100, True), ("a", "last", 200, True), ("b", "wmv", 140, False)]
        + [("b", "last", 200, True), ("c", "wmv", 80, True)],
        0,
    )
    write_selection(scratch / "wmv_tuned", [("a", "wmv", 60, True), ("b", "wmv", 80, True)], 0)
    write_selection(scratch / "fixed_tuned", [("a", "fixed:60", 60, True)], 0)
    write_selection(
        scratch / "resize_imagenet",
        [("a", "biqan", 120, True), ("b", "biqan", 130, True), ("a", "wmv", 100, True)],
        0,
    )
    write_selection(selection / "CC_scratch_s1" / "noref", [("b", "wmv", 60, True)], 1)
    return arguments + (["--no_cbm3d"] if state == "cached" else [])


def run_report(code: Path, tree: Path, arguments: list[str], fake_modules: Path) -> str:
    """Run `code`'s experiments/report.py on `tree`; its printed output."""
    environment = {
        **os.environ,
        "PYTHONPATH": f"{fake_modules}{os.pathsep}{code}",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    command = [sys.executable, "-m", "experiments.report", "--seeds", *SEEDS]
    for flag in ("crops", "runs", "selection", "tables", "figures"):
        command += [f"--{flag}", str(tree / flag)]
    result = subprocess.run(
        [*command, "--doc", str(tree / "doc.md"), *arguments],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.replace(str(tree), "TREE")


def tree_files(tree: Path) -> dict[str, bytes]:
    """Every file of the tree by relative path (what the report wrote, and its inputs)."""
    return {
        path.relative_to(tree).as_posix(): path.read_bytes()
        for path in sorted(tree.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def reference_code(tmp_path_factory) -> Path:
    """The code before the rewrite, unpacked from the repository's history (skipped without it)."""
    return unpack_commit(
        REFERENCE, tmp_path_factory.mktemp("reference_code"), "experiments", "utils"
    )


@pytest.fixture(scope="module")
def fake_modules(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake_modules")
    (folder / "bm3d.py").write_text(FAKE_BM3D)
    return folder


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every markdown-table row of `text` whose first cell is `first_cell`."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if re.match(rf"^\| {re.escape(first_cell)} \|", line)
    ]


@pytest.mark.parametrize("state", ["full", "cached", "empty"])
def test_report_is_unchanged(state, reference_code, fake_modules, tmp_path):
    outputs, files = {}, {}
    for name, code in (("before", reference_code), ("after", ROOT)):
        tree = tmp_path / name
        arguments = build_tree(tree, state)
        outputs[name] = run_report(code, tree, arguments, fake_modules)
        files[name] = tree_files(tree)
    # the blocks that moved to results/ (experiments.tables) are all that differs
    q4 = files["before"].pop("tables/q4.md").decode()
    del files["before"]["tables/progress.md"]
    doc_before = files["before"]["doc.md"].decode()
    for name in DOC_BLOCKS_RETIRED:
        doc_before = common.replace_block(doc_before, name, f"old {name}\n")
    files["before"]["doc.md"] = doc_before.encode()
    assert list(files["before"]) == list(files["after"])
    differing = [path for path in files["before"] if files["before"][path] != files["after"][path]]
    assert differing == []
    assert outputs["before"].replace(q4 + "\n", "", 1) == outputs["after"]

    tree, output = tmp_path / "after", outputs["after"]
    doc = (tree / "doc.md").read_text()
    figures = sorted(path.name for path in (tree / "figures").glob("*.png"))
    if state == "empty":
        assert figures == []
        assert "figures: none yet" in output
        assert doc.count("Not measured yet.") == 1  # q3
        q1 = (tree / "tables" / "q1.md").read_text()
        assert table_rows(q1, "**mean**")[0][2:] == ["-"] * 6
        return
    q1 = (tree / "tables" / "q1.md").read_text()  # printed and kept as a file, not in the doc
    assert q1 in output and "old q1\n" in doc

    # cells against values computed here
    noisy = image_io.read_rgb(tree / "crops" / "CC" / "real" / "a.png")
    clean = image_io.read_rgb(tree / "crops" / "CC" / "mean" / "a.png")
    noisy_psnr = 10 * math.log10(1 / float(np.mean((noisy - clean) ** 2)))
    curve_a, curve_b = psnr_curve(0, 0), psnr_curve(1, 0)
    psnr_a, ssim_a = table_rows(q1, "a")
    assert psnr_a[1] == f"{noisy_psnr:.2f}"
    assert psnr_a[5] == f"{curve_a.max():.2f} ({ITERATIONS[np.argmax(curve_a)]})"
    assert psnr_a[7] == f"{curve_a[-1]:.2f}"
    assert ssim_a[5] == f"{0.6 + 0.01 * np.argmax(curve_a):.3f}" and ssim_a[6] == "-"
    psnr_b, ssim_b = table_rows(q1, "b")
    psnr_c = table_rows(q1, "c")[0]
    assert psnr_c[5:8] == ["running"] * 3
    mean_row = table_rows(q1, "**mean**")[0]
    assert mean_row[5] == f"({np.mean([curve_a.max(), curve_b.max()]):.2f}, 2 of 4)"
    header = next(line for line in q1.splitlines() if line.startswith("| image |"))
    labels = [cell.strip() for cell in header.strip("|").split("|")][8:]
    assert labels == [
        "wmv pick (iteration)",
        "wmv (tuned on PolyU) pick (iteration)",
        "biqan (resize_imagenet) pick (iteration)",
        "fixed:60 (tuned on PolyU) pick (iteration)",
    ]
    assert psnr_b[8] == f"{curve_b[6] - 0.01:.2f} (140, did not fire)"
    assert ssim_b[10] == "nan"  # the biqan pick at 130 is no saved snapshot
    assert psnr_b[11] == "not measured"
    if state == "full":
        assert psnr_a[2] == "30.50 (7.2)"
        assert psnr_a[4] == "30.50 (15)"  # the oracle sigma of the cached row
        with (tree / "tables" / "cbm3d.csv").open() as handle:
            polyu = [row for row in csv.DictReader(handle) if row["dataset"] == "PolyU"]
        tuned = max(SIGMAS, key=lambda sigma: sum(float(row[f"psnr_s{sigma}"]) for row in polyu))
        assert f"CBM3D, σ tuned on PolyU ({tuned}/255)" in header
        assert psnr_a[3] == f"{cbm3d_row('CC', 'a', 0.0)[f'psnr_s{tuned}']:.2f}"
        assert "CBM3D, σ tuned" not in doc.split("<!-- BEGIN q2 -->")[1]
        assert doc.count("Not measured yet.") == 0
        assert "warning: no block q3 in the document" in output
        cache = (tree / "tables" / "cbm3d.csv").read_text().splitlines()
        assert [line.split(",")[:2] for line in cache[1:]] == [
            ["CC", "a"],
            ["CC", "b"],
            ["CC", "c"],
            ["CC", "d"],
            ["PolyU", "p1"],
            ["PolyU", "p3"],
            ["CC", "z"],
        ]
        assert figures == [
            "q1_cc_compare_s0.png",
            "q1_cc_psnr_curves_s0.png",
            "q1_cc_psnr_curves_s1.png",
            "q1_cc_psnr_curves_s2.png",
            "q2_transfer_curves_s0.png",
        ]
    else:
        assert psnr_b[2:5] == ["not measured"] * 3
        assert "CBM3D, σ tuned on PolyU (-/255)" in header
        assert doc.count("Not measured yet.") == 1  # q3
    for name in RESULTS_BACKED:  # left alone, and no longer written
        assert f"old {name}\n" in doc and not (tree / "tables" / f"{name}.md").exists()
