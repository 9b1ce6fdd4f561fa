"""Iterations per second of our DIP loop against a plain loop in the original's style.

Both loops fit the same network to the same noisy image on the same device in one process.
The reference loop does what the original did every iteration: `.item()` of the loss, PSNR of
the output on the host, and a CPU copy of all weights for backtracking; at snapshots it
computes metrics and writes the PNG synchronously. Ours is `utils.dip.fitting.run_fit` with the
snapshot writer thread. Usage:

    python bench/bench_dip.py --sizes 64 128 256 --gpu_id cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.skip import SkipConfig
from utils import image_io, metrics
from utils.dip import devices
from utils.dip.fitting import DipFit, Padding, build_network, run_fit, to_array
from utils.dip.snapshots import SnapshotTarget, SnapshotWriter, snapshot_metrics
from utils.method import FitSettings


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's architecture and torch thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_loop(
    noisy: torch.Tensor,
    settings: FitSettings,
    seed: int,
    folder: Path,
    iterations: int,
    config: SkipConfig | None = None,
) -> None:
    """The original's loop: host sync, host PSNR and a CPU weight copy every iteration."""
    config = config or SkipConfig()
    net = build_network(config, seed, noisy.device)
    net_input = torch.rand(1, config.input_depth, *noisy.shape[2:], device=noisy.device) * 0.1
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    noisy_host = to_array(noisy)
    average, last_psnr, last_net = None, -np.inf, None
    for iteration in range(1, iterations + 1):
        output = net(net_input + torch.randn_like(net_input) * settings.reg_noise_std)
        average = (
            output.detach()
            if average is None
            else average * settings.exp_weight + output.detach() * (1 - settings.exp_weight)
        )
        loss = F.mse_loss(output, noisy)
        optimizer.zero_grad()
        loss.backward()
        loss.item()
        psnr_now = metrics.psnr(np.clip(to_array(output), 0, 1), noisy_host)
        if psnr_now - last_psnr < -settings.backtrack_db:
            for parameter, saved in zip(net.parameters(), last_net):
                parameter.data.copy_(saved.to(noisy.device))
        else:
            last_net = [parameter.detach().cpu() for parameter in net.parameters()]
            last_psnr = psnr_now
        optimizer.step()
        if iteration % settings.save_iter == 0:
            pixels = np.clip(to_array(average), 0, 1)
            snapshot_metrics(
                np.clip(to_array(output.detach()), 0, 1), pixels, noisy_host, noisy_host
            )
            image_io.write_png(folder / f"ref_{iteration:05d}.png", pixels)


def our_loop(
    noisy: torch.Tensor, settings: FitSettings, seed: int, folder: Path, iterations: int
) -> None:
    """`run_fit` with the threaded snapshot writer (metrics against the noisy image as reference)."""
    fit_settings = dataclasses.replace(settings, num_iter=iterations)
    fit = DipFit(build_network(SkipConfig(), seed, noisy.device), noisy, fit_settings, [seed])
    host = to_array(noisy)
    writer = SnapshotWriter(
        [SnapshotTarget(folder, Padding(0, 0, *host.shape[:2]), host, host, 8, [])],
        settings.save_iter,
    )
    try:
        run_fit(fit, [writer])
        writer.flush()
    finally:
        writer.close()


def time_loop(loop, noisy, settings, folder, iterations, warmup) -> float:
    """Iterations per second of `loop` after `warmup` iterations."""
    loop(noisy, settings, 0, folder, warmup)
    synchronize(noisy.device)
    start = time.perf_counter()
    loop(noisy, settings, 0, folder, iterations)
    synchronize(noisy.device)
    return iterations / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    ids = devices.parse_gpu_ids(args.gpu_id)
    device = devices.resolve_device(ids[0] if ids else None)
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(f"{'size':>6} {'iters':>6} {'reference it/s':>15} {'ours it/s':>10} {'ratio':>6}")
    settings = FitSettings(save_iter=args.save_iter)
    with tempfile.TemporaryDirectory() as folder:
        for size, iterations in zip(args.sizes, args.iterations):
            noisy = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(
                device
            )
            reference = time_loop(
                reference_loop, noisy, settings, Path(folder), iterations, args.warmup
            )
            ours = time_loop(our_loop, noisy, settings, Path(folder), iterations, args.warmup)
            print(
                f"{size:>6} {iterations:>6} {reference:>15.2f} {ours:>10.2f} {ours / reference:>6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument(
        "--iterations", type=int, nargs="+", default=[40, 20, 10], help="timed iterations per size"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--save_iter", type=int, default=10)
    parser.add_argument("--gpu_id", default="0")
    main(parser.parse_args())
