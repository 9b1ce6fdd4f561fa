"""experiments/scale_study.py: the per-size tables from results/ alone, with rules tuned on PolyU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import precision_study, scale_study
from utils import selection, snapshot_features

ITERATIONS = np.arange(20, 1220, 20)


def write_run(
    results: Path,
    set_name: str,
    stem: str,
    peak: int,
    top: float,
    size: int = 256,
    iterations: np.ndarray = ITERATIONS,
    dip_at: int | None = None,
    seed: int = 0,
    precision: str = "bf16",
) -> None:
    """A collected image run at `size` px, `precision`, `seed` whose PSNR peaks at `peak` with `top`
    dB; its window variances are least at the peak, with a local minimum at `dip_at` if given
    (an early plateau, where a short patience stops)."""
    run_dir = results / "scale" / f"{size}px" / precision / f"{set_name}_s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    psnr = top - 1e-5 * (iterations - peak) ** 2
    table = pd.DataFrame({"iteration": iterations, "psnr_avg": psnr})
    variances = 1e-6 + 1e-9 * np.abs(iterations - peak)
    if dip_at is not None:
        variances -= 5e-7 * np.exp(-(((iterations - dip_at) / 60.0) ** 2))
    for window in precision_study.WINDOWS:
        table[precision_study.variance_column(window)] = variances
    for index, name in enumerate(snapshot_features.FEATURE_NAMES):  # the first tells the peak
        table[name] = (
            -np.abs(iterations - peak) / 100.0 if index == 0 else np.cos(iterations * index)
        )
    table.to_csv(run_dir / f"{stem}.csv", index=False)
    images = run_dir / precision_study.IMAGES_FILE
    row = pd.DataFrame([{"stem": stem, "height": size, "width": size, "noisy_psnr": top - 4}])
    row.to_csv(images, mode="a", header=not images.exists(), index=False)


def write_cbm3d(results: Path) -> None:
    """CBM3D rows at 256 px: PolyU is best at sigma 10, CC's crop gets 33 dB there, 34 at 20."""
    rows = [
        ("PolyU", "p1", "10", 10.0, 40.0),
        ("PolyU", "p1", "20", 20.0, 39.0),
        ("CC", "c1", "10", 10.0, 33.0),
        ("CC", "c1", "20", 20.0, 34.0),
        ("CC", "c1", "blind", 7.0, 32.0),
        ("PolyU", "p2", "20", 20.0, 45.0),  # p2 has one σ so far: not part of the tuning
    ]
    folder = results / scale_study.CBM3D_ROWS / "256px"
    folder.mkdir(parents=True)
    columns = ["dataset", "image", "sigma", "sigma_255", "psnr"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "cbm3d_full.csv", index=False)


def test_rules_are_tuned_on_polyu_and_judged_on_cc(tmp_path):
    for index, peak in enumerate((400, 420, 400, 380, 400)):
        write_run(tmp_path, "PolyU30", f"p{index}", peak, 40.0)
    write_run(tmp_path, "CC", "c1", 800, 36.0)  # CC peaks later: the PolyU-tuned stop loses
    write_cbm3d(tmp_path)
    runs = scale_study.read_runs(tmp_path)
    assert {run.set_name for run in runs} == {"PolyU30", "CC"}
    sigma, count, cc = scale_study.cbm3d_tuned(tmp_path, 256)
    assert (sigma, count, cc) == (10.0, 1, {"c1": 33.0})  # tuned on PolyU, not CC's better 20
    lines = scale_study.report_lines(tmp_path)
    quality = next(line for line in lines if line.startswith("| 256 | bf16 | 0 |"))
    assert "| 36.00 | +4.00 | 33.00 (σ 10, 1 PolyU) | +3.00 |" in quality
    tuned = next(line for line in lines if "| fixed, tuned |" in line)
    assert "fixed:400" in tuned and "PolyU, 5 runs" in tuned
    gap = 36.0 - (36.0 - 1e-5 * (400 - 800) ** 2)
    assert f"| {gap:.2f} [{gap:.2f}] |" in tuned
    wmv = next(line for line in lines if "| wmv (default) |" in line)
    assert "| 0.00 [0.00] | 36.00 | +3.00 |" in wmv  # the variances are least at CC's own peak
    ranker = next(line for line in lines if "| snapshot ranker, trained |" in line)
    cells = [cell.strip() for cell in ranker.split("|")]
    assert cells[5] == "PolyU, 5 runs" and cells[-2] == "+1.00"  # it learnt feature 0's order
    assert float(cells[6].split()[0]) < 0.05  # and picks next to CC's peak


def row_cells(lines: list[str], rule: str) -> list[str]:
    """The cells of the table row of `rule`."""
    return [
        cell.strip() for cell in next(line for line in lines if f"| {rule} |" in line).split("|")
    ]


