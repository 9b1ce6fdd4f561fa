"""Batched fitting, sharding, worker processes, precision flags and out-of-memory handling (CPU)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import run_BDN
from models.skip import SkipConfig, SkipNet, stack_states
from tests.conftest import ROOT, make_pair
from utils.dip import devices, group_fit, planning
from utils.dip.fitting import DipFit, build_network, run_fit
from utils.method import FitSettings

SMALL = SkipConfig(input_depth=8, channels_down=8, channels_up=8, channels_skip=2)
FAST = [
    "--input_depth",
    "8",
    "--channels",
    "16",
    "--num_iter",
    "30",
    "--save_iter",
    "10",
    "--gpu_id",
    "cpu",
    "--quiet",
]


def noisy_images(count: int, size: int = 64) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(7))


def test_batched_fit_equals_fitting_each_image_alone():
    """Checked in float64: in float32, Adam's sign-like first steps turn rounding differences of
    near-zero gradients (BatchNorm makes many) into different, equally good, trajectories."""
    settings = FitSettings(num_iter=15, save_iter=5)
    noisy, seeds = noisy_images(3).double(), [11, 22, 33]
    alone = []
    for index, seed in enumerate(seeds):
        fit = DipFit(
            build_network(SMALL, seed, torch.device("cpu")).double(),
            noisy[index : index + 1],
            settings,
            [seed],
        )
        run_fit(fit, [])
        alone.append(fit)
    stacked = SkipNet(SMALL, groups=3)
    stacked.load_state_dict(
        stack_states(
            [build_network(SMALL, seed, torch.device("cpu")).state_dict() for seed in seeds]
        )
    )
    batched = DipFit(stacked.double(), noisy, settings, seeds)
    run_fit(batched, [])
    for index, fit in enumerate(alone):
        torch.testing.assert_close(
            batched.average[index : index + 1], fit.average, atol=1e-9, rtol=0
        )


def test_batched_backtracking_restores_only_the_image_that_fell():
    stacked = SkipNet(SMALL, groups=2)
    fit = DipFit(stacked, noisy_images(2), FitSettings(num_iter=5, save_iter=1), [1, 2])
    fit.step()
    fit.backtrack(torch.tensor([30.0, 30.0]))
    before = [p.detach().clone() for p in fit.parameters]
    for p in fit.parameters:
        p.data.add_(1.0)
    fit.backtrack(torch.tensor([20.0, 29.0]))  # image 0 fell by 10 dB, image 1 by 1 dB
    for p, b in zip(fit.parameters, before):
        assert torch.equal(p.view(2, -1)[0], b.view(2, -1)[0])
        assert torch.equal(p.view(2, -1)[1], b.view(2, -1)[1] + 1.0)


def test_batch_state_splits_into_per_image_states():
    fit = DipFit(
        SkipNet(SMALL, groups=2), noisy_images(2), FitSettings(num_iter=4, save_iter=1), [1, 2]
    )
    for _ in range(2):
        fit.step()
    states = fit.state_dicts()
    assert len(states) == 2 and all(state["iteration"] == 2 for state in states)
    single = DipFit(SkipNet(SMALL), noisy_images(2)[1:], FitSettings(num_iter=4, save_iter=1), [2])
    single.load_state_dicts([states[1]])
    assert torch.equal(single.average, fit.average[1:])


@pytest.mark.parametrize("count, shards", [(7, 3), (5, 1), (2, 4)])
def test_shards_partition_the_images(tmp_path, count, shards):
    jobs = [planning.ImageJob(tmp_path / f"{index:02d}.png", None) for index in range(count)]
    parts = [planning.shard(jobs, shards, index) for index in range(shards)]
    assert sorted((job for part in parts for job in part), key=lambda job: job.stem) == jobs
    assert parts == [planning.shard(jobs, shards, index) for index in range(shards)]
    with pytest.raises(ValueError):
        planning.shard(jobs, shards, shards)


def run_files(output: Path) -> dict[str, bytes]:
    """Every snapshot and metrics file of a run folder, by relative path."""
    return {
        str(p.relative_to(output)): p.read_bytes()
        for p in sorted(output.rglob("*"))
        if p.suffix in (".png", ".csv") and "_psnr" not in p.name and p.name != "summary.csv"
    }


def summary_rows(output: Path) -> list[dict]:
    with open(output / "summary.csv", newline="") as stream:
        return [
            {k: v for k, v in row.items() if k not in ("seconds", "iterations_per_second")}
            for row in csv.DictReader(stream)
        ]


@pytest.fixture
def three_pairs(tmp_path):
    for index, stem in enumerate(["a", "b", "c"]):
        make_pair(tmp_path, stem, seed=index)
    return tmp_path


def test_two_shard_processes_write_the_files_of_one_run(three_pairs, tmp_path):
    base = [
        sys.executable,
        str(ROOT / "run_BDN.py"),
        "--dataset_real_path",
        str(three_pairs / "real"),
        "--dataset_mean_path",
        str(three_pairs / "mean"),
        *FAST,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(base + ["--output_path", str(tmp_path / "whole")], check=True, env=environment)
    shards = [
        subprocess.Popen(
            base
            + [
                "--output_path",
                str(tmp_path / "sharded"),
                "--num_shards",
                "2",
                "--shard_index",
                str(index),
            ],
            env=environment,
        )
        for index in range(2)
    ]
    assert [process.wait() for process in shards] == [0, 0]
    assert run_files(tmp_path / "sharded") == run_files(tmp_path / "whole")
    assert summary_rows(tmp_path / "sharded") == summary_rows(tmp_path / "whole")


def test_slurm_array_variables_pick_the_shard(three_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(three_pairs / "real"),
            "--output_path",
            str(tmp_path / "o"),
            *FAST,
        ]
    )
    assert (args.num_shards, args.shard_index) == (3, 1)
    assert run_BDN.main(args) == 0
    assert [p.name for p in (tmp_path / "o").iterdir() if p.is_dir()] == ["b"]


def test_cpu_workers_write_the_files_of_one_run(three_pairs, tmp_path):
    common = [
        "--dataset_real_path",
        str(three_pairs / "real"),
        "--dataset_mean_path",
        str(three_pairs / "mean"),
        *FAST,
    ]
    assert run_BDN.main(run_BDN.parse_args(common + ["--output_path", str(tmp_path / "one")])) == 0
    args = run_BDN.parse_args(common + ["--output_path", str(tmp_path / "two"), "--workers", "2"])
    assert len(args.devices) == 2
    assert run_BDN.main(args) == 0
    assert run_files(tmp_path / "two") == run_files(tmp_path / "one")
    assert summary_rows(tmp_path / "two") == summary_rows(tmp_path / "one")


def test_batch_images_run_matches_single_runs(three_pairs, tmp_path):
    common = [
        "--dataset_real_path",
        str(three_pairs / "real"),
        "--dataset_mean_path",
        str(three_pairs / "mean"),
        *FAST,
    ]
    make_pair(three_pairs, "d_other_size", height=96, width=64, seed=9)
    assert run_BDN.main(run_BDN.parse_args(common + ["--output_path", str(tmp_path / "one")])) == 0
    assert (
        run_BDN.main(
            run_BDN.parse_args(
                common + ["--output_path", str(tmp_path / "batched"), "--batch_images", "4"]
            )
        )
        == 0
    )
    assert run_files(tmp_path / "batched").keys() == run_files(tmp_path / "one").keys()
    for one, batched in zip(summary_rows(tmp_path / "one"), summary_rows(tmp_path / "batched")):
        assert (one["image"], one["height"], one["width"]) == (
            batched["image"],
            batched["height"],
            batched["width"],
        )
        # float32 trajectories differ by rounding (see the float64 test above); the quality does not
        assert float(batched["best_psnr"]) == pytest.approx(float(one["best_psnr"]), abs=0.3)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--precision", "fp16"], "invalid choice"),
        (["--batch_images", "0"], "--batch_images"),
        (["--num_shards", "2", "--shard_index", "2"], "--shard_index"),
        (["--init_from", "previous", "--batch_images", "2"], "chains images"),
    ],
)
def test_scale_flags_are_validated(three_pairs, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        run_BDN.parse_args(
            [
                "--dataset_real_path",
                str(three_pairs / "real"),
                "--output_path",
                str(tmp_path / "o"),
                *FAST,
                *flags,
            ]
        )
    assert message in capsys.readouterr().err


def test_configure_precision_rejects_unknown_values():
    with pytest.raises(ValueError, match="precision"):
        devices.configure_precision("fp8", torch.device("cpu"))


def test_bf16_fit_runs_and_stays_close_to_fp32():
    settings = FitSettings(num_iter=10, save_iter=5)
    noisy = noisy_images(1)
    results = {}
    for precision in ("fp32", "bf16"):
        fit = DipFit(build_network(SMALL, 3, torch.device("cpu")), noisy, settings, [3], precision)
        run_fit(fit, [])
        results[precision] = fit.average
    error = (results["bf16"] - results["fp32"]).abs().max()
    assert 0 < float(error) < 0.05


def test_out_of_memory_splits_the_batch_then_reports_a_clear_error(
    three_pairs, tmp_path, monkeypatch, caplog
):
    original = group_fit.fit_group
    attempts = []

    def fake_fit_group(images, settings, previous=None):
        attempts.append([image.job.stem for image in images])
        if len(images) > 1 or images[0].job.stem == "b":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.50 GiB")
        return original(images, settings, previous)

    monkeypatch.setattr(group_fit, "fit_group", fake_fit_group)
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(three_pairs / "real"),
            "--output_path",
            str(tmp_path / "o"),
            *FAST,
            "--batch_images",
            "3",
        ]
    )
    assert run_BDN.main(args) == 1
    assert attempts[0] == ["a", "b", "c"] and ["a"] in attempts and ["c"] in attempts
    line = next(
        line for line in caplog.text.splitlines() if "b.png" in line and "out of memory" in line
    )
    assert "3.50 GiB" in line and "--batch_images" in line
    assert [row["image"] for row in summary_rows(tmp_path / "o")] == ["a", "c"]


@pytest.mark.gpu
def test_cuda_precisions_stay_within_a_tenth_of_a_decibel(cuda_device):
    from utils.dip.fitting import to_array
    from utils.metrics import psnr

    clean = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    noisy = (
        clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    ).clamp(0, 1)
    results = {}
    for precision in devices.PRECISIONS:
        devices.configure_precision(precision, cuda_device)
        fit = DipFit(
            build_network(SkipConfig(), 0, cuda_device),
            noisy.to(cuda_device),
            FitSettings(num_iter=300),
            [0],
            precision,
        )
        run_fit(fit, [])
        results[precision] = psnr(to_array(fit.average), to_array(clean))
    assert all(abs(value - results["fp32"]) < 0.1 for value in results.values()), results


@pytest.mark.gpu
def test_cuda_batched_bf16_run_writes_what_a_cpu_run_writes(cuda_device, pairs, tmp_path):
    def run(output: str, *flags: str) -> set[str]:
        base = [flag for flag in FAST if flag not in ("--gpu_id", "cpu")]
        args = run_BDN.parse_args(
            [
                "--dataset_real_path",
                str(pairs / "real"),
                "--dataset_mean_path",
                str(pairs / "mean"),
                "--output_path",
                str(tmp_path / output),
                *base,
                *flags,
            ]
        )
        assert run_BDN.main(args) == 0
        return {str(path.relative_to(tmp_path / output)) for path in (tmp_path / output).rglob("*")}

    cpu_files = run("cpu", "--gpu_id", "cpu")
    cuda_files = run("cuda", "--gpu_id", "0", "--batch_images", "2", "--precision", "bf16")
    assert cuda_files == cpu_files
    cpu_rows, cuda_rows = summary_rows(tmp_path / "cpu"), summary_rows(tmp_path / "cuda")
    assert [row["image"] for row in cuda_rows] == ["a", "b"]
    for cpu_row, cuda_row in zip(cpu_rows, cuda_rows):
        assert abs(float(cuda_row["best_psnr"]) - float(cpu_row["best_psnr"])) < 1.0
