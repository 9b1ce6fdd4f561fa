"""The method in one place (issue 24) changes no output: byte-identical to the code before it.

The reference is commit `REFERENCE`, unpacked from this repository's history into a temporary
folder and run there; the current code runs the same commands on the same inputs. Compared byte
for byte: step 1 with an online stopping rule (every snapshot, metrics.csv, denoised.png), the
labels of step 2, step 4 with the training-free selectors (selection.csv, Denoised_PSNR.txt) and
denoise.py's output, on the committed sample and on a crop of a real CC pair.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, reference_code_fixture, run_scripts, same_bytes
from utils import image_io
from utils.dip import planning

REFERENCE = "d0cdada"
SAMPLE = ROOT / "dataset" / "sample"
TINY_NETWORK = ["--input_depth", "8", "--channels", "16", "--precision", "fp32", "--quiet"]
COMPARED = (
    "run/*/*.png",
    "run/*/metrics.csv",
    "labels.txt",
    "labels_psnr.csv",
    "selection/selection.csv",
    "selection/*_scores.csv",
    "selection/*_wmv.png",
    "selection/*_last.png",
    "selection/Denoised_PSNR.txt",
    "denoised/*.png",
)


def steps(real: Path, mean: Path, rule: list[str], denoised_input: Path) -> list[list[str]]:
    """Step 1 with the online `rule`, step 2, step 4 with the training-free selectors, and
    denoise.py on `denoised_input`, each a script name and its flags."""
    return [
        [
            "run_BDN.py",
            "--dataset_real_path",
            str(real),
            "--dataset_mean_path",
            str(mean),
            "--output_path",
            "run",
            "--num_iter",
            "60",
            "--save_iter",
            "10",
            "--gpu_id",
            "cpu",
            *TINY_NETWORK,
            *rule,
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
            "test_BIQAN.py",
            "--dataset_image_path",
            "run",
            "--output_path",
            "selection",
            "--start_index",
            "1",
            "--selector",
            "wmv",
            "last",
            "fixed:30",
            "fixed:auto",
            "--wmv_window",
            "20",
            "--patience",
            "10",
            "--workers",
            "1",
            "--gpu_id",
            "cpu",
        ],
        [
            "denoise.py",
            str(denoised_input),
            "-o",
            "denoised",
            "--num_iter",
            "40",
            "--save_iter",
            "10",
            "--wmv_window",
            "20",
            "--patience",
            "10",
            "--gpu_id",
            "cpu",
            "--precision",
            "fp32",
            "--quiet",
        ],
    ]


reference_code = reference_code_fixture(REFERENCE)


def test_sample_gives_the_reference_bytes(reference_code, tmp_path):
    rule = ["--early_stop", "wmv", "--wmv_window", "20", "--patience", "20"]
    commands = steps(SAMPLE / "real", SAMPLE / "mean", rule, SAMPLE / "real" / "camera.png")
    run_scripts(reference_code, tmp_path / "before", commands)
    run_scripts(ROOT, tmp_path / "after", commands)
    files = same_bytes(tmp_path / "before", tmp_path / "after", COMPARED)
    assert any(path.name == "denoised.png" for path in files)
    assert Path("selection/selection.csv") in files
    assert Path("denoised/camera.png") in files


@pytest.mark.realdata
def test_real_crop_gives_the_reference_bytes(reference_code, shared_data, tmp_path):
    job = planning.plan_jobs(shared_data / "CC" / "real", shared_data / "CC" / "mean")[0]
    for folder, path in (("real", job.noisy), ("mean", job.clean)):
        pixels = image_io.read_image(path).pixels[232:280, 232:280]
        image_io.write_png(tmp_path / "crop" / folder / f"{job.stem}.png", pixels)
    rule = ["--early_stop", "fixed", "--stop_iteration", "40"]
    real, mean = tmp_path / "crop" / "real", tmp_path / "crop" / "mean"
    commands = steps(real, mean, rule, real / f"{job.stem}.png")
    run_scripts(reference_code, tmp_path / "before", commands)
    run_scripts(ROOT, tmp_path / "after", commands)
    files = same_bytes(tmp_path / "before", tmp_path / "after", COMPARED)
    assert Path(f"run/{job.stem}/denoised.png") in files
    assert Path(f"denoised/{job.stem}.png") in files
