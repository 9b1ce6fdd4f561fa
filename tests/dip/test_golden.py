"""Golden PSNR curves: a small fixed-seed DIP fit must keep reproducing its stored curve.

The fit, its settings and the two cases (a 32x32 crop of the committed dataset/sample pair
`chelsea`, and a smooth synthetic image with Gaussian noise) are `tests.golden.regenerate`'s;
the curves (PSNR of the averaged output against the clean and the noisy image every 10 of 200
iterations) are `tests/golden/<case>_<precision>.csv`. Nothing here reads git history.

Tolerance: the largest difference over all points of both columns, per precision, between
what kernel rounding does and what a change of the method does (measured on both cases,
`dataclasses.replace(regenerate.SETTINGS, ...)`; largest of the two cases for rounding, smallest
for a method change):

| change | fp32 | bf16 |
|---|---|---|
| rounding: network and input channels-last instead of NCHW | 0.033 | 0.094 |
| rounding: 2 threads instead of 1 (measured on a 1-core machine) | 0.000 | 0.007 |
| method: L1 loss instead of MSE | 0.17 | 0.15 |
| method: input noise scale 0.2 instead of 0.1 | 0.49 | 0.46 |
| method: no input perturbation (reg_noise_std 0) | 1.3 | 1.3 |
| method: exponential weight 0.98 instead of 0.99 | 5.5 | 5.6 |
| (small) lr 0.011 instead of 0.01 | 0.044 | 0.086 |

So 0.08 dB for fp32 and 0.12 dB for bf16: a 10% change of the learning rate passes, an L1
loss does not. Dropping backtracking changes nothing here (no 5 dB drop happens in 200
iterations); `test_dip_fit_equals_a_plain_reference` covers it with a threshold that fires.
The bf16 margin is thin and bf16 kernels differ between CPUs (AMX, AVX512-BF16 or emulated):
the bf16 curves are compared only on a CPU with the bf16 instructions they were fitted with
(`tests/golden/bf16_instructions.txt`), skipped elsewhere with the reason.

Changing the numbers on purpose (a change of the method, or of the bf16 path) means rerunning
`python -m tests.golden.regenerate` (or `... regenerate bf16`) in the same commit, with the
reason in its message.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from models.skip import SkipNet
from tests.golden import regenerate as golden
from utils.dip import devices
from utils.dip.fitting import DipFit, build_network, to_tensor
from utils.method import FitSettings

TOLERANCE_DB = {"fp32": 0.08, "bf16": 0.12}


@pytest.mark.parametrize("precision", golden.PRECISIONS)
@pytest.mark.parametrize("case", golden.CASES)
def test_fit_reproduces_its_golden_curve(case: str, precision: str):
    if precision == "bf16":
        fitted_with = golden.bf16_machine_path().read_text().strip()
        if devices.bf16_instructions() != fitted_with:
            pytest.skip(
                f"the bf16 curves were fitted with {fitted_with or 'no bf16 instructions'}, this "
                f"CPU has {devices.bf16_instructions() or 'none'}: its bf16 rounds differently"
            )
    stored = golden.read_curve(golden.curve_path(case, precision))
    curve = golden.fit_curve(case, precision)
    np.testing.assert_array_equal(curve[:, 0], stored[:, 0])
    difference = np.abs(curve[:, 1:] - stored[:, 1:]).max()
    assert difference <= TOLERANCE_DB[precision], (
        f"{case} {precision}: the PSNR curve moved by {difference:.3f} dB (tolerance "
        f"{TOLERANCE_DB[precision]} dB). If the method changed on purpose, run "
        f"`python -m tests.golden.regenerate {precision}` and commit the curves with the reason."
    )


def test_golden_curves_show_denoising():
    """The stored curves are a fit that denoises: the averaged output ends closer to the clean
    image than the noisy input is, and still below fitting the noise."""
    for case in golden.CASES:
        noisy, clean = golden.case_images(case)
        noisy_psnr = -10 * math.log10(float(np.mean((noisy - clean) ** 2)))
        for precision in golden.PRECISIONS:
            curve = golden.read_curve(golden.curve_path(case, precision))
            assert curve[-1, 1] > noisy_psnr + 2, (case, precision)
            assert curve[-1, 2] < 35, (case, precision)


def reference_curve(
    net: SkipNet, noisy: np.ndarray, clean: np.ndarray, settings: FitSettings, seed: int
) -> tuple[np.ndarray, int]:
    """The DIP fit written out plainly for one image (H, W, 3) in [0, 1]: fixed uniform input
    perturbed every iteration, MSE to the noisy image, Adam, an exponential average of the
    outputs, backtracking on a PSNR drop. Returns (rows of iteration, PSNR vs clean, PSNR vs
    noisy of the average, every save_iter iterations; the number of backtracks)."""
    height, width = noisy.shape[:2]
    target = torch.from_numpy(noisy).permute(2, 0, 1)[None]
    input_generator = torch.Generator().manual_seed(seed)
    net_input = (
        torch.rand(1, net.config.input_depth, height, width, generator=input_generator)
        * settings.input_noise_scale
    )
    perturbation = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    good_weights = [parameter.detach().clone() for parameter in net.parameters()]
    good_psnr = torch.tensor(-math.inf)
    average = None
    rows, backtracks = [], 0
    for iteration in range(1, settings.num_iter + 1):
        noise = torch.randn(net_input.shape, generator=perturbation) * settings.reg_noise_std
        output = net(net_input + noise)
        loss = ((output - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        output = output.detach()
        weight = settings.exp_weight
        average = output if average is None else weight * average + (1 - weight) * output
        psnr_noisy = -10 * torch.log10(loss.detach())
        with torch.no_grad():
            if psnr_noisy < good_psnr - settings.backtrack_db:
                backtracks += 1
                for parameter, good in zip(net.parameters(), good_weights):
                    parameter.copy_(good)
            else:
                good_psnr = psnr_noisy
                for parameter, good in zip(net.parameters(), good_weights):
                    good.copy_(parameter)
        optimizer.step()
        if iteration % settings.save_iter == 0:
            pixels = average[0].permute(1, 2, 0).numpy()
            rows.append(
                [
                    iteration,
                    -10 * math.log10(float(np.mean((pixels - clean) ** 2))),
                    -10 * math.log10(float(np.mean((pixels - noisy) ** 2))),
                ]
            )
    return np.array(rows), backtracks


def test_dip_fit_equals_a_plain_reference():
    """DipFit follows the plain loop above from the same initial weights and generator seeds
    (input from `seed`, perturbations from `seed + 1`), backtracking included: a 0.05 dB
    threshold makes it fire (31 times in 100 iterations). Measured: 4e-7 dB apart."""
    settings = dataclasses.replace(golden.SETTINGS, num_iter=100, backtrack_db=0.05)
    noisy, clean = golden.case_images("synthetic")
    expected, backtracks = reference_curve(
        build_network(golden.CONFIG, golden.SEED, torch.device("cpu")),
        noisy,
        clean,
        settings,
        golden.SEED,
    )
    assert backtracks >= 10
    net = build_network(golden.CONFIG, golden.SEED, torch.device("cpu"))
    fit = DipFit(net, to_tensor(noisy, torch.device("cpu")), settings, [golden.SEED])
    recorder = golden.CurveRecorder(noisy, clean, settings.save_iter)
    while fit.iteration < settings.num_iter:
        output, loss = fit.step()
        recorder.on_iteration(fit, output, loss)
    np.testing.assert_allclose(np.array(recorder.rows), expected, rtol=0, atol=1e-4)
