"""Golden PSNR curves of a small fixed-seed DIP fit: their settings, the fit, the stored files.

    python -m tests.golden.regenerate            # rewrite every curve
    python -m tests.golden.regenerate bf16       # rewrite the bf16 curves only

Two cases, each fitted in fp32 and in bf16 (`DipFit(precision=...)`): `sample`, a 32x32 crop
of the committed dataset/sample pair `chelsea` (real colour content, synthetic camera noise),
and `synthetic`, `tests.conftest.smooth_image` plus Gaussian noise of std 0.1. Every
`SETTINGS.save_iter` iterations the curve records PSNR (dB) of the averaged output against the
clean and against the noisy image, unquantised. Files: `<case>_<precision>.csv` beside this
module. Rewrite them only when the method is meant to change, in the same commit, saying why.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch

from models.skip import SkipConfig
from tests.conftest import ROOT, smooth_image
from utils import image_io, metrics
from utils.dip import devices
from utils.dip.fitting import DipFit, build_network, run_fit, to_array, to_tensor
from utils.method import FitSettings

FOLDER = Path(__file__).resolve().parent
CASES = ("sample", "synthetic")
PRECISIONS = ("fp32", "bf16")
SIDE = 32
SEED = 0
NOISE_STD = 0.1
CONFIG = SkipConfig(input_depth=8, channels_down=16, channels_up=16, channels_skip=4, num_scales=3)
SETTINGS = FitSettings(num_iter=200, save_iter=10)
COLUMNS = ("iteration", "psnr_clean", "psnr_noisy")


def case_images(case: str) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) of a case: (SIDE, SIDE, 3) float32 in [0, 1]."""
    if case == "sample":
        top, left = 16, 24
        pair = [
            image_io.read_image(ROOT / "dataset" / "sample" / kind / "chelsea.png").pixels
            for kind in ("real", "mean")
        ]
        noisy, clean = (pixels[top : top + SIDE, left : left + SIDE] for pixels in pair)
        return noisy, clean
    if case == "synthetic":
        clean = smooth_image(SIDE, SIDE, 3, seed=3).astype(np.float32)
        noise = np.random.default_rng(4).normal(0.0, NOISE_STD, clean.shape)
        return np.clip(clean + noise, 0.0, 1.0).astype(np.float32), clean
    raise ValueError(f"case must be one of {CASES}, got {case!r}")


class CurveRecorder:
    """Run-fit callback: every `every` iterations a row (iteration, PSNR vs clean, PSNR vs
    noisy) of the averaged output (1, C, H, W)."""

    def __init__(self, noisy: np.ndarray, clean: np.ndarray, every: int) -> None:
        self.noisy, self.clean, self.every = noisy, clean, every
        self.rows: list[tuple[float, float, float]] = []

    def on_iteration(self, fit: DipFit, output: torch.Tensor, loss: torch.Tensor) -> None:
        if fit.iteration % self.every:
            return
        average = to_array(fit.average)
        self.rows.append(
            (
                fit.iteration,
                metrics.psnr(average, self.clean),
                metrics.psnr(average, self.noisy),
            )
        )


def fit_curve(
    case: str,
    precision: str,
    settings: FitSettings = SETTINGS,
    channels_last: bool = False,
) -> np.ndarray:
    """The curve of one case: (num_iter / save_iter, 3) rows of `COLUMNS`. `channels_last`
    stores network and input channels-last (the same fit, other kernels: rounding only)."""
    noisy, clean = case_images(case)
    device = torch.device("cpu")
    net = build_network(CONFIG, SEED, device)
    noisy_tensor = to_tensor(noisy, device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        noisy_tensor = noisy_tensor.contiguous(memory_format=torch.channels_last)
    fit = DipFit(net, noisy_tensor, settings, [SEED], precision=precision)
    if channels_last:
        fit.base_input = fit.base_input.contiguous(memory_format=torch.channels_last)
    recorder = CurveRecorder(noisy, clean, settings.save_iter)
    run_fit(fit, [recorder])
    return np.array(recorder.rows, dtype=np.float64)


def curve_path(case: str, precision: str) -> Path:
    return FOLDER / f"{case}_{precision}.csv"


def write_curve(path: Path, curve: np.ndarray) -> None:
    """Rows of `COLUMNS`, PSNR to 4 decimals (0.1 mdB, far below any tolerance)."""
    lines = [",".join(COLUMNS)]
    lines += [f"{int(row[0])},{row[1]:.4f},{row[2]:.4f}" for row in curve]
    path.write_text("\n".join(lines) + "\n")


def read_curve(path: Path) -> np.ndarray:
    """A stored curve: (rows, 3) float64 of `COLUMNS`."""
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return np.array([[float(row[column]) for column in COLUMNS] for row in rows])


def bf16_machine_path() -> Path:
    """The bf16 instruction set the bf16 curves were fitted with (`devices.bf16_instructions`):
    a CPU with another one rounds bf16 differently, and its comparison is skipped."""
    return FOLDER / "bf16_instructions.txt"


def main(argv: list[str]) -> int:
    """Rewrite the curves of the precisions named in `argv` (default: all)."""
    precisions = argv or list(PRECISIONS)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        print(f"usage: python -m tests.golden.regenerate [{' | '.join(PRECISIONS)}]...")
        return 2
    torch.set_num_threads(1)
    for precision in precisions:
        for case in CASES:
            curve = fit_curve(case, precision)
            write_curve(curve_path(case, precision), curve)
            print(f"{curve_path(case, precision)}: final {curve[-1, 1]:.2f} dB vs clean")
        if precision == "bf16":
            bf16_machine_path().write_text(devices.bf16_instructions() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
