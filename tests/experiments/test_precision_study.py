"""experiments/precision_study.py: per-iteration rows collected from run folders, and the paired
fp32/bf16 table regenerated from results/ alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import run_BDN
from experiments import precision_study
from tests.conftest import make_pair
from utils import image_io, run_output, selection

TINY = ["--input_depth", "8", "--channels", "8", "--num_scales", "2", "--gpu_id", "cpu"]
TINY += ["--num_iter", "160", "--save_iter", "10", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two 64x64 images fitted in fp32 and bf16 (16 snapshots each) in the study's layout
    (under a 32px folder: the label is not read here)."""
    root = tmp_path_factory.mktemp("precision")
    for stem, seed in (("a", 1), ("b", 2)):
        make_pair(root / "data", stem, seed=seed)
    for precision in ("fp32", "bf16"):
        argv = ["--dataset_real_path", str(root / "data" / "real"), "--dataset_mean_path"]
        argv += [str(root / "data" / "mean"), "--output_path"]
        argv += [str(root / "runs" / "32px" / precision / "X_s0"), "--precision", precision]
        assert run_BDN.main(run_BDN.parse_args(argv + TINY)) == 0
    return root


def test_collected_rows_replay_test_biqans_picks(runs):
    results = runs / "results"
    assert precision_study.collect(runs / "runs", results) == 0
    run_dir = runs / "runs" / "32px" / "bf16" / "X_s0"
    table = pd.read_csv(results / "32px" / "bf16" / "X_s0" / "a.csv")
    metrics = run_output.read_metrics(run_dir / "a")
    assert np.array_equal(table["iteration"], metrics.iteration)
    assert np.allclose(table["psnr_avg"], metrics.psnr_avg, atol=1e-4)
    snapshots = [image_io.read_rgb(path) for path in metrics.snapshot_paths()]
    outcome = precision_study.image_outcomes(table, *snapshots[0].shape[:2])
    candidates = metrics.iteration[selection.START_INDEX :]
    offline = selection.apply_selectors(
        [selection.DEFAULT_SELECTOR, selection.AUTO_STOP, selection.Selector("last")],
        candidates,
        None,
        lambda index: snapshots[selection.START_INDEX + index],
        selection.DEFAULT_WMV,  # test_BIQAN.py's: the patience scaled to the size
    )
    psnr = metrics.psnr_avg[selection.START_INDEX :]
    for rule, label in (("wmv", "wmv"), ("fixed:auto", "fixed:auto"), ("last", "last")):
        assert outcome[rule] == pytest.approx(psnr[offline.picks[label]], abs=1e-4), rule
    assert outcome["best"] == pytest.approx(psnr.max(), abs=1e-4)
    assert precision_study.collect(runs / "runs", results) == 0  # nothing new: nothing rewritten


def test_the_wmv_outcome_is_the_default_rule_with_its_patience_scaled_to_the_size():
    """Window variances that fall, rise for 3 snapshots, fall lower to a minimum at candidate
    30, then rise: the 64 px patience (2 snapshots) fires on the first rise and picks candidate
    9, the 256 px one (26) waits and picks candidate 30."""
    window, start = selection.DEFAULT_WMV.window, selection.START_INDEX
    variances = np.concatenate([np.linspace(1.0, 0.5, start + 31), np.linspace(0.6, 1.0, 50)])
    variances[start + 10 : start + 13] = 2.0
    variances[: start + window - 1] = np.nan
    table = pd.DataFrame(
        {
            "iteration": 20 * np.arange(1, len(variances) + 1),
            "psnr_avg": np.arange(len(variances)) - start,  # the candidate's index, in dB
            precision_study.variance_column(window): variances,
        }
    )
    assert selection.scaled_patience(64, 64) == 2 and selection.scaled_patience(256, 256) == 26
    assert precision_study.image_outcomes(table, 64, 64)["wmv"] == 9
    assert precision_study.image_outcomes(table, 256, 256)["wmv"] == 30