def test_a_cc_folder_is_tabled_once_every_crop_is_in(tmp_path):
    for stem in ("c1", "c2"):
        write_run(tmp_path, "CC", stem, 800, 36.0)
    write_run(tmp_path, "CC", "c1", 800, 30.0, seed=1)  # seed 1: one crop of two so far
    assert {(run.seed, run.stem) for run in scale_study.read_runs(tmp_path)} == {
        (0, "c1"),
        (0, "c2"),
    }
    lines = scale_study.report_lines(tmp_path)
    assert any(line.startswith("| 256 | bf16 | 0 | 2 | 32.00 | 36.00 |") for line in lines)
    assert lines[-1].endswith(": 256 px bf16 CC_s1 (1 of 2 crops).")
    write_run(tmp_path, "CC", "c2", 800, 30.0, seed=1)
    lines = scale_study.report_lines(tmp_path)
    assert any(line.startswith("| 256 | bf16 | 0,1 | 4 | 29.00 | 33.00 |") for line in lines)
    assert not any("Still filling" in line for line in lines)


def test_a_precision_is_tabled_once_it_has_every_cc_crop_of_its_size(tmp_path):
    for stem in ("c1", "c2"):
        write_run(tmp_path, "CC", stem, 800, 36.0)
    write_run(tmp_path, "CC", "c1", 800, 30.0, precision="fp32")  # a check filling crop by crop
    assert {run.precision for run in scale_study.read_runs(tmp_path)} == {"bf16"}
    lines = scale_study.report_lines(tmp_path)
    assert not any(line.startswith("| 256 | fp32 |") for line in lines)
    assert lines[-1].endswith(": 256 px fp32 CC_s0 (1 of 2 crops).")


def test_size_exponents_are_tuned_on_polyu_at_every_size(tmp_path, monkeypatch):
    monkeypatch.setattr(selection, "PATIENCE_EXPONENT", 0.0)  # the default: the 64 px patience
    long = np.arange(20, 3620, 20)
    write_run(tmp_path, "CC", "c1", 2400, 36.0, iterations=long, dip_at=1000)
    for index in range(scale_study.MIN_TUNING_RUNS):  # PolyU peaks at 600 at 64 px and
        stem = f"p{index}"  # 600 x 16 ** 0.5 at 256 px
        write_run(tmp_path, "PolyU20", stem, 600, 40.0, size=64, iterations=long)
        lines = scale_study.report_lines(tmp_path)
        assert not any("exponent tuned" in line for line in lines)  # too few at 256 px
        write_run(tmp_path, "PolyU30", stem, 2400, 40.0, iterations=long, dip_at=1000)
    lines = scale_study.report_lines(tmp_path)
    stop = row_cells(lines, "fixed:auto, exponent tuned")
    assert stop[4] == "600 x (pixels / 64²) ^ 0.5 (0.5-0.5 leaving one run out)"
    assert stop[5] == "PolyU, 10 runs at 64/256 px"
    assert stop[6] == "0.00 [0.00]"
    assert float(row_cells(lines, "wmv (default)")[6].split()[0]) > 1.0  # stops on the plateau
    scaled = row_cells(lines, "wmv alone, patience scaled")
    exponent = float(scaled[4].rpartition("^ ")[2].split()[0])
    assert 2 * 16**exponent > 20  # waits past the plateau: the variance falls again 500 later
    assert scaled[6] == "0.00 [0.00]"
    polyu = next(line for line in lines if line.startswith("The size-scaled rules"))
    assert "fixed:auto 64 px 40.00, 256 px 40.00 (mean 40.000); wmv alone 64 px" in polyu


def test_tuned_exponent_reports_its_range_over_leave_one_out_folds():
    psnr = np.zeros((3, len(scale_study.EXPONENTS)))
    sizes = np.array([64, 256, 256])
    psnr[0, 10] = 1.0  # the one 64 px run peaks at the 11th exponent
    psnr[1, 20] = 3.0  # at 256 px one run peaks high at the 21st,
    psnr[2, 30] = 2.0  # the other lower at the 31st
    tuned = scale_study.tuned_exponent(psnr, sizes)
    grid = scale_study.EXPONENTS
    assert tuned.best == grid[20]
    # without run 1 run 2 wins; without run 0 or run 2, run 1 still does
    assert (tuned.least, tuned.largest) == (grid[20], grid[30])


def test_hindsight_bounds_are_tuned_on_cc_and_marked(tmp_path):
    """The (bound) rows fit the rule families to the CC runs themselves: a fixed stop at CC's
    own peak, where the PolyU-tuned one loses; they are labelled as tuned on CC."""
    for index in range(scale_study.MIN_TUNING_RUNS):
        write_run(tmp_path, "PolyU30", f"p{index}", 400, 40.0)
    write_run(tmp_path, "CC", "c1", 800, 36.0)
    write_run(tmp_path, "CC", "c2", 820, 35.0)
    lines = scale_study.report_lines(tmp_path)
    assert float(row_cells(lines, "fixed, tuned")[6].split()[0]) > 1.0
    bound = row_cells(lines, "fixed, tuned (bound)")
    assert bound[4] in ("fixed:800", "fixed:820") and bound[5] == "CC itself, in hindsight, 2 runs"
    assert float(bound[6].split()[0]) < 0.01
    assert row_cells(lines, "wmv, tuned (bound)")[5] == "CC itself, in hindsight, 2 runs"


