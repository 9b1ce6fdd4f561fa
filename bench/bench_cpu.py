"""The CPU fast path: ms per DIP iteration by size, threads, images per fit and variant, beside
the arithmetic limit, where the time goes, and two commands sharing the machine.

Variants (each a `DipFit` step, the loop of run_BDN.py):
  fp32-nchw   today's CPU default before the fast path (fp32, NCHW)
  fp32-cl     fp32, channels-last
  bf16-cl     bfloat16 autocast with BatchNorm and the head in fp32, channels-last
              (`--precision bf16`)
  bf16-cl-compiled   the same under torch.compile
Times are the minimum over --repeats steps after one warm-up step, the variants interleaved,
so that a machine that gets busier slows them alike; each ratio is to fp32-nchw measured in the
same run. The limit is the iteration's FLOPs (torch's FLOP counter: forward and backward of the
convolutions) divided by the GEMM rate this process measures in that precision and thread count
(a large matrix product, the best a CPU kernel does here).

    python -m bench.bench_cpu --sizes 64 128 256 512 --threads 1 2 --images 1 4
    python -m bench.bench_cpu --profile 256           # time by kind of operation
    python -m bench.bench_cpu --contention 128 --variants bf16-cl   # alone, then two at once
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.skip import SkipConfig
from utils.dip import core_share, devices
from utils.dip.fitting import DipFit, build_network, grouped_network
from utils.method import FitSettings

VARIANTS = {  # name -> (precision, memory format, compiled)
    "fp32-nchw": ("fp32", torch.contiguous_format, False),
    "fp32-cl": ("fp32", torch.channels_last, False),
    "bf16-cl": ("bf16", torch.channels_last, False),
    "bf16-cl-compiled": ("bf16", torch.channels_last, True),
}
BASELINE = "fp32-nchw"
MAX_PIXELS = 512 * 512 * 2  # per fit: larger size x images combinations are skipped (minutes)
PROFILE_GROUPS = (  # (kind, substrings of the operator names it gathers), first match wins
    ("convolution", ("conv",)),
    ("batch norm", ("batch_norm",)),
    ("upsample", ("upsample",)),
    ("reflection pad", ("reflection_pad",)),
    ("activation", ("leaky_relu", "sigmoid")),
    ("optimizer (Adam)", ("_foreach", "adam", "lerp", "addcdiv", "addcmul")),
    ("copies and casts", ("copy_", "_to_copy", "clone", "contiguous", "cat")),
    ("random input noise", ("randn", "normal", "uniform")),
)


def make_fit(size: int, images: int, variant: str) -> DipFit:
    """A fit of `images` random size x size images in `variant` (seeded 0..images-1)."""
    precision, memory_format, compiled = VARIANTS[variant]
    cpu = torch.device("cpu")
    config = SkipConfig()
    states = [build_network(config, seed, cpu).state_dict() for seed in range(images)]
    net = grouped_network(config, states, cpu, precision).to(memory_format=memory_format)
    noisy = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    fit = DipFit(net, noisy, FitSettings(), list(range(images)), precision, compiled)
    fit.base_input = fit.base_input.contiguous(memory_format=memory_format)
    return fit


def seconds_per_step(fits: dict[str, DipFit], repeats: int) -> dict[str, float]:
    """Minimum seconds of one step of each fit over `repeats` interleaved rounds (after a
    warm-up step, which also compiles)."""
    times: dict[str, list[float]] = defaultdict(list)
    for round_index in range(repeats + 1):
        for name, fit in fits.items():
            start = time.perf_counter()
            fit.step()
            if round_index:
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def iteration_flops(size: int, images: int) -> int:
    """FLOPs of one fp32 forward and backward pass of `images` networks on size x size."""
    fit = make_fit(size, images, BASELINE)
    with FlopCounterMode(display=False) as counter:
        output = fit.net(fit.base_input)
        output.square().mean().backward()
    return counter.get_total_flops()


def gemm_rate(
    dtype: torch.dtype, largest: int = 2048, repeats: int = 4, long_enough: float = 0.25
) -> float:
    """FLOP/s of a square matrix product in `dtype` at the current thread count: the side doubles
    from 256 until one product takes `long_enough` seconds or the side is `largest`, so that a
    precision without fast kernels (bf16 on a CPU without bf16 instructions: below 1 GFLOP/s)
    is measured in seconds, not minutes."""
    side = 256
    while True:
        first, second = torch.rand(side, side).to(dtype), torch.rand(side, side).to(dtype)
        if timed(torch.mm, first, second) >= long_enough or side >= largest:
            break
        side *= 2
    return 2 * side**3 / min(timed(torch.mm, first, second) for _ in range(repeats))


def timed(work, *arguments) -> float:
    """Seconds `work(*arguments)` takes."""
    start = time.perf_counter()
    work(*arguments)
    return time.perf_counter() - start


def cpu_name() -> str:
    """The CPU's model name (Linux), its bf16 instructions and its cores."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    extras = devices.bf16_instructions() or "no bf16 instructions"
    return f"{model} ({extras}), {os.cpu_count()} cores"