def test_collect_adds_to_the_images_table_of_an_earlier_machine(runs, tmp_path):
    """A rerun folder with some of the images (devdata lost, results kept) keeps the others."""
    out_dir = tmp_path / "32px" / "bf16" / "X_s0"
    out_dir.mkdir(parents=True)
    earlier = "stem,height,width,noisy_psnr\n0_earlier,32,32,20.0\na,32,32,1.0\n"
    (out_dir / precision_study.IMAGES_FILE).write_text(earlier)
    precision_study.collect(runs / "runs", tmp_path)
    images = pd.read_csv(out_dir / precision_study.IMAGES_FILE)
    assert list(images["stem"]) == ["0_earlier", "a", "b"]
    assert images.set_index("stem").loc["a", "noisy_psnr"] != 1.0  # the run's own row wins


def test_report_pairs_the_precisions(runs):
    results = runs / "results"
    precision_study.collect(runs / "runs", results)
    lines = precision_study.report_lines(results)
    row = next(line for line in lines if line.startswith("| bf16 - fp32 | 32 | X (seed 0) | 2 |"))
    table = precision_study.outcomes(results)
    fp32 = table[table.precision == "fp32"].set_index("stem")["best"]
    bf16 = table[table.precision == "bf16"].set_index("stem")["best"]
    assert row.split("|")[5].strip().startswith(f"{(bf16 - fp32).mean():+.2f}")


def test_report_pairs_runs_of_the_scale_study_beside_its_own(runs, tmp_path):
    """A crop fitted in fp32 by the scale study pairs with its bf16 run here (the check at 256
    px); a sibling folder that is not a study of DIP_STUDIES is not read."""
    collected = runs / "results"
    precision_study.collect(runs / "runs", collected)
    for study, precision in (("precision", "bf16"), ("scale", "fp32"), ("other", "fp32")):
        source = collected / "32px" / precision / "X_s0"
        shutil.copytree(source, tmp_path / study / "32px" / precision / "X_s0")
    assert precision_study.study_folders(tmp_path / "precision") == [
        tmp_path / "precision",
        tmp_path / "scale",
    ]
    lines = precision_study.report_lines(tmp_path / "precision")
    assert any(line.startswith("| bf16 - fp32 | 32 | X (seed 0) | 2 |") for line in lines)
    shutil.rmtree(tmp_path / "scale")
    lines = precision_study.report_lines(tmp_path / "precision")
    assert not any(line.startswith("| bf16 - fp32 |") for line in lines)


def test_seed_differences_pair_each_seed_with_seed_0():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.3), (2, -0.1)):
        for stem, base in (("a", 30.0), ("b", 32.0)):
            outcome = {rule: base + shift for rule in precision_study.RULES}
            rows.append(
                {"size": 64, "precision": "fp32", "set": "CC", "seed": seed, "stem": stem}
                | outcome
                | {"best_iteration": 600 + 20 * seed}
            )
    transfer = [row | {"set": "CC_polyu1", "best": 0.0} for row in rows]  # not a yardstick
    paired = precision_study.seed_differences(pd.DataFrame(rows + transfer))
    assert sorted(paired["seed"]) == [1, 1, 2, 2]
    assert paired.set_index(["seed", "stem"])["best"].round(6).to_dict() == {
        (1, "a"): 0.3,
        (1, "b"): 0.3,
        (2, "a"): -0.1,
        (2, "b"): -0.1,
    }
    assert set(paired["best_iteration"]) == {20, 40}


def test_seed_means_average_each_image_over_the_seeds_both_precisions_have():
    rows = []
    bests = {("fp32", 0): 40.0, ("fp32", 1): 41.0, ("fp32", 2): 42.0, ("bf16", 0): 39.0}
    bests |= {("bf16", 1): 40.5}  # bf16 lacks seed 2: fp32's seed 2 must not count
    for (precision, seed), best in bests.items():
        rows.append(
            {"size": 64, "precision": precision, "set": "CC", "seed": seed, "stem": "a"}
            | {rule: best for rule in precision_study.RULES}
            | {"best_iteration": 600}
        )
    one_seed = {"size": 64, "set": "CC", "seed": 0, "stem": "b", "best_iteration": 600}
    rows += [
        one_seed | {"precision": name} | dict.fromkeys(precision_study.RULES, 30.0)
        for name in ("fp32", "bf16")
    ]
    summary = precision_study.seed_means(pd.DataFrame(rows), "bf16")
    assert list(summary.index) == [(64, "CC", "a")]  # b has one seed: no per-image mean
    row = summary.iloc[0]
    assert row[("fp32", "mean")] == 40.5 and row[("bf16", "mean")] == 39.75
    assert row[("difference", "")] == -0.75
    lines = precision_study.seed_mean_rows(pd.DataFrame(rows), "bf16")
    assert lines[-1] == "| 64 | CC | a | 2 | 40.50 [40.00, 41.00] | 39.75 [39.00, 40.50] | -0.75 |"