def test_only_polyu_sets_fitted_from_scratch_tune(tmp_path):
    """A PolyU chain (`PolyU_<init>`, started from another network, stopped early) is not
    tuning data, nor is CC started from a PolyU network."""
    assert scale_study.is_tuning_set("PolyU30") and scale_study.is_tuning_set("PolyUnoisy4")
    assert not scale_study.is_tuning_set("PolyU_polyu_chain8_short")
    assert not scale_study.is_tuning_set("CC_polyu1")
    for index in range(scale_study.MIN_TUNING_RUNS):
        write_run(tmp_path, "PolyU30", f"p{index}", 400, 40.0)
        write_run(tmp_path, "PolyU_previous", f"p{index}", 200, 40.0)
    tuning = scale_study.tuning_runs(scale_study.read_runs(tmp_path), 256, "bf16")
    assert {run.set_name for run in tuning} == {"PolyU30"}


def bf16_tuned_on(results: Path) -> str | None:
    """The `tuned on` cell of the bf16 row `fixed, tuned` at 256 px, or None without one."""
    lines = scale_study.report_lines(results)
    row = next((line for line in lines if line.startswith("| 256 | bf16 | fixed, tuned |")), None)
    return None if row is None else row.split("|")[5].strip()


@pytest.mark.parametrize(("last_fp32_top", "pooled"), [(36.0, True), (37.0, False)])
def test_fp32_polyu_runs_tune_beside_bf16_once_section_8s_check_passes(
    tmp_path, last_fp32_top, pooled
):
    """fp32 stands in for bf16 at 256 px (the crops without a bf16 run) only when all the
    check's CC pairs are in and within its bounds; a crop fitted in both tunes once, in bf16."""
    check = precision_study.POOLING_CHECK
    for index in range(3):  # 3 bf16 runs tune nothing alone (MIN_TUNING_RUNS)
        write_run(tmp_path, "PolyU30", f"p{index}", 400, 40.0)
        write_run(tmp_path, "PolyU30", f"q{index}", 400, 40.0, precision="fp32")
    write_run(tmp_path, "PolyU30", "p0", 400, 40.0, precision="fp32")
    for index in range(check.pairs - 1):
        for precision in ("bf16", "fp32"):
            write_run(tmp_path, "CC", f"c{index}", 800, 36.0, precision=precision)
    write_run(tmp_path, "CC", "last", 800, 36.0)
    assert bf16_tuned_on(tmp_path) is None  # 4 of 5 pairs: pending
    write_run(tmp_path, "CC", "last", 800, last_fp32_top, precision="fp32")
    expected = "PolyU, 6 runs (3 bf16, 3 fp32)" if pooled else None
    assert bf16_tuned_on(tmp_path) == expected
    runs = scale_study.read_runs(tmp_path)
    tuning = scale_study.tuning_runs(runs, 256, "bf16", pooled=True)
    assert sorted((run.stem, run.precision) for run in tuning) == [
        ("p0", "bf16"), ("p1", "bf16"), ("p2", "bf16"),
        ("q0", "fp32"), ("q1", "fp32"), ("q2", "fp32"),
    ]  # fmt: skip
    assert scale_study.tuning_runs(runs, 128, "bf16", pooled=True) == []  # the check's size only


def test_cc_groups_hold_the_cc_sets_of_each_size_and_precision(tmp_path):
    """CC from scratch per size and precision, CC from another network only when asked; PolyU
    never."""
    write_run(tmp_path, "CC", "c1", 800, 36.0, size=128)
    write_run(tmp_path, "CC", "c1", 800, 36.0)
    write_run(tmp_path, "CC", "c2", 800, 36.0)
    write_run(tmp_path, "CC_polyu1", "c1", 600, 36.0)
    write_run(tmp_path, "PolyU30", "p1", 400, 40.0)
    runs = scale_study.read_all_runs(tmp_path)
    groups = scale_study.cc_groups(runs)
    assert list(groups) == [(128, "bf16", "CC"), (256, "bf16", "CC")]
    assert [run.stem for run in groups[(256, "bf16", "CC")]] == ["c1", "c2"]
    with_inits = scale_study.cc_groups(runs, inits=True)
    assert list(with_inits)[-1] == (256, "bf16", "CC_polyu1")
    assert len(with_inits) == 3


def test_wmv_stopped_by_fixed_auto_picks_nothing_after_the_stop(tmp_path):
    write_run(tmp_path, "CC", "c1", 1000, 36.0, size=64)  # least variance at 1000
    run = scale_study.read_runs(tmp_path)[0]
    stop = int(run.iterations[scale_study.stop_at(run, 0.0)])  # the 64 px stop, 600
    assert run.iterations[scale_study.wmv_at(run, 0.0)] > stop  # WMV alone waits for 1000
    assert run.iterations[scale_study.wmv_by_stop(run, 0.0, 0.0)] <= stop
    write_run(tmp_path, "CC", "c2", 400, 36.0, size=64)  # WMV fires before the stop: its pick
    early = next(run for run in scale_study.read_runs(tmp_path) if run.stem == "c2")
    assert scale_study.wmv_by_stop(early, 0.0, 0.0) == scale_study.wmv_at(early, 0.0)
