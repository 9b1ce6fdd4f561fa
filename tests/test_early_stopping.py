"""Online early stopping in run_BDN.py (wmv, biqan) and the one-command denoise.py.

The online biqan rule with a real checkpoint, whose pick must be the best-scored snapshot, is
tests/test_pick_follows_model.py."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")

import denoise  # noqa: E402
import run_BDN  # noqa: E402
import test_BIQAN  # noqa: E402
from models.skip import SkipConfig  # noqa: E402
from tests.conftest import make_pair  # noqa: E402
from utils import early_stopping, image_io, method, selection  # noqa: E402
from utils.dip import planning  # noqa: E402
from utils.early_stopping import from_iterations  # noqa: E402
from utils.method import BestScoreRule, FixedRule, RuleOptions, WmvRule, replay  # noqa: E402

FAST = ["--input_depth", "8", "--channels", "16", "--save_iter", "10", "--gpu_id", "cpu", "--quiet"]


def bdn_args(folder: Path, *extra: str, clean: bool = True) -> list[str]:
    """run_BDN.py flags for the pairs of `folder` (real/, mean/ unless not `clean`) into
    `folder`/run, fast settings, then `extra`."""
    reference = ["--dataset_mean_path", str(folder / "mean")] if clean else []
    real = ["--dataset_real_path", str(folder / "real"), *reference]
    return [*real, "--output_path", str(folder / "run"), *FAST, *extra]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_online_wmv_equals_the_offline_rule_on_arrays():
    rng = np.random.default_rng(0)
    snapshots = [rng.random((6, 6, 3)) * (1 + abs(index - 12)) / 10 for index in range(40)]
    offline = selection.windowed_moving_variance(snapshots, window=3, patience=4)
    stopper = WmvRule(RuleOptions(window=3, patience=4))
    for index, snapshot in enumerate(snapshots):
        stopper.push((index + 1) * 10, snapshot)
        if stopper.fired:
            break
    assert offline.fired and stopper.fired
    assert stopper.pick_iteration == (offline.pick_index + 1) * 10 and index == offline.stop_index


def test_biqan_stopper_waits_patience_snapshots_and_keeps_the_best():
    scores = iter([3.0, 4.0, 5.0, 4.5, 4.9, 5.0, 4.0, 6.0])
    stopper = BestScoreRule(RuleOptions(patience=3, score=lambda snapshot: next(scores)))
    fired_at = None
    for iteration in range(10, 90, 10):
        stopper.push(iteration, np.zeros((2, 2)))
        if stopper.fired:
            fired_at = iteration
            break
    assert fired_at == 60 and stopper.pick_iteration == 30


def test_biqan_stopper_never_picks_a_skipped_snapshot_but_scores_it():
    seen = []
    scores = [9.0, 8.0, 3.0, 5.0, 4.0, 4.5, 4.9]

    def score(snapshot: np.ndarray) -> float:
        seen.append(float(snapshot[0, 0]))
        return scores[len(seen) - 1]

    stopper = BestScoreRule(RuleOptions(patience=3, score=score, skip=2))
    fired_at = replay(stopper, ((10 * (i + 1), np.full((2, 2), i)) for i in range(len(scores))))
    assert fired_at == 70 and stopper.pick_iteration == 40 and seen == list(range(7))


@pytest.fixture
def run_with_wmv(tmp_path):
    make_pair(tmp_path, "a", seed=1)
    make_pair(tmp_path, "b", height=64, width=96, seed=2)
    output = tmp_path / "run"
    args = run_BDN.parse_args(
        bdn_args(
            tmp_path,
            "--num_iter",
            "300",
            "--exp_weight",
            "0",
            "--early_stop",
            "wmv",
            "--wmv_window",
            "30",
            "--patience",
            "20",
        )
    )
    assert run_BDN.main(args) == 0
    return output


def test_online_wmv_stop_matches_test_biqan_offline_wmv(run_with_wmv, tmp_path):
    summary = read_csv(run_with_wmv / "summary.csv")
    assert all(row["stop_iteration"] for row in summary), (
        "the rule should fire within 300 iterations here"
    )
    selected = tmp_path / "selected"
    args = test_BIQAN.parse_args(
        [
            "--dataset_image_path",
            str(run_with_wmv),
            "--output_path",
            str(selected),
            "--selector",
            "wmv",
            "--start_index",
            "0",
            "--wmv_window",
            "30",
            "--patience",
            "20",
            "--gpu_id",
            "cpu",
        ]
    )
    assert test_BIQAN.main(args) == 0
    offline = {row["image"]: row for row in read_csv(selected / "selection.csv")}
    for row in summary:
        folder = run_with_wmv / row["image"]
        stop, picked = int(row["stop_iteration"]), int(row["picked_iteration"])
        assert int(offline[row["image"]]["picked_iteration"]) == picked
        assert (
            int(row["iterations"]) == stop + 10
        )  # the loop ends one snapshot after the rule fires
        assert (
            max(int(p.stem) for p in folder.glob("0*.png")) == stop
        )  # nothing saved after the stop
        assert (folder / "denoised.png").read_bytes() == (folder / f"{picked:05d}.png").read_bytes()
        assert float(row["picked_psnr"]) == pytest.approx(
            next(
                float(m["psnr_avg"])
                for m in read_csv(folder / "metrics.csv")
                if int(m["iteration"]) == picked
            )
        )


def test_biqan_old_wmv_spellings_are_converted_or_explained(run_with_wmv, tmp_path, capsys):
    def select(output: str, *flags: str) -> int:
        argv = ["--dataset_image_path", str(run_with_wmv), "--output_path", str(tmp_path / output)]
        argv += ["--selector", "wmv", "--start_index", "0", "--gpu_id", "cpu", *flags]
        return test_BIQAN.main(test_BIQAN.parse_args(argv))

    assert select("new", "--wmv_window", "30", "--patience", "20") == 0
    assert select("old", "--wmv_window", "30", "--wmv_patience", "2") == 0
    assert "--wmv_patience 2 (snapshots) is deprecated; it equals --patience 20" in (
        capsys.readouterr().out
    )
    selections = [(tmp_path / name / "selection.csv").read_bytes() for name in ("new", "old")]
    assert selections[0] == selections[1]
    assert select("unit", "--wmv_window", "3") == 2
    error = capsys.readouterr().err.strip()
    assert "--wmv_window 3: counts iterations now" in error
    assert "3 snapshots = 30 iterations here" in error and len(error.splitlines()) == 1


def test_biqan_early_stop_needs_a_model(tmp_path, capsys):
    make_pair(tmp_path, "a")
    with pytest.raises(SystemExit):
        run_BDN.parse_args(bdn_args(tmp_path, "--early_stop", "biqan", clean=False))
    assert "--pre_trained_model" in capsys.readouterr().err


def denoise_args(*argv: str):
    """denoise.py's flags for a short fit, then `argv` (its flags win); the patience is the
    default, auto."""
    short = ["--num_iter", "60", "--save_iter", "10", "--wmv_window", "20", "--gpu_id", "cpu"]
    return denoise.parse_args([*short, "--quiet", *argv])


def test_denoise_keeps_names_sizes_and_formats_and_survives_a_bad_file(tmp_path, caplog):
    make_pair(tmp_path, "colour", height=50, width=70, seed=1)
    make_pair(tmp_path, "gray", channels=1, seed=2, suffix=".jpg")
    (tmp_path / "real" / "broken.png").write_text("not an image")
    output = tmp_path / "out"
    args = denoise_args(str(tmp_path / "real"), "-o", str(output))
    args.init_from = None
    assert denoise.main(args) == 1
    assert "broken.png" in caplog.text and "not a readable image" in caplog.text
    assert sorted(p.name for p in output.iterdir() if p.name[0] != ".") == [
        "colour.png",
        "gray.jpg",
    ]
    assert image_io.read_image(output / "colour.png").pixels.shape == (50, 70, 3)
    assert image_io.read_image(output / "gray.jpg").pixels.shape == (64, 64)


def test_denoise_keeps_snapshots_only_when_asked(tmp_path):
    make_pair(tmp_path, "one", seed=3)
    assert (
        denoise.main(
            denoise_args(
                str(tmp_path / "real" / "one.png"), "-o", str(tmp_path / "out"), "--keep_snapshots"
            )
        )
        == 0
    )
    assert (tmp_path / "out" / "snapshots" / "one" / "metrics.csv").exists()
    assert (tmp_path / "out" / "one.png").exists()


def test_denoise_refuses_to_overwrite_its_input(tmp_path, capsys):
    make_pair(tmp_path, "one", seed=3)
    with pytest.raises(SystemExit):
        denoise_args(str(tmp_path / "real"), "-o", str(tmp_path / "real"))
    assert "refusing to overwrite the input" in capsys.readouterr().err


def test_denoise_rejects_missing_inputs_and_duplicate_names(tmp_path, capsys):
    make_pair(tmp_path, "one", seed=3)
    make_pair(tmp_path / "other", "one", seed=4)
    with pytest.raises(SystemExit):
        denoise_args(str(tmp_path / "nothing.png"), "-o", str(tmp_path / "out"))
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        denoise_args(
            str(tmp_path / "real"), str(tmp_path / "other" / "real"), "-o", str(tmp_path / "out")
        )
    assert "same name" in capsys.readouterr().err


def test_fixed_stopper_fires_at_its_iteration_and_keeps_the_last_snapshot_before():
    stopper = FixedRule(RuleOptions(stop_iteration=60))
    fired_at = replay(stopper, ((iteration, None) for iteration in range(20, 200, 20)))
    assert fired_at == 60 and stopper.pick_iteration == 60
    short = FixedRule(RuleOptions(stop_iteration=600))
    assert replay(short, ((iteration, None) for iteration in range(20, 120, 20))) is None
    assert short.pick_iteration == 100 and not short.fired


def test_online_fixed_auto_stop_matches_test_biqan_offline_fixed_auto(tmp_path):
    make_pair(tmp_path, "a", height=32, width=32, seed=1)
    stop = int(np.ceil(selection.scaled_stop(32, 32) / 10) * 10)
    argv = bdn_args(tmp_path, "--num_iter", str(stop + 20), "--early_stop", "fixed")
    assert run_BDN.main(run_BDN.parse_args(argv)) == 0
    (row,) = read_csv(tmp_path / "run" / "summary.csv")
    assert (row["stop_iteration"], row["picked_iteration"]) == (str(stop), str(stop))
    selected = tmp_path / "selected"
    selection_args = ["--dataset_image_path", str(tmp_path / "run"), "--output_path", str(selected)]
    selection_args += ["--selector", "fixed:auto", "--start_index", "0", "--gpu_id", "cpu"]
    assert test_BIQAN.main(test_BIQAN.parse_args(selection_args)) == 0
    (offline,) = read_csv(selected / "selection.csv")
    assert offline["picked_iteration"] == str(stop)


def test_auto_patience_is_scaled_to_each_image_of_a_group(monkeypatch, capsys):
    """--patience auto (denoise.py's default, and run_BDN.py's on request) gives each image the
    patience `selection.scaled_patience` gives its size; other values stay multiples of
    --save_iter."""
    monkeypatch.setattr(selection, "PATIENCE_EXPONENT", 0.5)
    settings = from_iterations("wmv", 40, None, 20, None)
    assert settings.patience is None
    images = [np.zeros((64, 64)), np.zeros((256, 256, 3))]
    stoppers = early_stopping.make_stoppers(settings, images)
    assert [stopper.options.patience for stopper in stoppers] == [2, 8]
    fixed = early_stopping.make_stoppers(from_iterations("wmv", 40, 60, 20, None), images)
    assert [stopper.options.patience for stopper in fixed] == [3, 3]
    with pytest.raises(ValueError, match="--patience must be multiples of --save_iter"):
        from_iterations("wmv", 40, 30, 20, None)
    assert denoise.build_parser().parse_args(["in.png", "-o", "out"]).patience is None
    auto = ["--dataset_real_path", "in", "--output_path", "out", "--patience", "auto"]
    assert run_BDN.build_parser().parse_args(auto).patience is None
    with pytest.raises(SystemExit):
        denoise.build_parser().parse_args(["in.png", "-o", "out", "--patience", "soon"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("argument --patience: 'soon': write a number of iterations or auto")
    assert (
        run_BDN.build_parser().parse_args(auto + ["--stop_iteration", "auto"]).stop_iteration
        is None
    )
    with pytest.raises(SystemExit):
        run_BDN.build_parser().parse_args(auto + ["--stop_iteration", "soon"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("argument --stop_iteration: 'soon': write a number of iterations or auto")


def test_fixed_stop_must_be_a_snapshot():
    with pytest.raises(ValueError, match="--stop_iteration 50: must be a positive multiple"):
        from_iterations("fixed", 40, 40, 20, None, 50)
    assert from_iterations("fixed", 40, 40, 20, None, 60).stop_iteration == 60


def test_online_fixed_stop_matches_test_biqan_offline_fixed(tmp_path):
    make_pair(tmp_path, "a", seed=1)
    output = tmp_path / "run"
    args = run_BDN.parse_args(
        bdn_args(tmp_path, "--num_iter", "100", "--early_stop", "fixed", "--stop_iteration", "50")
    )
    assert run_BDN.main(args) == 0
    (row,) = read_csv(output / "summary.csv")
    assert (row["stop_iteration"], row["picked_iteration"]) == ("50", "50")
    folder = output / row["image"]
    assert (folder / "denoised.png").read_bytes() == (folder / "00050.png").read_bytes()
    selected = tmp_path / "selected"
    selection_args = ["--dataset_image_path", str(output), "--output_path", str(selected)]
    selection_args += ["--selector", "fixed:50", "--start_index", "0", "--gpu_id", "cpu"]
    assert test_BIQAN.main(test_BIQAN.parse_args(selection_args)) == 0
    (offline,) = read_csv(selected / "selection.csv")
    assert offline["picked_iteration"] == "50"


def test_wmv_fires_at_the_stop_iteration_at_the_latest():
    """Online WMV with a stop (denoise.py passes fixed:auto's): it fires at the first snapshot
    at or after it, keeping the lowest variance so far, though its patience has not run out."""
    snapshots = [(20 * (i + 1), np.full((4, 4), np.sqrt(i))) for i in range(10)]  # falling
    rule = method.WmvRule(method.RuleOptions(window=2, patience=50, stop_iteration=100))
    assert method.replay(rule, snapshots) == 100 and rule.pick_iteration == 100
    patient = method.WmvRule(method.RuleOptions(window=2, patience=50))
    assert method.replay(patient, snapshots) is None and patient.pick_iteration == 200


def test_auto_length_runs_to_the_latest_stop_of_each_group():
    """--num_iter auto (denoise.py's default): method.NUM_ITER, or the group's latest stop
    rounded up to a snapshot where that is later; a number is kept as it is."""
    auto = method.FitSettings(num_iter=None, save_iter=20)
    assert auto.run_length(selection.scaled_stop(64, 64)) == method.NUM_ITER
    assert auto.run_length(4064.4) == 4080
    assert method.FitSettings(num_iter=500).run_length(4064.4) == 500
    with pytest.raises(ValueError, match="save_iter must be in 1..num_iter"):
        method.FitSettings(num_iter=None, save_iter=method.NUM_ITER + 1).validate()
    settings = planning.RunSettings(
        output_path=Path("out"),
        network=SkipConfig(),
        fit=method.FitSettings(num_iter=None, save_iter=10),
        device=torch.device("cpu"),
        early_stop=from_iterations("wmv", 40, None, 10, None),
    )
    images = [SimpleNamespace(noisy=SimpleNamespace(pixels=np.zeros(shape))) for shape in
              [(64, 64), (1024, 1024, 3)]]  # fmt: skip
    stop = early_stopping.latest_stop(settings.early_stop, (1024, 1024))
    assert stop == selection.scaled_stop(1024, 1024) > method.NUM_ITER
    assert planning.for_group(settings, images).fit.num_iter == math.ceil(stop / 10) * 10
    assert planning.for_group(settings, images[:1]).fit.num_iter == method.NUM_ITER


@pytest.mark.parametrize("stop, length", [(30, 40), (70, 70)])
def test_denoise_auto_length_reaches_the_stop(tmp_path, monkeypatch, stop, length):
    """End to end, with NUM_ITER made small: the fit without a rule runs to the later of
    NUM_ITER and --stop_iteration, and keeps that last snapshot."""
    monkeypatch.setattr(method, "NUM_ITER", 40)
    make_pair(tmp_path, "one", height=16, width=16, seed=3)
    argv = [str(tmp_path / "real"), "-o", str(tmp_path / "out"), "--keep_snapshots"]
    argv += ["--early_stop", "none", "--stop_iteration", str(stop), "--num_iter", "auto"]
    assert denoise.main(denoise_args(*argv)) == 0
    rows = read_csv(tmp_path / "out" / "snapshots" / "one" / "metrics.csv")
    assert int(rows[-1]["iteration"]) == length