def check_pairs(bests: list[float], iteration: int = 100) -> pd.DataFrame:
    """`check_pairs`-shaped rows: one CC crop at 256 px per best-PSNR difference (dB)."""
    return pd.DataFrame(
        {"size": 256, "set": "CC", "seed": 0, "stem": f"c{index}", "best": best}
        | {"best_iteration": iteration}
        for index, best in enumerate(bests)
    )


@pytest.mark.parametrize(
    ("bests", "iteration", "verdict"),
    [
        ([-0.06, 0.02], 100, "2 of 5 pairs in; mean best -0.02 dB"),
        ([-0.05, 0.02, -0.1, 0.0, 0.05], 100, ": passed:"),
        ([0.2, 0.2, 0.2, 0.1, 0.1], 100, "failed (mean best beyond ±0.10 dB)"),
        ([-0.4, 0.1, 0.1, 0.1, 0.0], 100, "failed (a pair below -0.30 dB)"),
        ([0.0] * 5, -250, "failed (mean best iteration beyond ±200)"),
        ([-0.4, -0.4, 0.0, 0.0, 0.0], 300, "below -0.30 dB; mean best iteration beyond ±200)"),
    ],
)
def test_pooling_verdict_applies_each_bound_of_the_check_set_down(bests, iteration, verdict):
    paired = check_pairs(bests, iteration)
    line = precision_study.pooling_verdict(paired)
    assert verdict in line
    assert line.endswith(": pending.") == (len(bests) < precision_study.POOLING_CHECK.pairs)
    assert precision_study.pooling_passed(paired) == (": passed:" in line)


def outcome_rows(bf16_bests: list[float], size: int = 256) -> pd.DataFrame:
    """`outcomes`-shaped rows: CC crops at `size` px fitted in fp32 (best 40 dB at 1000) and in
    bf16 (one best per crop, at 1100)."""
    rows = [
        {"size": size, "precision": precision, "set": "CC", "seed": 0, "stem": f"c{index}"}
        | {"best": best if precision == "bf16" else 40.0}
        | {"best_iteration": 1100 if precision == "bf16" else 1000}
        | {rule: 39.0 for rule in precision_study.RULES[1:]}
        for index, best in enumerate(bf16_bests)
        for precision in ("fp32", "bf16")
    ]
    return pd.DataFrame(rows)


def test_the_check_counts_only_its_size_and_set():
    other_size = outcome_rows([40.5] * 5, size=64)
    line = precision_study.pooling_verdict(precision_study.check_pairs(other_size))
    assert line.endswith("0 of 5 pairs in: pending.")
    assert precision_study.check_pairs(pd.DataFrame()).empty
    mixed = pd.concat([other_size, outcome_rows([40.0] * 5)])
    line = precision_study.pooling_verdict(precision_study.check_pairs(mixed))
    assert ": 5 of 5 pairs in; mean best +0.00 dB" in line


def test_the_pooling_action_exits_0_only_where_the_check_passed(tmp_path, monkeypatch, capsys):
    """`precision_study pooling` (what scale_runs.sh's polyu256 list asks): the verdict line,
    exit status 0 once all the pairs are in and within bounds, 1 while pending or failed."""
    args = precision_study.parse_args(["pooling", "--results", str(tmp_path)])
    assert precision_study.main(args) == 1
    assert capsys.readouterr().out.endswith("0 of 5 pairs in: pending.\n")
    for bests, status in [([39.95] * 4, 1), ([39.95] * 5, 0), ([39.95] * 4 + [39.5], 1)]:
        table = outcome_rows(bests)
        monkeypatch.setattr(precision_study, "outcomes", lambda results, table=table: table)
        assert precision_study.main(args) == status
        assert ("passed" in capsys.readouterr().out) == (status == 0)
    monkeypatch.setattr(precision_study, "outcomes", lambda results: outcome_rows([39.95] * 5, 64))
    assert precision_study.main(args) == 1  # pairs of another size do not count
