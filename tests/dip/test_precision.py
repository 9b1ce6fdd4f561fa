"""The CPU fast path: bf16 fits channels-last, `--precision auto`, and threads per worker."""

from __future__ import annotations

import fcntl
import json
import os

import pytest
import torch

import run_BDN
from models.skip import SkipConfig
from tests.conftest import make_pair
from utils.dip import core_share, devices, run_options
from utils.dip.fitting import DipFit, build_network, channels_last, grouped_network
from utils.method import FitSettings

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
def test_available_cores_follow_affinity_slurm_and_omp(environment, cores):
    owned = len(os.sched_getaffinity(0))
    assert devices.available_cores(environment) == (owned if cores is None else min(cores, owned))


def test_commands_on_the_same_cores_share_them(tmp_path):
    owned = devices.available_cores({})
    first = core_share.CoreShare(tmp_path, workers=1)
    first.register()
    assert first.threads({}) == owned
    second = core_share.CoreShare(tmp_path, workers=1)
    second.register()
    assert first.threads({}) == second.threads({}) == max(1, owned // 2)
    second.release()
    assert first.threads({}) == owned
    two_workers = core_share.CoreShare(tmp_path, workers=2)
    two_workers.register()
    assert two_workers.threads({}) == max(1, owned // 3)
    two_workers.release()
    first.release()
    assert list(tmp_path.iterdir()) == []


def test_gone_commands_and_other_cores_do_not_count(tmp_path):
    (tmp_path / "gone.json").write_text(
        json.dumps({"cores": sorted(devices.own_cores()), "workers": 4})
    )
    other = tmp_path / "other.json"
    with open(other, "w") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        stream.write(json.dumps({"cores": [max(devices.own_cores()) + 1], "workers": 4}))
        stream.flush()
        share = core_share.CoreShare(tmp_path, workers=1)
        share.register()
        assert share.threads({}) == devices.available_cores({})
        assert not (tmp_path / "gone.json").exists() and other.exists()
        share.release()


def test_nothing_to_share_means_no_registration_and_no_wait(tmp_path):
    with core_share.sharing(devices.available_cores(), tmp_path, settle=30) as share:
        assert share.path is None and share.threads() >= 1
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    share = core_share.CoreShare(unwritable / "registry", workers=1)
    share.register()
    assert share.path is None and share.threads({}) >= 1


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
