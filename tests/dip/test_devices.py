"""utils/dip/devices.py: the --gpu_id list, the device it resolves to, precision settings."""

from __future__ import annotations

import logging

import pytest
import torch

from utils.dip import devices


@pytest.mark.parametrize(
    "text, ids",
    [
        ("0", [0]),
        ("0,1,3", [0, 1, 3]),
        (" 2 ", [2]),
        ("cpu", []),
        ("CPU", []),
        ("-1", []),
        ("", []),
    ],
)
def test_gpu_id_lists(text, ids):
    assert devices.parse_gpu_ids(text) == ids


@pytest.mark.parametrize("text", ["a", "0,,1", "0,-2", "1,1", "0.5"])
def test_bad_gpu_id_lists_are_value_errors_naming_the_text(text):
    with pytest.raises(ValueError, match="invalid GPU id list"):
        devices.parse_gpu_ids(text)


def test_no_id_is_the_cpu():
    assert devices.resolve_device(None) == torch.device("cpu")


def test_without_cuda_a_gpu_id_runs_on_the_cpu_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger=devices.LOGGER.name):
        assert devices.resolve_device(1) == torch.device("cpu")
    assert "CUDA is not available" in caplog.text and "GPU 1" in caplog.text


def test_a_gpu_that_does_not_exist_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve_device(1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"GPU 2 does not exist: this machine has 2 CUDA device"):
        devices.resolve_device(2)


def test_precision_is_checked_and_leaves_the_cpu_alone(caplog):
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16"):
        devices.configure_precision("fp16", torch.device("cpu"))
    benchmark = torch.backends.cudnn.benchmark
    with caplog.at_level(logging.WARNING, logger=devices.LOGGER.name):
        devices.configure_precision("tf32", torch.device("cpu"))
    assert "tf32 has no effect" in caplog.text
    assert torch.backends.cudnn.benchmark == benchmark
