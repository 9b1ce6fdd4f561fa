import numpy as np
import pytest
import torch

from models.skip import SkipConfig
from utils.dip.fitting import (
    DipFit,
    FitSettings,
    build_network,
    pad_image,
    padded_side,
    run_fit,
    to_tensor,
)

SMALL = SkipConfig(input_depth=8, channels_down=8, channels_up=8, channels_skip=2)


def small_fit(seed=0, settings=FitSettings(num_iter=6, save_iter=2), size=64):
    noisy = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(5))
    return DipFit(build_network(SMALL, seed, torch.device("cpu")), noisy, settings, [seed])


@pytest.mark.parametrize("side, expected", [(16, 64), (64, 64), (65, 96), (100, 128), (512, 512)])
def test_padded_side(side, expected):
    assert padded_side(side, 32) == expected


@pytest.mark.parametrize("shape", [(50, 70, 3), (33, 64), (16, 16, 3)])
def test_pad_then_crop_gives_back_the_image(shape):
    pixels = np.random.default_rng(0).random(shape).astype(np.float32)
    padded, padding = pad_image(pixels, 32)
    assert padded.shape[0] % 32 == 0 and padded.shape[1] % 32 == 0 and min(padded.shape[:2]) >= 64
    np.testing.assert_array_equal(padding.crop(padded), pixels)


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="too small"):
        pad_image(np.zeros((15, 40, 3), np.float32), 32)


@pytest.mark.parametrize(
    "settings",
    [
        FitSettings(num_iter=0),
        FitSettings(num_iter=10, save_iter=20),
        FitSettings(lr=-1),
        FitSettings(exp_weight=1.0),
    ],
)
def test_invalid_settings(settings):
    with pytest.raises(ValueError):
        settings.validate()


def test_cpu_fit_is_repeatable_bit_for_bit():
    first, second = small_fit(), small_fit()
    run_fit(first, [])
    run_fit(second, [])
    for a, b in zip(first.net.parameters(), second.net.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(first.average, second.average)


def test_other_seed_gives_other_result():
    first, second = small_fit(seed=0), small_fit(seed=1)
    run_fit(first, [])
    run_fit(second, [])
    assert not torch.equal(first.average, second.average)


def test_state_dict_resume_equals_uninterrupted_fit():
    whole = small_fit()
    run_fit(whole, [])
    part = small_fit()
    while part.iteration < 3:
        part.step()
    state = part.state_dicts()
    resumed = small_fit(seed=0)
    resumed.load_state_dicts(state)
    run_fit(resumed, [])
    assert resumed.iteration == whole.iteration
    for a, b in zip(whole.net.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(whole.average, resumed.average)


def test_backtracking_restores_last_good_parameters():
    fit = small_fit(settings=FitSettings(num_iter=10, save_iter=1))
    fit.step()
    good = [p.detach().clone() for p in fit.parameters]
    fit.backtrack(fit.last_psnr + 1.0)  # an improvement: current parameters become the good copy
    for p in fit.parameters:
        p.data.add_(1.0)
    fit.backtrack(fit.last_psnr - 6.0)  # a 6 dB drop: parameters restored
    for p, g in zip(fit.parameters, good):
        assert torch.equal(p, g)


def test_backtracking_keeps_parameters_after_small_drop():
    fit = small_fit(settings=FitSettings(num_iter=10, save_iter=1))
    fit.step()
    fit.backtrack(torch.tensor([30.0]))
    for p in fit.parameters:
        p.data.add_(1.0)
    moved = [p.detach().clone() for p in fit.parameters]
    fit.backtrack(torch.tensor([26.0]))
    for p, m in zip(fit.parameters, moved):
        assert torch.equal(p, m)
    assert float(fit.last_psnr) == 26.0


def test_average_is_exponential_moving_average():
    fit = small_fit(settings=FitSettings(num_iter=10, save_iter=1, exp_weight=0.9, backtrack_db=0))
    first, _ = fit.step()
    assert torch.equal(fit.average, first)
    second, _ = fit.step()
    torch.testing.assert_close(fit.average, 0.9 * first + 0.1 * second)


def test_grayscale_tensor_layout():
    tensor = to_tensor(np.zeros((64, 80), np.float32), torch.device("cpu"))
    assert tensor.shape == (1, 1, 64, 80)
