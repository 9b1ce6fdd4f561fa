"""Speed options and batching: ms per iteration, images per hour, and the PSNR each option reaches.

For one image size on one device, in one process:
  * ms/iteration of the original-style loop (bench_dip.reference_loop) and of our loop in fp32,
    tf32, bf16 and compiled (fp32 + torch.compile);
  * the PSNR each option reaches after --psnr_iters iterations on a synthetic noisy image (same
    seed), and its difference from fp32 (the speed options must stay within 0.1 dB);
  * images per hour at the paper's 3000 iterations with --batch_images 1/4/8/16.

GPU (the issue's setting):  python bench/bench_scale.py --gpu_id 0 --size 512
CPU (CI-size machines):     python bench/bench_scale.py --gpu_id cpu --size 64 --batches 1 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_dip import device_name, reference_loop, synchronize, time_loop
from models.skip import SkipConfig, SkipNet, stack_states
from utils.dip import devices
from utils.dip.fitting import DipFit, build_network, to_array
from utils.method import FitSettings
from utils.metrics import psnr

PAPER_ITERATIONS = 3000
# (label, precision, compiled, seed): "fp32 seed1" shows how far two equally good fits drift
# apart, the yardstick for the other options' PSNR differences
OPTIONS = (
    ("fp32", "fp32", False, 0),
    ("fp32 seed1", "fp32", False, 1),
    ("tf32", "tf32", False, 0),
    ("bf16", "bf16", False, 0),
    ("compiled", "fp32", True, 0),
)


def make_fit(
    noisy: torch.Tensor,
    precision: str,
    compile_network: bool,
    iterations: int,
    first_seed: int = 0,
    config: SkipConfig | None = None,
) -> DipFit:
    """A fit of the K images in `noisy` (K, 3, H, W), networks seeded first_seed, first_seed+1, ..."""
    config = config or SkipConfig()
    count = noisy.shape[0]
    seeds = list(range(first_seed, first_seed + count))
    net = SkipNet(config, groups=count)
    net.load_state_dict(
        stack_states(
            [build_network(config, seed, torch.device("cpu")).state_dict() for seed in seeds]
        )
    )
    net = net.to(noisy.device)
    if noisy.device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    return DipFit(net, noisy, FitSettings(num_iter=iterations), seeds, precision, compile_network)


def ms_per_iteration(fit: DipFit, iterations: int, warmup: int) -> float:
    """Mean wall time of one `step()` after `warmup` steps, synchronised at both ends."""
    for _ in range(warmup):
        fit.step()
    synchronize(fit.noisy.device)
    start = time.perf_counter()
    for _ in range(iterations):
        fit.step()
    synchronize(fit.noisy.device)
    return (time.perf_counter() - start) / iterations * 1000


def synthetic_pair(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth clean image and a noisy copy (Gaussian, std 0.05), both (1, 3, size, size) in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    clean = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    ).clamp(0, 1)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    return clean.to(device), noisy.to(device)


def main(args: argparse.Namespace) -> None:
    ids = devices.parse_gpu_ids(args.gpu_id)
    device = devices.resolve_device(ids[0] if ids else None)
    print(
        f"device: {device_name(device)}; torch {torch.__version__}; image {args.size}x{args.size}"
    )
    clean, noisy = synthetic_pair(args.size, device)
    devices.configure_precision("fp32", device)
    with tempfile.TemporaryDirectory() as folder:
        reference_ms = 1000 / time_loop(
            reference_loop, noisy, FitSettings(), Path(folder), args.iterations, args.warmup
        )
    print(
        f"\n{'loop':<10} {'ms/iter':>9} {'it/s':>8} {'speed-up':>9} {'PSNR dB':>8} {'vs fp32':>8}"
    )
    print(
        f"{'original':<10} {reference_ms:>9.2f} {1000 / reference_ms:>8.1f} {1.0:>9.2f} {'':>8} {'':>8}"
    )
    fp32_psnr = None
    for label, precision, compile_network, seed in OPTIONS:
        devices.configure_precision(precision, device)
        ms = ms_per_iteration(
            make_fit(noisy, precision, compile_network, args.iterations),
            args.iterations,
            args.warmup,
        )
        quality_fit = make_fit(noisy, precision, compile_network, args.psnr_iters, seed)
        for _ in range(args.psnr_iters):
            quality_fit.step()
        quality = psnr(to_array(quality_fit.average), to_array(clean))
        fp32_psnr = quality if fp32_psnr is None else fp32_psnr
        print(
            f"{label:<10} {ms:>9.2f} {1000 / ms:>8.1f} {reference_ms / ms:>9.2f} {quality:>8.2f} {quality - fp32_psnr:>+8.2f}",
            flush=True,
        )
    devices.configure_precision(args.batch_precision, device)
    print(f"\nbatching ({args.batch_precision}; images per hour at {PAPER_ITERATIONS} iterations)")
    print(f"{'K':>4} {'ms/iter':>9} {'images/h':>10} {'vs K=1':>7}")
    single = None
    for count in args.batches:
        batch = noisy.expand(count, -1, -1, -1).contiguous()
        ms = ms_per_iteration(
            make_fit(batch, args.batch_precision, False, args.iterations),
            args.iterations,
            args.warmup,
        )
        per_hour = count * 3600 * 1000 / (ms * PAPER_ITERATIONS)
        single = per_hour if single is None else single
        print(f"{count:>4} {ms:>9.2f} {per_hour:>10.1f} {per_hour / single:>7.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=50, help="timed iterations per option")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--psnr_iters", type=int, default=1000, help="iterations of the PSNR check per option"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batch_precision", choices=("fp32", "tf32", "bf16"), default="bf16")
    parser.add_argument("--gpu_id", default="0")
    main(parser.parse_args())