def gemm_rates(threads: list[int]) -> dict[int, dict[str, float]]:
    """Threads -> precision -> FLOP/s of a large matrix product (the limit's denominator)."""
    rates = {}
    for count in threads:
        torch.set_num_threads(count)
        rates[count] = {"fp32": gemm_rate(torch.float32), "bf16": gemm_rate(torch.bfloat16)}
    return rates


def speed_table(args: argparse.Namespace, rates: dict[int, dict[str, float]]) -> list[str]:
    """Markdown rows: size, threads, images, each variant's ms/iteration and ratio, the limits."""
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            for images in args.images:
                if size * size * images > MAX_PIXELS:
                    continue
                fits = {variant: make_fit(size, images, variant) for variant in args.variants}
                seconds = seconds_per_step(fits, args.repeats)
                flops = iteration_flops(size, images)
                cells = [
                    f"{seconds[variant] * 1e3:.0f} ms ({seconds[BASELINE] / seconds[variant]:.2f}x)"
                    if BASELINE in seconds
                    else f"{seconds[variant] * 1e3:.0f} ms"
                    for variant in args.variants
                ]
                limits = [flops / rates[threads][name] * 1e3 for name in ("fp32", "bf16")]
                row = (
                    f"| {size} | {threads} | {images} | {' | '.join(cells)} | {flops / 1e9:.1f} | "
                    f"{limits[0]:.0f} / {limits[1]:.0f} ms |"
                )
                print(row, flush=True)
                rows.append(row)
    return rows


def profile(size: int, variant: str, steps: int = 3) -> list[str]:
    """Markdown rows: share of the self CPU time of `steps` steps by kind of operation."""
    fit = make_fit(size, 1, variant)
    fit.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            fit.step()
    totals: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        name = event.key.lower()
        kind = next(
            (kind for kind, keys in PROFILE_GROUPS if any(key in name for key in keys)), "other"
        )
        totals[kind] += event.self_cpu_time_total
    whole = sum(totals.values())
    return [
        f"| {kind} | {totals[kind] / steps / 1e3:.0f} ms | {100 * totals[kind] / whole:.1f}% |"
        for kind in sorted(totals, key=totals.get, reverse=True)
    ]


SHARING = ("all cores", "core_share")  # how a command picks its threads: before, and now


def worker_speed(size: int, variant: str, iterations: int, sharing: str) -> float:
    """Seconds per step of one fit over `iterations` steps, with threads picked as `sharing`
    says: every core this process may use (torch's own choice, before `core_share`), or the
    cores shared with the other commands registered (run_BDN.py's and denoise.py's now)."""
    with core_share.sharing(1) as cores:
        torch.set_num_threads(
            devices.available_cores() if sharing == SHARING[0] else cores.threads()
        )
        fit = make_fit(size, 1, variant)
        fit.step()
        return sum(timed(fit.step) for _ in range(iterations)) / iterations


def contention(size: int, variant: str, iterations: int) -> list[str]:
    """One fit alone, then two started at once (separate processes, as two commands would be):
    each one's speed as a share of the speed alone, with threads picked as each of `SHARING`."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    rows = []
    for sharing in SHARING:
        command = [sys.executable, "-m", "bench.bench_cpu", "--worker", str(size), variant]
        command += [str(iterations), sharing]

        def start(command=command):
            return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)

        alone = float(start().communicate()[0])
        pair = [start(), start()]
        together = [float(process.communicate()[0]) for process in pair]
        shares = " | ".join(f"{alone / each:.0%}" for each in together)
        rows.append(f"| {size} | {variant} | {sharing} | {alone:.3f} s | {shares} |")
    return rows


def main(args: argparse.Namespace) -> int:
    if args.worker:
        size, variant, iterations, sharing = args.worker
        print(worker_speed(int(size), variant, int(iterations), sharing))
        return 0
    print(f"{cpu_name()}; torch {torch.__version__}")
    if args.profile:
        torch.set_num_threads(args.threads[0])
        for variant in ("fp32-nchw", "bf16-cl"):
            print(
                f"\n{variant}, {args.profile}x{args.profile}, {args.threads[0]} thread(s)\n\n| kind | per step | share |\n|---|---|---|"
            )
            print("\n".join(profile(args.profile, variant)), flush=True)
        return 0
    if args.contention:
        print(
            "\n| size | variant | threads | alone, s/iteration | first of two at once | second |"
            "\n|---|---|---|---|---|---|"
        )
        for variant in args.variants:
            print("\n".join(contention(args.contention, variant, args.iterations)), flush=True)
        return 0
    rates = gemm_rates(args.threads)
    for threads, rate in rates.items():
        print(
            f"GEMM, {threads} thread(s): {rate['fp32'] / 1e9:.0f} GFLOP/s fp32, {rate['bf16'] / 1e9:.0f} bf16"
        )
    header = " | ".join(args.variants)
    print(f"\n| size | threads | images | {header} | GFLOP/iteration | limit fp32 / bf16 |")
    print("|---" * (len(args.variants) + 5) + "|")
    speed_table(args, rates)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, nargs="+", default=[1, 4], help="images per fit")
    parser.add_argument(
        "--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS)[:3]
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--profile", type=int, metavar="SIZE", help="profile one size instead")
    parser.add_argument(
        "--contention", type=int, metavar="SIZE", help="two commands at once instead"
    )
    parser.add_argument("--iterations", type=int, default=20, help="steps per --contention process")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
