"""utils/biqan/report.py: selection rows, file names and the Denoised_PSNR.txt summary."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from utils import selection
from utils.biqan import report as biqan_report


def chosen(picks: dict[str, int], fired: bool = True) -> selection.ImageSelection:
    wmv = selection.WmvResult(
        pick_index=picks.get("wmv", 0),
        variances=np.zeros(4),
        fired=fired,
        stop_index=3 if fired else None,
    )
    return selection.ImageSelection(
        picks=picks, distributions=None, wmv=wmv if "wmv" in picks else None
    )


def test_pick_file_names():
    assert biqan_report.pick_file_name("img1", "biqan") == "img1_BIQAN.png"
    assert biqan_report.pick_file_name("img1", "fixed:500") == "img1_fixed500.png"
    assert biqan_report.pick_file_name("img1", "wmv") == "img1_wmv.png"


def test_selection_rows_with_and_without_reference():
    iterations = np.array([20, 40, 60, 80])
    psnr = np.array([30.0, 32.5, 31.0, 29.0])
    rows = biqan_report.selection_rows(
        "a", iterations, psnr, chosen({"biqan": 2, "wmv": 1}, fired=False)
    )
    assert rows[0] == {
        "image": "a",
        "selector": "biqan",
        "picked_iteration": 60,
        "picked_psnr": 31.0,
        "best_iteration": 40,
        "best_psnr": 32.5,
        "loss_db": 1.5,
        "note": "",
    }
    assert rows[1]["loss_db"] == 0.0 and "did not fire" in rows[1]["note"]
    blind = biqan_report.selection_rows("b", iterations, None, chosen({"last": 3}))
    assert blind[0]["picked_iteration"] == 80 and blind[0]["best_iteration"] == ""
    assert math.isnan(blind[0]["loss_db"])


def test_a_fixed_pick_after_the_runs_end_is_noted():
    iterations = np.array([20, 40, 60, 80])
    selectors = [selection.parse_selector(text) for text in ("fixed:40", "fixed:600", "fixed:auto")]
    picked = selection.apply_selectors(
        selectors, iterations, None, lambda index: np.zeros((16, 16, 3)), selection.TUNED_WMV
    )
    rows = biqan_report.selection_rows("a", iterations, None, picked)
    assert rows[0]["note"] == ""
    assert rows[1]["picked_iteration"] == 80 and "ends before" in rows[1]["note"]
    assert selection.scaled_stop(16, 16) > 80  # auto stops after the last snapshot as well
    assert rows[2]["picked_iteration"] == 80 and "ends before" in rows[2]["note"]
    long_run = np.arange(20, 1201, 20)
    picked = selection.apply_selectors(
        [selection.AUTO_STOP],
        long_run,
        None,
        lambda index: np.zeros((64, 64, 3)),
        selection.TUNED_WMV,
    )
    (row,) = biqan_report.selection_rows("b", long_run, None, picked)
    assert row["picked_iteration"] == 600 and row["note"] == ""


def test_summary_ends_with_mean_gap_per_selector(tmp_path: Path):
    iterations = np.array([20, 40, 60, 80])
    rows = (
        biqan_report.selection_rows(
            "a", iterations, np.array([30.0, 32.5, 31.0, 29.0]), chosen({"biqan": 2, "last": 3})
        )
        + biqan_report.selection_rows(
            "b", iterations, np.array([30.0, 31.0, 32.0, 33.0]), chosen({"biqan": 3, "last": 3})
        )
        + biqan_report.selection_rows("c", iterations, None, chosen({"biqan": 0, "last": 3}))
    )
    lines = biqan_report.write_summary(tmp_path, rows, ["a: ...", "b: ...", "c: ..."], "biqan")
    assert lines[3] == "Mean best PSNR: 32.75 dB"
    assert lines[4] == "Mean denoised PSNR (BIQAN): 32.00 dB"
    assert lines[5] == "Mean gap to the true best: biqan 0.75 dB, last 1.75 dB"
    assert (tmp_path / "Denoised_PSNR.txt").read_text().splitlines() == lines
    with open(tmp_path / "selection.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6 and table[4]["picked_psnr"] == "" and table[0]["loss_db"] == "1.5000"
    blind_only = biqan_report.write_summary(tmp_path, rows[4:], ["c: ..."], "biqan")
    assert blind_only[-1] == "Mean gap to the true best: n/a (no image has a reference)"


def test_summary_shows_each_selectors_gain_over_the_noisy_input(tmp_path: Path):
    iterations = np.array([20, 40, 60, 80])
    rows = (
        biqan_report.selection_rows(
            "a", iterations, np.array([30.0, 32.5, 31.0, 29.0]), chosen({"biqan": 0, "wmv": 1})
        )
        + biqan_report.selection_rows(
            "b", iterations, np.array([30.0, 31.0, 32.0, 33.0]), chosen({"biqan": 0, "wmv": 3})
        )
        + biqan_report.selection_rows("c", iterations, None, chosen({"biqan": 0, "wmv": 3}))
    )
    noisy = {"a": 29.0, "b": 30.0, "c": float("nan")}
    lines = biqan_report.write_summary(tmp_path, rows, ["a", "b", "c"], "biqan", noisy)
    assert lines[5:] == [
        "Mean noisy input PSNR: 29.50 dB",
        "Mean picked PSNR (gain over the noisy input): biqan 30.00 dB (+0.50), "
        "wmv 32.75 dB (+3.25)",
        "Mean gap to the true best: biqan 2.75 dB, wmv 0.00 dB",
    ]
    without_noisy = biqan_report.write_summary(
        tmp_path, rows, ["a", "b", "c"], "biqan", {"a": 29.0, "b": float("nan")}
    )
    assert not any("noisy" in line for line in without_noisy)


def test_validation_report_files(tmp_path: Path):
    distributions = np.eye(10)[[2, 3, 4, 4, 3, 2]]
    report = biqan_report.write_validation_report(
        tmp_path,
        [f"{image}/{n:05d}.png" for image in "ab" for n in (20, 40, 60)],
        ["a"] * 3 + ["b"] * 3,
        distributions,
        np.array([30.0, 31, 32, 30, 31, 32]),
    )
    assert report.per_image["a"] == pytest.approx((1.0, 1.0))
    assert report.per_image["b"] == pytest.approx((-1.0, -1.0))
    with open(tmp_path / "validation_correlation.csv", newline="") as handle:
        assert [row["image"] for row in csv.DictReader(handle)] == [
            "all snapshots",
            "a",
            "b",
            "mean within image",
        ]
    with open(tmp_path / "validation_scores.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["predicted_mean"] == "3.0000"
