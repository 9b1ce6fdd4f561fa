"""The Deep Image Prior fitting loop: one noisy image, one network, device-side only.

A `DipFit` owns everything that changes during a fit (network, optimiser, averaged output,
backtracking copy, random generator, iteration); `step()` enqueues one iteration of the method
(`utils.method.fit_step`) without any host-device synchronisation; periodic work (snapshots, checkpoints, progress) lives in callbacks
called by `run_fit`, so the loop itself stays small.

Tensors are (1, C, H, W) float32 in [0, 1] on the fit's device; H and W are the padded size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import numpy as np
import torch

from models.skip import SkipConfig, SkipNet, stack_states, unstack_state
from utils import method
from utils.method import FitSettings

MIN_SIDE = 16


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
        raise ValueError(
            f"image too small to process: {height}x{width}, needs at least {MIN_SIDE} pixels per side"
        )
    extra_height = padded_side(height, multiple) - height
    extra_width = padded_side(width, multiple) - width
    top, left = extra_height // 2, extra_width // 2
    pad = [(top, extra_height - top), (left, extra_width - left)] + [(0, 0)] * (pixels.ndim - 2)
    return np.pad(pixels, pad, mode="reflect"), Padding(top, left, height, width)


def to_tensor(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """HWC/HW float array -> (1, C, H, W) float32 tensor on `device`."""
    array = pixels[..., None] if pixels.ndim == 2 else pixels
    return (
        torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        .float()
        .unsqueeze(0)
        .to(device)
    )


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> HWC float32 array (HW when C = 1), on the host."""
    array = tensor.detach().float().cpu().numpy()[0].transpose(1, 2, 0)
    return array[..., 0] if array.shape[2] == 1 else array


def build_network(config: SkipConfig, seed: int, device: torch.device) -> SkipNet:
    """A freshly initialised network, reproducible from `seed` without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SkipNet(config)
    return net.to(device)


def channels_last(device: torch.device, precision: str) -> bool:
    """Whether a fit keeps its tensors channels-last: on a GPU, and in bf16 on the CPU (oneDNN's
    bf16 convolutions run channels-last; 1.2x at 256x256, bench/bench_cpu.py). fp32 on the CPU
    stays NCHW, so its numbers stay those of every earlier run."""
    return device.type == "cuda" or precision == "bf16"


def grouped_network(
    config: SkipConfig, states: list[dict], device: torch.device, precision: str = "fp32"
) -> SkipNet:
    """One network of K groups holding the K single-network `states`, on `device` (channels-last
    where `channels_last` says): the network `DipFit` fits K same-size images with."""
    net = SkipNet(config, groups=len(states))
    net.load_state_dict(stack_states(states))
    net = net.to(device)
    if channels_last(device, precision):
        net = net.to(memory_format=torch.channels_last)
    return net


def make_input(
    config: SkipConfig, height: int, width: int, scale: float, seed: int
) -> torch.Tensor:
    """Fixed network input: uniform noise in [0, scale), (1, input_depth, H, W), on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, config.input_depth, height, width, generator=generator) * scale


def stack_optimizer_states(states: list[dict]) -> dict:
    """K single-network Adam state dicts -> the state dict for the stacked parameters."""
    stacked = {"param_groups": states[0]["param_groups"], "state": {}}
    for index, first in states[0]["state"].items():
        stacked["state"][index] = {
            key: torch.cat([state["state"][index][key] for state in states])
            if value.dim()
            else value.clone()
            for key, value in first.items()
        }
    return stacked


def unstack_optimizer_state(state: dict, groups: int) -> list[dict]:
    """Adam state dict of stacked parameters -> K single-network state dicts."""
    return [
        {
            "param_groups": state["param_groups"],
            "state": {
                index: {
                    key: value.chunk(groups)[image].clone() if value.dim() else value.clone()
                    for key, value in entry.items()
                }
                for index, entry in state["state"].items()
            },
        }
        for image in range(groups)
    ]


