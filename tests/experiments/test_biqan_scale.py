"""experiments/biqan_scale.py: the frozen training set, the steps it runs and skips, and the
collected scores that experiments/scale_study.py tables as BIQAN with the paper's recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import biqan_scale, scale_study
from tests.experiments.test_scale_study import ITERATIONS, row_cells, write_run
from utils.biqan.report import SELECTION_FILE
from utils.run_output import RUN_RECORD_FILE, SUMMARY_FILE


def fake_run(folder: Path, stems: list[str], finished: list[str], inputs: Path) -> None:
    """A run_BDN.py output folder over `inputs` (one file per stem) with `finished` done."""
    inputs.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        (inputs / f"{stem}.png").write_bytes(b"")
        (folder / stem).mkdir(parents=True, exist_ok=True)
        if stem in finished:
            (folder / stem / SUMMARY_FILE).write_text("{}")
    record = {"dataset_real_path": str(inputs)}
    (folder / RUN_RECORD_FILE).write_text(json.dumps(record))


def test_training_set_waits_for_enough_images_then_stays_frozen(tmp_path):
    polyu, image_set = tmp_path / "PolyU30_s0", tmp_path / "out" / "set"
    fake_run(polyu, ["p0", "p1", "p2"], ["p0"], tmp_path / "in")
    assert biqan_scale.freeze_set(polyu, image_set, 2) is None and not image_set.exists()
    (polyu / "p1" / SUMMARY_FILE).write_text("{}")
    assert biqan_scale.freeze_set(polyu, image_set, 2) == ["p0", "p1"]
    assert (image_set / "p0").resolve() == (polyu / "p0").resolve()
    (polyu / "p2" / SUMMARY_FILE).write_text("{}")  # finished later: not in the trained set
    assert biqan_scale.freeze_set(polyu, image_set, 2) == ["p0", "p1"]


def test_steps_run_once_and_score_only_finished_cc_runs(tmp_path, monkeypatch):
    runs = tmp_path / "runs" / "256px" / "bf16"
    fake_run(runs / "PolyU30_s0", ["p0", "p1"], ["p0", "p1"], tmp_path / "polyu")
    crops = tmp_path / "crops"
    fake_run(runs / "CC_s0", ["c1", "c2"], ["c1", "c2"], crops / "real")
    fake_run(runs / "CC_s0", ["c2"], ["c2"], tmp_path / "pending_c2")  # refitted one crop at a time
    fake_run(runs / "CC_s1", ["c1", "c2"], ["c1"], crops / "real")  # under way
    commands, label_flags = [], []

    def run_step(command: list[str], log: Path | None = None) -> int:
        commands.append(Path(command[1]).name)
        flags = dict(zip(command[2::2], command[3::2]))
        label_flags.append(flags.get("--is_use_fix_minmax"))
        if Path(command[1]).name == "generator_dataset.py":
            Path(flags["--output_path"]).write_text("labels")
        elif Path(command[1]).name == "train_BIQAN.py":
            report = Path(flags["--output_path"])
            report.mkdir(parents=True)
            rows = [("all snapshots", 0.4, 0.5), ("mean within image", 0.2, 0.3)]
            pd.DataFrame(rows, columns=["image", "srcc", "plcc"]).to_csv(
                report / biqan_scale.VALIDATION_FILE, index=False
            )
        else:
            out = Path(flags["--output_path"])
            out.mkdir(parents=True)
            (out / SELECTION_FILE).write_text("selector\n")
            scores = pd.DataFrame(
                {"iteration": [20, 40], "predicted_mean": [5.0, 6.0], "predicted_std": [1, 1]}
            )
            scores.assign(true_psnr=[30.0, 31.0]).to_csv(out / "c1_scores.csv", index=False)
        return 0

    monkeypatch.setattr(biqan_scale.common, "run_step", run_step)
    shared = ["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    shared += ["--min_images", "2", "--crops", str(crops)]
    argv = shared + ["--out", str(tmp_path / "out")]
    assert biqan_scale.main(biqan_scale.parse_args(argv)) == 0
    assert commands == ["generator_dataset.py", "train_BIQAN.py", "test_BIQAN.py"]
    assert biqan_scale.main(biqan_scale.parse_args(argv)) == 0
    assert len(commands) == 3  # all done: nothing runs again
    folder = tmp_path / "results" / "256px" / "bf16" / "absolute"
    collected = pd.read_csv(folder / "CC_s0" / "c1.csv")
    assert list(collected.columns) == list(biqan_scale.SCORE_COLUMNS)  # no true PSNR copied
    record = json.loads((folder / biqan_scale.TRAINING_FILE).read_text())
    assert record["polyu_images"] == ["p0", "p1"]
    assert record["polyu_validation_srcc"] == {"within image": 0.2, "all": 0.4}
    assert "absolute-PSNR" in record["recipe"] and label_flags[0] is None  # the paper's labels

    relative = shared + ["--labels", "relative", "--out", str(tmp_path / "out_relative")]
    assert biqan_scale.main(biqan_scale.parse_args(relative)) == 0
    assert commands[3:] == ["generator_dataset.py", "train_BIQAN.py", "test_BIQAN.py"]
    assert label_flags[3] == "false"  # generator_dataset.py --is_use_fix_minmax false
    record = json.loads((folder.parent / "relative" / biqan_scale.TRAINING_FILE).read_text())
    assert "relative-PSNR" in record["recipe"]


def test_scale_study_tables_the_collected_biqan_scores(tmp_path):
    for index in range(scale_study.MIN_TUNING_RUNS):
        write_run(tmp_path, "PolyU30", f"p{index}", 400, 40.0)
    write_run(tmp_path, "CC", "c1", 800, 36.0)
    assert not any("paper's recipe" in line for line in scale_study.report_lines(tmp_path))
    folder = tmp_path / biqan_scale.RESULTS_FOLDER / "256px" / "bf16" / "absolute"
    (folder / "CC_s0").mkdir(parents=True)
    scores = -np.abs(ITERATIONS - 600.0)  # BIQAN's score peaks at 600, DIP at 800
    pd.DataFrame({"iteration": ITERATIONS, "predicted_mean": scores, "predicted_std": 1.0}).to_csv(
        folder / "CC_s0" / "c1.csv", index=False
    )
    record = {"polyu_images": ["p0", "p1"], "recipe": "the recipe", "polyu_validation_srcc": {}}
    (folder / biqan_scale.TRAINING_FILE).write_text(json.dumps(record))
    lines = scale_study.report_lines(tmp_path)
    assert not any("relative labels" in line for line in lines)  # not collected
    cells = row_cells(lines, "biqan, paper's recipe")
    assert cells[4:6] == ["the recipe", "PolyU, 2 runs"]
    gap = 1e-5 * (600 - 800) ** 2
    assert cells[6] == f"{gap:.2f} [{gap:.2f}]"
    assert 0 < float(cells[-2]) < 1  # the score rises with PSNR up to 600, then falls first
    write_run(tmp_path, "CC", "c1", 700, 35.0, seed=1)  # a seed the network never scored
    cells = row_cells(scale_study.report_lines(tmp_path), "biqan, paper's recipe")
    assert cells[4] == "the recipe (seed 0 only: 1 of 2 runs)"
    assert cells[6] == f"{gap:.2f} [{gap:.2f}]"  # on seed 0's run alone
