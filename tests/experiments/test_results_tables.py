"""The results-backed tables of sections 1, 2 and 4 and the list of committed runs
(experiments/per_image.py, transfer_study.py, seed_spread.py, inventory.py), from results/
alone."""

from __future__ import annotations

import math

import numpy as np

from experiments import inventory, online_study, per_image, seed_spread, transfer_study
from tests.experiments.test_scale_study import ITERATIONS, row_cells, write_cbm3d, write_run
from utils import method, selection


def cells_of(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_seed_table_lists_each_seeds_best_and_their_spread(tmp_path):
    for seed, (peak, top) in enumerate(((800, 36.0), (700, 35.0))):
        write_run(tmp_path, "CC", "c1", peak, top, seed=seed)
    write_run(tmp_path, "CC", "c9", 800, 30.0, size=128)  # one seed at 128 px: no spread to show
    write_run(tmp_path, "PolyU30", "p1", 400, 40.0, seed=1)
    rows = [cells_of(line) for line in seed_spread.report_lines(tmp_path) if "| 256 |" in line]
    assert [row[2] for row in rows] == ["c1", "**mean over crops**"]
    assert rows[0][3] == "s0 36.00 (800), s1 35.00 (700)"
    assert rows[0][4:6] == ["35.50 ± 0.71 (n=2)", "1.00"]
    assert rows[1][4:6] == ["sd 0.71", "1.00"]
    assert not any("| 128 |" in line for line in seed_spread.report_lines(tmp_path))


def test_a_seed_still_filling_is_not_in_the_seed_table(tmp_path):
    for stem in ("c1", "c2"):
        write_run(tmp_path, "CC", stem, 800, 36.0)
    write_run(tmp_path, "CC", "c1", 800, 35.0, seed=1)
    assert len(seed_spread.report_lines(tmp_path)) == 4  # the header only


def test_inventory_lists_every_committed_run_folder(tmp_path):
    write_run(tmp_path, "CC", "c1", 800, 36.0)
    write_run(tmp_path, "CC", "c2", 800, 36.0)
    write_run(tmp_path, "CC_polyu1", "c1", 400, 36.0, seed=2)
    rows = [cells_of(line) for line in inventory.report_lines(tmp_path)[2:]]
    assert rows == [
        ["scale/256px/bf16/CC_polyu1_s2", "256", "bf16", "CC", "polyu1", "2", "1", "1200"],
        ["scale/256px/bf16/CC_s0", "256", "bf16", "CC", "scratch", "0", "2", "1200"],
    ]


def test_per_image_table_puts_each_crop_beside_cbm3d_and_the_paper(tmp_path):
    write_run(tmp_path, "CC", "c1", 800, 36.0)
    write_run(tmp_path, "CC", "c1", 700, 30.0, seed=1)  # section 9 averages seeds; this is seed 0
    write_cbm3d(tmp_path)  # PolyU is best at σ 10: CC's c1 gets 33 dB there, 34 at its own 20
    lines = per_image.report_lines(tmp_path)
    row = cells_of(next(line for line in lines if "| c1 |" in line))
    last = 36.0 - 1e-5 * (ITERATIONS[-1] - 800) ** 2
    assert row[3:9] == ["32.00", "32.00 (7.0)", "33.00", "34.00 (20)", "36.00 (800)", f"{last:.2f}"]
    assert row[9] == "36.00 (800)" and row[-1] == "-"  # WMV's variances are least at the peak
    mean = cells_of(next(line for line in lines if "**mean**" in line))
    assert mean[5] == "**33.00** (σ 10)" and mean[-1] == "-"
    published = cells_of(lines[-1])
    assert published[:4] == ["512", "paper", "published mean, 15 CC images", "33.41"]
    assert published[7] == "37.83"


def test_transfer_counts_iterations_to_the_scratch_peak(tmp_path):
    write_run(tmp_path, "CC", "c1", 800, 36.0)
    write_run(tmp_path, "CC", "c2", 800, 36.0)
    write_run(tmp_path, "CC_polyu1", "c1", 400, 36.5)  # earlier and higher: reached sooner
    write_run(tmp_path, "CC_polyu1", "c2", 400, 35.0)  # lower: never reached
    lines = transfer_study.report_lines(tmp_path)
    cells = row_cells(lines, "polyu1")
    scratch_reach = 800 - 100  # 36 - 1e-5 (it - 800)^2 >= 35.9 from 800 - 100
    init_reach = int(ITERATIONS[selection.START_INDEX])  # above 35.9 from 156: the first candidate
    assert cells[4:8] == ["2", "1/2", f"{scratch_reach}", f"{(init_reach + 1200) / 2:.0f}"]
    saving = 1 - (init_reach + 1200) / (2 * scratch_reach)
    assert cells[8] == f"{saving:+.0%}" and cells[9] == "-0.25" and cells[10] == "400"


def test_a_previous_chain_leaves_out_its_first_image(tmp_path):
    """`previous` chains a folder's crops in name order: the first one, fitted from scratch,
    says nothing about transfer and is not counted."""
    for stem in ("c1", "c2"):
        write_run(tmp_path, "CC", stem, 800, 36.0)
        write_run(tmp_path, "CC_previous", stem, 800 if stem == "c1" else 400, 36.5)
    cells = row_cells(transfer_study.report_lines(tmp_path), "previous")
    assert cells[4:6] == ["1", "1/1"] and cells[10] == "400"


def test_online_table_replays_the_shipped_stops(tmp_path):
    """WMV stops where its patience runs out after the variance minimum (the crop's peak here),
    or at fixed:auto's scaled iteration at the latest, where fixed:auto stops."""
    write_run(tmp_path, "CC", "c1", 400, 36.0, size=64)
    write_run(tmp_path, "CC", "c2", int(ITERATIONS[-1]), 36.0, size=64)  # peaks at the end
    rows = [cells_of(line) for line in online_study.report_lines(tmp_path) if "| 64 |" in line]
    wmv, fixed = rows
    patience_end = 400 + 20 * selection.scaled_patience(64, 64)
    stop = (patience_end + 600) / 2
    assert wmv[8:12] == ["wmv (default)", "2/2", f"{stop:.0f} [{patience_end}, 600]",
                         f"{1200 / stop:.2f}x"]  # fmt: skip
    lost = 1e-5 * (int(ITERATIONS[-1]) - 600) ** 2  # c2 picked at 600, its peak at the end
    assert wmv[-1] == f"{-lost / 2:+.2f}"  # c1 picked at its peak
    assert fixed[8:12] == ["fixed:auto", "2/2", "600 [600, 600]", "2.00x"]


def test_long_runs_are_replayed_whole_as_denoise_runs_to_the_stop(tmp_path):
    """A 768 px run of 7000 iterations: denoise.py's auto --num_iter runs past 3000 to the
    default rule's latest stop, so one pair of rows replays the whole run; still rising at
    fixed:auto's stop (a snapshot at or after 4839 with the stop exponent of 0.42), both rules
    stop there."""
    long = np.arange(20, 7020, 20)
    write_run(tmp_path, "CC", "c1", 6990, 36.0, size=768, iterations=long)
    rows = [cells_of(line) for line in online_study.report_lines(tmp_path) if "| 768 |" in line]
    assert [row[2] for row in rows] == ["scratch"] * 2
    stop = math.ceil(selection.scaled_stop(768, 768) / 20) * 20
    assert method.NUM_ITER < stop < 7000
    for row in rows:
        assert row[5] == "7000" and row[9:11] == ["1/1", f"{stop} [{stop}, {stop}]"]
