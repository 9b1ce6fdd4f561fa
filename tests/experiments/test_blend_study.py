"""experiments/blend_study.py: seed means and CBM3D blends as rows, tuned on PolyU, reported on CC."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import blend_study, precision_study, scale_study
from utils import image_io, metrics, run_output

SIZE = 32
ITERATIONS = np.arange(20, 420, 20)


def write_image_run(root: Path, set_name: str, stem: str, seed: int, clean: np.ndarray) -> None:
    """Snapshots that approach `clean` and then drift (the rows of results/ and the run folder
    of devdata), with the noisy/clean inputs named in input.json."""
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)
    run_dir = root / "runs" / f"{SIZE}px" / "bf16" / f"{set_name}_s{seed}"
    image_dir = run_dir / stem
    image_dir.mkdir(parents=True)
    for name, pixels in (("noisy", noisy), ("clean", clean)):
        image_io.write_png(root / f"{stem}_{seed}_{name}.png", pixels)
    inputs = {"noisy": str(root / f"{stem}_{seed}_noisy.png")}
    inputs["clean"] = str(root / f"{stem}_{seed}_clean.png")
    (image_dir / run_output.INPUT_FILE).write_text(json.dumps(inputs))
    psnr = []
    for iteration in ITERATIONS:
        distance = abs(int(iteration) - 200) / 200 + 0.2  # closest to clean at iteration 200
        snapshot = np.clip(clean + distance * (noisy - clean), 0, 1)
        image_io.write_png(run_output.snapshot_path(image_dir, int(iteration)), snapshot)
        psnr.append(
            metrics.psnr(image_io.read_rgb(run_output.snapshot_path(image_dir, iteration)), clean)
        )
    rows_dir = root / "results" / "scale" / f"{SIZE}px" / "bf16" / f"{set_name}_s{seed}"
    rows_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"iteration": ITERATIONS, "psnr_avg": psnr})
    for window in precision_study.WINDOWS:
        table[precision_study.variance_column(window)] = np.abs(ITERATIONS - 200) + 1.0
    table.to_csv(rows_dir / f"{stem}.csv", index=False)
    images = rows_dir / precision_study.IMAGES_FILE
    row = {"stem": stem, "height": SIZE, "width": SIZE, "noisy_psnr": metrics.psnr(noisy, clean)}
    pd.DataFrame([row]).to_csv(images, mode="a", header=not images.exists(), index=False)


@pytest.fixture
def study(tmp_path, monkeypatch) -> Path:
    clean = np.random.default_rng(7).uniform(0.2, 0.8, (SIZE, SIZE, 3))
    clean = image_io.quantize(clean, 8) / 255.0
    write_image_run(tmp_path, "PolyU30", "p", 0, clean)
    for seed in (0, 1):
        write_image_run(tmp_path, "CC", "c", seed, clean)
    cbm3d_rows = tmp_path / "results" / scale_study.CBM3D_ROWS / f"{SIZE}px"
    cbm3d_rows.mkdir(parents=True)
    rows = [(dataset, stem, "20", 20.0, 30.0) for dataset, stem in (("PolyU", "p"), ("CC", "c"))]
    columns = ["dataset", "image", "sigma", "sigma_255", "psnr"]
    pd.DataFrame(rows, columns=columns).to_csv(cbm3d_rows / "cbm3d_full.csv", index=False)
    monkeypatch.setattr(blend_study, "RUN_FOLDERS", {SIZE: tmp_path / "runs"})
    return tmp_path / "results"


def read_rows(study: Path) -> pd.DataFrame:
    return blend_study.read_rows(study / blend_study.ROWS / f"{SIZE}px" / "bf16.csv")


def test_rows_blend_every_snapshot_with_cbm3d_and_average_the_seeds(study):
    assert blend_study.compute(study) == 0
    rows = read_rows(study)
    candidates = scale_study.read_runs(study)[0].iterations
    fits = rows[rows["output"] == "one fit"].groupby(["set", "seed"])["picks"]
    assert len(fits) == 3  # PolyU seed 0, CC seeds 0 and 1
    assert all(picks.tolist() == [str(iteration) for iteration in candidates] for _, picks in fits)
    assert sorted(rows[rows["set"] == "CC"]["seed"].unique()) == [0, 1, 2]  # seed 2: the mean
    last = str(ITERATIONS[-1])  # the pick of the rule "last"
    cc = rows[rows["set"] == "CC"].set_index(["output", "seed", "picks"])
    run_dir = study.parent / "runs" / f"{SIZE}px" / "bf16" / "CC_s0" / "c"
    inputs = json.loads((run_dir / run_output.INPUT_FILE).read_text())
    clean = image_io.read_rgb(inputs["clean"])
    snapshot = image_io.read_rgb(run_output.snapshot_path(run_dir, int(last)))
    one = cc.loc[("one fit", 0, last)]
    assert one["1.0"] == pytest.approx(metrics.psnr(snapshot, clean), abs=1e-3)
    cbm3d = blend_study.cbm3d_output(image_io.read_rgb(inputs["noisy"]), 20.0)
    assert one["0.0"] == pytest.approx(metrics.psnr(cbm3d, clean), abs=1e-3)
    half = metrics.psnr(0.5 * snapshot + 0.5 * cbm3d, clean)
    assert one["0.5"] == pytest.approx(half, abs=1e-3)
    assert ("seed mean", 2, f"{last};{last}") in cc.index


def test_a_retuned_rule_finds_its_rows_without_the_snapshots(study, monkeypatch):
    """Every snapshot has its row: a rule whose picks move finds one fit's rows on a machine
    without the snapshots; the seed mean of its new picks is missing there, and counted."""
    assert blend_study.compute(study) == 0
    shutil.rmtree(study.parent / "runs")
    moved = scale_study.Rule("the first candidate", lambda run: 0)
    monkeypatch.setattr(blend_study, "RULES", blend_study.RULES | {"fixed:auto": moved})
    target = study / blend_study.ROWS / f"{SIZE}px" / "bf16.csv"
    before = target.read_text()
    assert blend_study.compute(study) == 0 and target.read_text() == before
    rows = read_rows(study)
    first = str(scale_study.read_runs(study)[0].iterations[0])
    at_first = (rows["set"] == "CC") & (rows["output"] == "one fit") & (rows["picks"] == first)
    one = rows[at_first]["1.0"].mean()
    line = next(line for line in blend_study.report_lines(study) if "| fixed:auto |" in line)
    assert f"| 2 | {rows[at_first]['0.0'].mean():.2f} | {one:.2f} (" in line
    assert "- (2; 0 of 1 images)" in line


def test_rows_of_runs_whose_snapshots_are_gone_are_kept(study):
    """A new machine has the rows of results/ but not the snapshots: compute keeps the rows it
    cannot recompute, adds those of a new seed, and the seed mean of all three seeds is missing
    (seed 0's snapshots are gone); the report counts what it leaves out."""
    assert blend_study.compute(study) == 0
    target = study / blend_study.ROWS / f"{SIZE}px" / "bf16.csv"
    first = target.read_text()
    assert blend_study.compute(study) == 0 and target.read_text() == first  # nothing new
    shutil.rmtree(study.parent / "runs" / f"{SIZE}px" / "bf16" / "CC_s0")
    clean = image_io.read_rgb(study.parent / "c_1_clean.png")
    write_image_run(study.parent, "CC", "c", 2, clean)
    assert blend_study.compute(study) == 0
    rows = read_rows(study)
    cc = rows[rows["set"] == "CC"]
    assert sorted(cc[cc["output"] == "one fit"]["seed"].unique()) == [0, 1, 2]
    assert set(cc[cc["output"] == "seed mean"]["seed"]) == {2}  # seed 0's snapshots are gone
    before = pd.read_csv(io.StringIO(first), dtype={"picks": str})
    new_fit = (rows["output"] == "one fit") & (rows["seed"] == 2)
    assert rows[~new_fit].reset_index(drop=True).equals(before)
    for line in blend_study.report_lines(study)[4 : 4 + len(blend_study.RULES)]:
        assert "| 3 | " in line and "- (3; 0 of 1 images)" in line  # 3 CC runs, no mean of 3


def synthetic_rows(study: Path) -> pd.DataFrame:
    """Blend rows at every pick of the study's runs whose best weight is 0.3 on PolyU and 0.8
    on CC; the seed mean 0.5 dB up."""
    images = blend_study.image_runs(scale_study.read_runs(study), SIZE, "bf16")
    rows = {}
    for runs_of_image in images.values():
        for rule in blend_study.RULES.values():
            for output in blend_study.rule_outputs(runs_of_image, rule):
                best_weight = 0.8 if output.runs[0].set_name == "CC" else 0.3
                shift = 0.5 if output.kind == "seed mean" else 0.0
                rows[output.key] = (
                    list(output.key)
                    + [10.0]
                    + [30.0 - (weight - best_weight) ** 2 + shift for weight in blend_study.WEIGHTS]
                )
    return pd.DataFrame(list(rows.values()), columns=blend_study.COLUMNS)


def report_cells(results: Path, rows: pd.DataFrame) -> list[str]:
    """The cells of the last table row of `rows` as the blend rows of the study's size."""
    target = results / blend_study.ROWS / f"{SIZE}px" / "bf16.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(target, index=False)
    return [cell.strip() for cell in blend_study.report_lines(results)[-1].split("|")]


def test_report_tunes_the_weight_on_polyu_only(study):
    cells = report_cells(study, synthetic_rows(study))
    cbm3d, one = 30.0 - 0.8**2, 30.0 - 0.2**2
    assert cells[3:7] == ["last", "2", f"{cbm3d:.2f}", f"{one:.2f} ({one - cbm3d:+.2f})"]
    seeds = one + 0.5
    assert cells[7] == f"{seeds:.2f} ({seeds - 0.5 - cbm3d:+.2f}) (2)"
    blended = 30.0 - 0.5**2  # the weight tuned on PolyU, 0.3, not CC's 0.8
    assert cells[8:10] == ["0.3 (1)", f"{blended:.2f} ({blended - cbm3d:+.2f})"]


def test_report_tunes_the_weight_on_no_cc_folder(study):
    """CC fitted from another network (`CC_polyu1`) is CC all the same: not tuning data."""
    rows = synthetic_rows(study)
    transfer = rows[rows["set"] == "CC"].assign(set="CC_polyu1")
    assert report_cells(study, pd.concat([rows, transfer]))[8] == "0.3 (1)"


def test_report_of_one_seed_has_no_seed_mean(study):
    rows = synthetic_rows(study)
    cells = report_cells(study, rows[rows["output"] == "one fit"])
    assert cells[7] == "- (2; 0 of 1 images)" and cells[10] == "-"  # seed mean, plain and blended
    assert cells[6] != "-" and cells[9] != "-"


def test_report_without_polyu_rows_does_not_blend(study):
    rows = synthetic_rows(study)
    cells = report_cells(study, rows[rows["set"] == "CC"])
    assert cells[6] != "-" and cells[8:11] == ["-", "-", "-"]  # no weight tuned on PolyU


def test_rows_are_computed_for_a_cc_folder_still_filling(study):
    """A folder is tabled once every crop is in, but its snapshots may be gone by then: its
    rows are computed as its crops come in."""
    clean = image_io.read_rgb(study.parent / "c_1_clean.png")
    write_image_run(study.parent, "CC", "d", 0, clean)  # CC_s1 lacks d: it is still filling
    assert 1 not in {run.seed for run in scale_study.read_runs(study)}
    assert blend_study.compute(study) == 0
    rows = read_rows(study)
    assert ((rows["stem"] == "c") & (rows["seed"] == 1) & (rows["output"] == "one fit")).any()


def test_report_leaves_out_a_size_whose_cc_folders_are_still_filling(study):
    report_cells(study, synthetic_rows(study))
    assert any(line.startswith(f"| {SIZE} | bf16 |") for line in blend_study.report_lines(study))
    clean = np.random.default_rng(8).uniform(0.2, 0.8, (SIZE, SIZE, 3))
    write_image_run(study.parent, "CC_polyu1", "d", 0, clean)  # a crop CC_s0 and CC_s1 lack
    assert not any(line.startswith(f"| {SIZE} |") for line in blend_study.report_lines(study))


def test_joint_setting_is_the_best_mean_over_the_common_iterations():
    iterations = np.array([20, 40, 60])
    peak_40_at_half = np.array([[30.0] * 11, [30.0] * 5 + [31.0] + [30.0] * 5, [30.0] * 11])
    longer = (np.array([20, 40, 60, 80]), np.vstack([peak_40_at_half, np.full((1, 11), 40.0)]))
    assert blend_study.joint_setting([(iterations, peak_40_at_half), longer]) == (40, 5)


def test_report_tunes_the_stop_and_weight_for_the_blend_on_polyu(study):
    """Rows for one fit's stop and blend weight tuned together: on PolyU (every snapshot of the
    PolyU run has a row), and on CC in hindsight, which no tuning can beat (a bound)."""
    assert blend_study.compute(study) == 0
    lines = blend_study.report_lines(study)
    tuned = next(line for line in lines if "| stop and weight, tuned: fixed:" in line)
    bound = next(line for line in lines if "| stop and weight, tuned (bound): fixed:" in line)
    cells = [cell.strip() for cell in tuned.split("|")]
    assert cells[4] == "2" and cells[8].endswith("(1)")  # CC seeds 0-1, tuned on 1 PolyU run

    def blended(line: str) -> float:
        return float(line.split("|")[9].split()[0])

    assert blended(bound) >= blended(tuned)