class DipFit:
    """State of a DIP fit of K same-size images, each with its own network (K = net.groups).

    Adam is elementwise and the networks do not share weights, so fitting them together gives
    each image the fit it would get alone (up to floating-point rounding of grouped kernels).
    `noisy` is (K, C, H, W) on the fit's device; `seeds` one per image.
    """

    def __init__(
        self,
        net: SkipNet,
        noisy: torch.Tensor,
        settings: FitSettings,
        seeds: list[int],
        precision: str = "fp32",
        compile_network: bool = False,
    ) -> None:
        images, channels, height, width = noisy.shape
        if images != net.groups or len(seeds) != images:
            raise ValueError(
                f"{images} images and {len(seeds)} seeds for a network of {net.groups} groups"
            )
        if channels != net.config.output_channels:
            raise ValueError(
                f"image has {channels} channels, network outputs {net.config.output_channels}"
            )
        self.net = net
        self.settings = settings
        self.noisy = noisy
        self.bf16 = precision == "bf16"
        self.forward = torch.compile(net) if compile_network else net
        device = noisy.device
        if settings.input_kind == "noisy_image":
            if net.config.input_depth != channels:
                raise ValueError(
                    f"the noisy image as input needs input_depth {channels}, "
                    f"got {net.config.input_depth}"
                )
            self.base_input = noisy.reshape(1, -1, height, width).clone()
        else:
            self.base_input = torch.cat(
                [
                    make_input(net.config, height, width, settings.input_noise_scale, seed)
                    for seed in seeds
                ],
                dim=1,
            ).to(device, noisy.dtype)
        self.memory_format = (
            torch.channels_last if channels_last(device, precision) else torch.contiguous_format
        )
        self.base_input = self.base_input.contiguous(memory_format=self.memory_format)
        self.generators = [torch.Generator(device=device).manual_seed(seed + 1) for seed in seeds]
        self.optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
        self.parameters = [parameter for parameter in net.parameters()]
        self.last_good = [parameter.detach().clone() for parameter in self.parameters]
        self.last_psnr = torch.full((images,), -math.inf, device=device, dtype=noisy.dtype)
        self.average: torch.Tensor | None = None
        self.iteration = 0
        self.stopped = False

    @property
    def images(self) -> int:
        """K, the number of images fitted together (one network each)."""
        return self.net.groups

    def noise_like(
        self, tensor: torch.Tensor, std: float, random_std: bool = False
    ) -> torch.Tensor:
        """Gaussian noise of `tensor`'s shape, one block per image (`method.noise_blocks`)."""
        return method.noise_blocks(self.generators, tensor, std, random_std)

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration (`method.fit_step`): (raw outputs (K, C, H, W), losses (K,)) as device
        tensors (no sync)."""
        return method.fit_step(self)

    def backtrack(self, psnr_now: torch.Tensor) -> None:
        """Backtrack on PSNRs (K,) against the noisy images (`method.backtrack`)."""
        method.backtrack(self, psnr_now)

    def state_dicts(self) -> list[dict]:
        """One state per image: everything needed to continue its fit bit for bit, alone or batched."""
        images = self.images
        nets = unstack_state(self.net.state_dict(), images)
        optimizers = unstack_optimizer_state(self.optimizer.state_dict(), images)
        inputs = self.base_input.chunk(images, dim=1)
        last_good = list(zip(*[last.chunk(images) for last in self.last_good]))
        return [
            {
                "iteration": self.iteration,
                "net": nets[image],
                "optimizer": optimizers[image],
                "base_input": inputs[image].clone(),
                "generator": self.generators[image].get_state(),
                "last_good": [last.clone() for last in last_good[image]],
                "last_psnr": self.last_psnr[image].clone(),
                "average": None
                if self.average is None
                else self.average[image : image + 1].clone(),
            }
            for image in range(images)
        ]

    def load_state_dicts(self, states: list[dict]) -> None:
        """Continue from one `state_dicts()` entry per image (all at the same iteration)."""
        iterations = {int(state["iteration"]) for state in states}
        if len(states) != self.images or len(iterations) != 1:
            raise ValueError(
                f"need {self.images} states of one iteration, got iterations {sorted(iterations)}"
            )
        device = self.noisy.device
        self.iteration = iterations.pop()
        self.net.load_state_dict(stack_states([state["net"] for state in states]))
        self.optimizer.load_state_dict(
            stack_optimizer_states([state["optimizer"] for state in states])
        )
        self.base_input = (
            torch.cat([state["base_input"] for state in states], dim=1)
            .to(device)
            .contiguous(memory_format=self.memory_format)
        )
        for generator, state in zip(self.generators, states):
            generator.set_state(state["generator"].cpu())
        for index, last in enumerate(self.last_good):
            last.copy_(torch.cat([state["last_good"][index] for state in states]))
        self.last_psnr = torch.stack([state["last_psnr"].reshape(()) for state in states]).to(
            device
        )
        averages = [state["average"] for state in states]
        self.average = None if averages[0] is None else torch.cat(averages).to(device)


class FitCallback(Protocol):
    """Periodic work outside the loop; every method receives device tensors (no sync needed)."""

    def on_iteration(self, fit: DipFit, output: torch.Tensor, loss: torch.Tensor) -> None:
        """After each step (counted in `fit.iteration`): its raw outputs (K, C, H, W) and
        losses (K,)."""


def run_fit(fit: DipFit, callbacks: list[FitCallback]) -> None:
    """Iterate from the fit's current iteration to `num_iter` (or until a callback sets
    `fit.stopped`), calling the callbacks after each step."""
    while fit.iteration < fit.settings.num_iter and not fit.stopped:
        output, loss = fit.step()
        for callback in callbacks:
            callback.on_iteration(fit, output, loss)
