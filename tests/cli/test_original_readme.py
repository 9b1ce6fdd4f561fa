"""The original README's four commands (docs in ../shared/seed-README.md), run here in order.

Each command is run as its README writes it, in a fresh working folder laid out as the README
expects (`dataset/<set>/real/x_real.png`, `dataset/<set>/mean/x_mean.png`), with a few flags
appended for tiny data (32x32 images, a small DIP network, a handful of iterations, a tiny
BIQAN trained one epoch without ImageNet weights): argparse keeps the last value of a flag, so
everything else is the README's. The README's folders do not chain (each step names the data
it was given by its authors, e.g. downloaded reconstructions), so each step's output is linked
to the name the next step reads. Scripts run as subprocesses under KERAS_BACKEND=torch, with
TensorFlow installed or not, and must not print TensorFlow's start-up lines.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.conftest import ROOT, smooth_image
from utils import image_io, run_output

STEP1_CC = "run_BDN.py --dataset_real_path dataset/CC/real/ --dataset_mean_path dataset/CC/mean/ --output_path dataset/CC/20200111 --num_iter 3500 --save_iter 20 --lr 1e-2 --gpu_id 1"
STEP1_POLYU = "run_BDN.py --dataset_real_path dataset/PolyU/real/ --dataset_mean_path dataset/PolyU/mean/ --output_path dataset/PolyU/20200111 --num_iter 5000 --save_iter 20 --lr 1e-2 --gpu_id 2"
STEP2 = "generator_dataset.py --dataset_path dataset/PolyU_Mulit_UN_GN --output_path dataset/PolyU_Mulit_UN_GN_PNSR.txt"
STEP3 = "train_BIQAN.py --dataset_image_path dataset/PolyU/PolyU_Mulit_UN_GN --dataset_file_path dataset/PolyU/PolyU_Mulit_UN_GN_PNSR.txt --output_checkpoint checkpoint/PolyU_Mulit_UN_GN/mobilenet --output_path result/PolyU_Mulit_UN_GN --epochs 40 --lr 1e-3 --gpu_id 3"
README_CHECKPOINT = "checkpoint/PolyU_Mulit_UN_GN/mobilenet/weights.004-0.046.hdf5"
STEP4 = f"test_BIQAN.py --dataset_image_path dataset/CC/CC_Resume_All32 --pre_trained_model {README_CHECKPOINT} --output_path result/CC_Resume_All32 --start_index 90 --gpu_id 4"
# 100 snapshots, so that step 4's --start_index 90 leaves 10 candidates.
TINY_DIP = "--num_iter 200 --save_iter 2 --channels 8 --skip_channels 2 --num_scales 2 --input_depth 4 --quiet"
TINY_BIQAN = "--epochs 1 --weights none --alpha 0.25 --image_size 32 --batchsize 8 --workers 1"
TENSORFLOW_NOISE = ("oneDNN", "absl::", "cpu_feature_guard", "TensorFlow binary")


def run(folder: Path, command: str, tiny: str = "", expect: int = 0) -> subprocess.CompletedProcess:
    """`python <command> <tiny>` in `folder` (the script from the repository); the exit code
    must be `expect`."""
    script, *arguments = command.split()
    environment = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(ROOT)}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    completed = subprocess.run(
        [sys.executable, str(ROOT / script), *arguments, *tiny.split()],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == expect, f"{command}:\n{completed.stdout}\n{completed.stderr}"
    assert not any(noise in completed.stderr for noise in TENSORFLOW_NOISE), completed.stderr
    return completed


def write_pairs(folder: Path, stems: list[str], seed: int) -> None:
    """x_real.png (noisy) and x_mean.png (clean) pairs of 32x32 images, as in the CC download."""
    for offset, stem in enumerate(stems):
        clean = smooth_image(32, 32, 3, seed + offset)
        noise = np.random.default_rng(seed + offset).normal(0, 0.08, clean.shape)
        image_io.write_png(folder / "real" / f"{stem}_real.png", np.clip(clean + noise, 0, 1))
        image_io.write_png(folder / "mean" / f"{stem}_mean.png", clean)


def link(target: Path, name: Path) -> None:
    """`name` -> `target`: the folder a README step reads, made from what the step before wrote."""
    name.symlink_to(target.resolve(), target_is_directory=True)


def test_the_original_readme_commands_run_in_order(tmp_path: Path):
    write_pairs(tmp_path / "dataset" / "CC", ["d800_iso3200_1"], seed=0)
    write_pairs(tmp_path / "dataset" / "PolyU", ["Canon5D2_1", "Nikon800_2"], seed=10)
    # The README's --gpu_id 1 and 2 need two GPUs; on a machine with CUDA the fits run on the CPU.
    device = " --gpu_id cpu" if torch.cuda.is_available() else ""
    fitted = run(tmp_path, STEP1_CC, TINY_DIP + device)
    if not device:
        assert "CUDA is not available: running on the CPU (asked for GPU 1)" in fitted.stderr
    run(tmp_path, STEP1_POLYU, TINY_DIP + device)
    cc_run, polyu_run = (
        tmp_path / "dataset" / "CC" / "20200111",
        tmp_path / "dataset" / "PolyU" / "20200111",
    )
    for run_folder, stems in (
        (cc_run, ["d800_iso3200_1"]),
        (polyu_run, ["Canon5D2_1", "Nikon800_2"]),
    ):
        for stem in stems:
            metrics = run_output.read_metrics(run_folder / f"{stem}_real")
            assert len(metrics.iteration) == 100 and metrics.has_reference

    link(polyu_run, tmp_path / "dataset" / "PolyU_Mulit_UN_GN")
    run(tmp_path, STEP2)
    label_file = tmp_path / "dataset" / "PolyU_Mulit_UN_GN_PNSR.txt"
    assert len(label_file.read_text().splitlines()) == 2 * (100 - 8)  # --start_position 8
    original_name = tmp_path / "original_name.txt"
    run(
        tmp_path,
        STEP2.replace("generator_dataset.py", "generate_dataset.py").replace(
            str(label_file.relative_to(tmp_path)), original_name.name
        ),
    )
    assert original_name.read_text() == label_file.read_text()

    link(polyu_run, tmp_path / "dataset" / "PolyU" / "PolyU_Mulit_UN_GN")
    shutil.copyfile(label_file, tmp_path / "dataset" / "PolyU" / "PolyU_Mulit_UN_GN_PNSR.txt")
    trained = run(tmp_path, STEP3, TINY_BIQAN)
    assert "warning: --gpu_id 3" in trained.stderr or torch.cuda.device_count() > 3
    checkpoints = sorted(
        (tmp_path / "checkpoint" / "PolyU_Mulit_UN_GN" / "mobilenet").glob("*.weights.h5")
    )
    assert checkpoints and (tmp_path / "result" / "PolyU_Mulit_UN_GN" / "first_stage.png").is_file()

    link(cc_run, tmp_path / "dataset" / "CC" / "CC_Resume_All32")
    missing = run(tmp_path, STEP4, expect=2)
    errors = [line for line in missing.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"--pre_trained_model {README_CHECKPOINT}: not found" in errors[0]
    # The README's checkpoint name is the one its authors' training wrote; here, step 3's.
    tested = run(
        tmp_path, STEP4.replace(README_CHECKPOINT, str(checkpoints[-1].relative_to(tmp_path)))
    )
    assert "BIQAN mobilenet" in tested.stdout
    assert "warning: --gpu_id 4" in tested.stderr or torch.cuda.device_count() > 4
    output = tmp_path / "result" / "CC_Resume_All32"
    for suffix in ("_BIQAN.png", "_Compare.png", "_scores.png"):
        assert (output / f"d800_iso3200_1_real{suffix}").stat().st_size > 0
    (row,) = read_rows(output / "selection.csv")
    candidates = run_output.read_metrics(cc_run / "d800_iso3200_1_real").iteration[90:]
    assert row["selector"] == "biqan" and int(row["picked_iteration"]) in candidates
    assert "Mean gap to the true best: biqan" in (output / "Denoised_PSNR.txt").read_text()


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
