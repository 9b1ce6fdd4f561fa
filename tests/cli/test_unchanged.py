"""The four steps give byte-identical results before and after the layout change of issue 10.

The reference is the code of commit `REFERENCE` (the last one before the change), unpacked from
this repository's history with `git archive` into a temporary folder and run there; the current
code runs the same commands on the same inputs. Compared byte for byte: every snapshot and
metrics.csv of step 1 (with online wmv stopping, so denoised.png too), the label files of step 2,
and step 4's selection.csv, scores and report (with BIQAN trained in step 3 among the selectors).
Timings, commands and paths (summary.json, args.json, plots) are not compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, reference_code_fixture, run_scripts, same_bytes

REFERENCE = "f6123d6"
SAMPLE = ROOT / "dataset" / "sample"
STEPS = (
    [
        "run_BDN.py",
        "--dataset_real_path",
        str(SAMPLE / "real"),
        "--dataset_mean_path",
        str(SAMPLE / "mean"),
        "--output_path",
        "run",
        "--num_iter",
        "60",
        "--save_iter",
        "10",
        "--input_depth",
        "8",
        "--channels",
        "16",
        "--early_stop",
        "wmv",
        "--wmv_window",
        "20",
        "--patience",
        "20",
        "--precision",
        "fp32",  # the reference's default; fp32 on the CPU is still bit for bit the old path
        "--quiet",
    ],
    [
        "generator_dataset.py",
        "--dataset_path",
        "run",
        "--output_path",
        "labels.txt",
        "--start_position",
        "1",
    ],
    [
        "train_BIQAN.py",
        "--dataset_image_path",
        "run",
        "--dataset_file_path",
        "labels.txt",
        "--output_checkpoint",
        "checkpoint",
        "--output_path",
        "biqan",
        "--alpha",
        "0.25",
        "--image_size",
        "32",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--batchsize",
        "8",
        "--validation_fraction",
        "0.25",
        "--workers",
        "1",
        "--gpu_id",
        "cpu",
    ],
    [
        "test_BIQAN.py",
        "--dataset_image_path",
        "run",
        "--pre_trained_model",
        "checkpoint",
        "--output_path",
        "selection",
        "--start_index",
        "1",
        "--selector",
        "biqan",
        "wmv",
        "last",
        "fixed:30",
        "--workers",
        "1",
        "--gpu_id",
        "cpu",
    ],
)


COMPARED = (
    "run/*/*.png",
    "run/*/metrics.csv",
    "labels.txt",
    "labels_psnr.csv",
    "selection/selection.csv",
    "selection/*_scores.csv",
    "selection/*_BIQAN.png",
    "selection/*_wmv.png",
    "selection/Denoised_PSNR.txt",
)


reference_code = reference_code_fixture(REFERENCE)


@pytest.mark.slow
def test_four_steps_give_the_reference_bytes(reference_code, tmp_path):
    run_scripts(reference_code, tmp_path / "before", STEPS)
    run_scripts(ROOT, tmp_path / "after", STEPS)
    before = same_bytes(tmp_path / "before", tmp_path / "after", COMPARED)
    assert len({path.parent for path in before if path.match("run/*/0*.png")}) == 4
    assert any(path.name == "denoised.png" for path in before)
    assert Path("selection/selection.csv") in before
