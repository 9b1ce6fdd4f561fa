"""The CPU fast path: bf16 fits channels-last, `--precision auto`, and threads per worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import run_BDN
from models.skip import SkipConfig
from tests.conftest import ROOT, make_pair
from utils.dip import devices, run_options
from utils.dip.fitting import DipFit, FitSettings, build_network, channels_last, grouped_network

TINY = SkipConfig(input_depth=8, channels_down=8, channels_up=8, num_scales=2)


def tiny_fit(precision: str, images: int = 2, iterations: int = 12) -> DipFit:
    """A fit of `images` random 32x32 images, each with its own seed."""
    cpu = torch.device("cpu")
    states = [build_network(TINY, seed, cpu).state_dict() for seed in range(images)]
    net = grouped_network(TINY, states, cpu, precision)
    noisy = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    return DipFit(net, noisy, FitSettings(num_iter=iterations), list(range(images)), precision)


def test_bf16_fits_channels_last_on_the_cpu_and_fp32_stays_nchw():
    assert channels_last(torch.device("cpu"), "bf16")
    assert not channels_last(torch.device("cpu"), "fp32")
    assert channels_last(torch.device("cuda"), "fp32")
    fast, reference = tiny_fit("bf16"), tiny_fit("fp32")
    three_by_three = [p for p in fast.net.parameters() if p.dim() == 4 and p.shape[-1] == 3]
    assert three_by_three and all(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in three_by_three
    )
    assert fast.base_input.is_contiguous(memory_format=torch.channels_last)
    assert all(p.is_contiguous() for p in reference.net.parameters())


def test_backtracking_restores_one_image_of_a_channels_last_group():
    fit = tiny_fit("bf16")
    for _ in range(3):
        fit.step()
    saved = [last.clone() for last in fit.last_good]
    with torch.no_grad():
        for parameter in fit.parameters:
            parameter.add_(1.0)
    moved = [parameter.detach().clone() for parameter in fit.parameters]
    fit.last_psnr = torch.tensor([100.0, -100.0])  # image 0 fell by far more than 5 dB
    fit.backtrack(torch.tensor([20.0, 20.0]))
    for parameter, old, new in zip(fit.parameters, saved, moved):
        assert torch.equal(parameter.unflatten(0, (2, -1))[0], old.unflatten(0, (2, -1))[0])
        assert torch.equal(parameter.unflatten(0, (2, -1))[1], new.unflatten(0, (2, -1))[1])
    assert fit.last_psnr.tolist() == [100.0, 20.0]


def test_a_resumed_bf16_fit_continues_bit_for_bit():
    whole = tiny_fit("bf16")
    for _ in range(12):
        whole.step()
    first = tiny_fit("bf16")
    for _ in range(5):
        first.step()
    resumed = tiny_fit("bf16")
    resumed.load_state_dicts(first.state_dicts())
    assert resumed.base_input.is_contiguous(memory_format=torch.channels_last)
    for _ in range(7):
        resumed.step()
    for a, b in zip(whole.net.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(whole.average, resumed.average)


def test_bf16_stays_close_to_fp32_on_a_tiny_fit():
    fast, reference = tiny_fit("bf16", iterations=30), tiny_fit("fp32", iterations=30)
    for _ in range(30):
        fast_output, _ = fast.step()
        reference_output, _ = reference.step()
    difference = (fast.average - reference.average).abs().max().item()
    assert 0 < difference < 0.05, difference


def test_auto_is_the_recorded_precision_else_native_bf16(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(run_options, "native_bf16", lambda device: True)
    assert run_options.resolve_precision("auto", cpu, tmp_path) == "bf16"
    assert run_options.resolve_precision("fp32", cpu, tmp_path) == "fp32"
    (tmp_path / "args.json").write_text(json.dumps({"precision": "fp32"}))
    assert run_options.resolve_precision("auto", cpu, tmp_path) == "fp32"
    (tmp_path / "args.json").write_text("{not json")
    assert run_options.resolve_precision("auto", cpu, tmp_path) == "bf16"
    monkeypatch.setattr(run_options, "native_bf16", lambda device: False)
    assert run_options.resolve_precision("auto", cpu, None) == "fp32"


def test_a_rerun_with_auto_keeps_the_runs_precision(tmp_path):
    folder = tmp_path / "data"
    make_pair(folder, "a", seed=1)
    output = tmp_path / "out"
    argv = ["--dataset_real_path", str(folder / "real"), "--output_path", str(output)]
    argv += ["--input_depth", "8", "--channels", "8", "--num_scales", "2", "--num_iter", "4"]
    argv += ["--save_iter", "2", "--gpu_id", "cpu", "--quiet"]
    assert run_BDN.main(run_BDN.parse_args([*argv, "--precision", "fp32"])) == 0
    again = run_BDN.parse_args(argv)
    assert again.precision == "fp32"
    assert run_BDN.main(again) == 0
    assert json.loads((output / "args.json").read_text())["precision"] == "fp32"


@pytest.mark.parametrize(
    ("environment", "cores"),
    [
        ({}, None),
        ({"OMP_NUM_THREADS": "1"}, 1),
        ({"SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "8"}, 1),
        ({"OMP_NUM_THREADS": "junk"}, None),
    ],
)
def test_threads_follow_the_cores_this_process_owns(environment, cores):
    owned = len(os.sched_getaffinity(0))
    expected = owned if cores is None else min(cores, owned)
    assert devices.available_cores(environment) == expected
    assert devices.threads_per_worker(2, environment) == max(1, expected // 2)


SPY_ON_TORCH = """
import builtins, os, sys
seen = []
real_import = builtins.__import__
def spy(name, *args, **kwargs):
    if name.split(".")[0] == "torch" and "torch" not in sys.modules and not seen:
        seen.append(os.environ.get("OMP_WAIT_POLICY"))
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import {script}
# torch not loaded yet: it will load with the environment as it is now
print(seen[0] if seen else os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("script", ["run_BDN", "denoise", "train_BIQAN", "test_BIQAN"])
@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_waits_passively_unless_told_before_torch_loads(script, given, expected):
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environment |= {"KERAS_BACKEND": "torch"} | (
        {} if given is None else {"OMP_WAIT_POLICY": given}
    )
    result = subprocess.run(
        [sys.executable, "-c", SPY_ON_TORCH.format(script=script)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.strip().splitlines()[-1] == expected, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu avx512f avx512_bf16 amx_bf16 amx_tile", "amx_bf16"),
        ("avx512f avx512_bf16", "avx512_bf16"),
        ("avx2 fma", ""),
    ],
)
def test_bf16_instructions_read_from_cpuinfo(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n")
    assert devices.bf16_instructions(cpuinfo) == expected
    assert devices.bf16_instructions(tmp_path / "absent") == ""
