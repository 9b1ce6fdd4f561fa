"""The Deep Image Prior fitting loop: one noisy image, one network, device-side only.

A `DipFit` owns everything that changes during a fit (network, optimiser, averaged output,
backtracking copy, random generator, iteration). `step()` enqueues one iteration without any
host-device synchronisation; periodic work (snapshots, checkpoints, progress) lives in callbacks
called by `run_fit`, so the loop itself stays small.

Tensors are (1, C, H, W) float32 in [0, 1] on the fit's device; H and W are the padded size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from models.skip import SkipConfig, SkipNet

MIN_SIDE = 16


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of one DIP fit (defaults: upstream DIP denoising, DESIGN.md)."""

    num_iter: int = 3000
    save_iter: int = 20
    lr: float = 0.01
    reg_noise_std: float = 1.0 / 30.0
    target_noise_std: float = 0.0
    exp_weight: float = 0.99
    input_noise_scale: float = 0.1
    backtrack_db: float = 5.0

    def validate(self) -> None:
        """Raise ValueError for settings that cannot run."""
        if self.num_iter < 1:
            raise ValueError(f"num_iter must be positive, got {self.num_iter}")
        if not 1 <= self.save_iter <= self.num_iter:
            raise ValueError(f"save_iter must be in 1..num_iter ({self.num_iter}), got {self.save_iter}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.reg_noise_std < 0 or self.target_noise_std < 0 or self.input_noise_scale <= 0:
            raise ValueError("noise levels must be >= 0 (input_noise_scale > 0)")
        if not 0 <= self.exp_weight < 1:
            raise ValueError(f"exp_weight must be in [0, 1), got {self.exp_weight}")
        if self.backtrack_db < 0:
            raise ValueError(f"backtrack_db must be >= 0 (0 disables), got {self.backtrack_db}")


@dataclasses.dataclass(frozen=True)
class Padding:
    """Where the original image lies inside the padded one."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Crop an HWC/HW array of the padded size back to the original size."""
        return array[self.top : self.top + self.height, self.left : self.left + self.width]


def padded_side(side: int, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= side and >= 2 * multiple."""
    return max(2 * multiple, -(-side // multiple) * multiple)


def pad_image(pixels: np.ndarray, multiple: int) -> tuple[np.ndarray, Padding]:
    """Reflection-pad an HWC/HW image so both sides are valid network sizes (see `padded_side`)."""
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"image too small to process: {height}x{width}, needs at least {MIN_SIDE} pixels per side")
    extra_height = padded_side(height, multiple) - height
    extra_width = padded_side(width, multiple) - width
    top, left = extra_height // 2, extra_width // 2
    pad = [(top, extra_height - top), (left, extra_width - left)] + [(0, 0)] * (pixels.ndim - 2)
    return np.pad(pixels, pad, mode="reflect"), Padding(top, left, height, width)


def to_tensor(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """HWC/HW float array -> (1, C, H, W) float32 tensor on `device`."""
    array = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().unsqueeze(0).to(device)


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> HWC float32 array (HW when C = 1), on the host."""
    array = tensor.detach().float().cpu().numpy()[0].transpose(1, 2, 0)
    return array[..., 0] if array.shape[2] == 1 else array


def psnr_tensor(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (data range 1) as a 0-d tensor on the device; no host synchronisation."""
    return -10.0 * torch.log10(F.mse_loss(output, target))


def build_network(config: SkipConfig, seed: int, device: torch.device) -> SkipNet:
    """A freshly initialised network, reproducible from `seed` without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SkipNet(config)
    return net.to(device)


def make_input(config: SkipConfig, height: int, width: int, scale: float, seed: int) -> torch.Tensor:
    """Fixed network input: uniform noise in [0, scale), (1, input_depth, H, W), on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, config.input_depth, height, width, generator=generator) * scale


class DipFit:
    """State of one DIP fit; `step()` runs one iteration on the device."""

    def __init__(self, net: SkipNet, noisy: torch.Tensor, settings: FitSettings, seed: int) -> None:
        if noisy.shape[1] != net.config.output_channels:
            raise ValueError(f"image has {noisy.shape[1]} channels, network outputs {net.config.output_channels}")
        self.net = net
        self.settings = settings
        self.noisy = noisy
        device = noisy.device
        self.base_input = make_input(net.config, noisy.shape[2], noisy.shape[3], settings.input_noise_scale, seed).to(device)
        self.generator = torch.Generator(device=device).manual_seed(seed + 1)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
        self.parameters = [parameter for parameter in net.parameters()]
        self.last_good = [parameter.detach().clone() for parameter in self.parameters]
        self.last_psnr = torch.full((), -math.inf, device=device)
        self.average: torch.Tensor | None = None
        self.iteration = 0

    def noise_like(self, tensor: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(tensor.shape, generator=self.generator, device=tensor.device) * std

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration; returns (raw output, loss) as device tensors (no sync)."""
        settings = self.settings
        net_input = self.base_input
        if settings.reg_noise_std > 0:
            net_input = net_input + self.noise_like(net_input, settings.reg_noise_std)
        target = self.noisy
        if settings.target_noise_std > 0:
            target = target + self.noise_like(target, settings.target_noise_std)
        output = self.net(net_input)
        loss = F.mse_loss(output, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        output = output.detach()
        with torch.no_grad():
            if self.average is None:
                self.average = output.clone()
            else:
                self.average.mul_(settings.exp_weight).add_(output, alpha=1.0 - settings.exp_weight)
            if settings.backtrack_db > 0:
                self.backtrack(psnr_tensor(output, self.noisy))
        self.optimizer.step()
        self.iteration += 1
        return output, loss.detach()

    @torch.no_grad()
    def backtrack(self, psnr_now: torch.Tensor) -> None:
        """Restore the last good parameters if PSNR vs the noisy image fell by > backtrack_db.

        On an accelerator the choice is made on the device with `torch.where` (no host round
        trip, no CPU copy); on the CPU, where there is nothing to wait for, a host branch
        copies each parameter once instead of twice. Both give identical values.
        """
        good = psnr_now >= self.last_psnr - self.settings.backtrack_db
        if good.device.type == "cpu":
            if bool(good):
                torch._foreach_copy_(self.last_good, self.parameters)
            else:
                torch._foreach_copy_(self.parameters, self.last_good)
        else:
            for parameter, last in zip(self.parameters, self.last_good):
                torch.where(good, parameter, last, out=last)
                parameter.copy_(last)
        torch.where(good, psnr_now, self.last_psnr, out=self.last_psnr)

    def state_dict(self) -> dict:
        """Everything needed to continue the fit bit for bit (tensors stay on their device)."""
        return {
            "iteration": self.iteration,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "base_input": self.base_input,
            "generator": self.generator.get_state(),
            "last_good": self.last_good,
            "last_psnr": self.last_psnr,
            "average": self.average,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` output (possibly loaded with map_location)."""
        device = self.noisy.device
        self.iteration = int(state["iteration"])
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.base_input = state["base_input"].to(device)
        self.generator.set_state(state["generator"].cpu())
        for last, saved in zip(self.last_good, state["last_good"]):
            last.copy_(saved)
        self.last_psnr = state["last_psnr"].to(device)
        self.average = None if state["average"] is None else state["average"].to(device)


class FitCallback(Protocol):
    """Periodic work outside the loop; every method receives device tensors (no sync needed)."""

    def on_iteration(self, fit: DipFit, output: torch.Tensor, loss: torch.Tensor) -> None: ...


def run_fit(fit: DipFit, callbacks: list[FitCallback]) -> None:
    """Iterate from the fit's current iteration to `num_iter`, calling callbacks after each step."""
    while fit.iteration < fit.settings.num_iter:
        output, loss = fit.step()
        for callback in callbacks:
            callback.on_iteration(fit, output, loss)
