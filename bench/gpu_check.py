"""One GPU check in one call: GPU tests, speed, batching, the paper's scale, dispatch, OOM fallback.

Within a wall-time budget (--budget seconds) on one CUDA device, in five parts:
  tests      the GPU-marked tests (pytest -m gpu);
  speed      ms/iteration at --sizes for the original-style loop and ours (fp32, tf32, bf16,
             compiled), and at --psnr_size the PSNR each option reaches after --psnr_iters
             iterations on a real crop, against fp32 and against fp32 with another seed;
  batching   images/hour with --batch_images --batches at --batch_sizes, and peak GPU memory;
  fullscale  run_BDN.py on the pairs of --data at full size (--num_iter, --save_iter) with the
             fastest option within --tolerance_db of fp32: per image seconds, true best, last,
             the tuned and the published WMV picks, fixed:N and fixed:auto (test_BIQAN.py's no-reference
             selectors);
  extras     two worker processes sharing the device through the multi-GPU dispatch path, and a
             --batch_images run that runs out of memory on purpose (CUDA only).
gpu_check.md and the CSV files in --output_path are rewritten after every measurement; a part
stops when its share of the budget is spent, and what finished stays written. --smoke runs the
same on the CPU with tiny sizes in seconds (CI runs it).

    python -m bench.gpu_check --data devdata/gpu/CC --output_path result/gpu_check
    python -m bench.gpu_check --smoke --data devdata/gpu/CC --output_path result/gpu_smoke
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.metadata
import io
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench import bench_dip, bench_scale
from models.skip import SkipConfig
from utils import image_io, metrics, selection
from utils.dip import denoising, devices, dispatch, group_fit, planning, reconstruction
from utils.dip.fitting import to_array, to_tensor
from utils.method import FitSettings
from utils.run_output import SUMMARY_FILE

REPO = Path(__file__).resolve().parents[1]

PARTS = ("tests", "speed", "batching", "fullscale", "extras")
# Shares of the budget: a part stops starting measurements once its share is spent. The full-scale
# fit runs until the budget minus SELECTION_SHARE; the selectors and the extras get what is left.
PART_SHARES = {"tests": 0.12, "speed": 0.25, "batching": 0.12}
SELECTION_SHARE = 0.1
REPORT_FILE = "gpu_check.md"
LOG_FILE = "gpu_check.log"
TABLE_FILES = {
    "speed": "speed.csv",
    "precision": "precision.csv",
    "batching": "batching.csv",
    "fullscale": "fullscale.csv",
}
PAPER_TRUE_BEST_DB = 37.83
# the targets: one 512x512 image at >= 100 iterations/s; batching >= 5x at 128 px
TARGET_ITERATIONS_PER_SECOND = (512, 100.0)
TARGET_BATCH_GAIN = (128, 5.0)
SMOKE_DEFAULTS = {
    "gpu_id": "cpu",
    "budget": 300.0,
    "sizes": [64],
    "iterations": 2,
    "speed_options": ["fp32", "fp32 seed1", "bf16"],
    "warmup": 1,
    "psnr_size": 64,
    "psnr_iters": 4,
    "batch_sizes": [64],
    "batches": [1, 2],
    "num_iter": 40,
    "save_iter": 5,
    "fixed_iteration": 20,
    "published_start_index": 0,
    "extras_size": 64,
    "extras_iterations": 10,
    "oom_images": 2,
    "input_depth": 8,
    "channels": 8,
    "skip_channels": 2,
}

LOGGER = logging.getLogger("gpu_check")


def seconds_left(deadline: float) -> float:
    """Seconds from now (monotonic clock) to `deadline`."""
    return deadline - time.monotonic()


class Report:
    """gpu_check.md, its CSV tables and the log, in one folder, rewritten after every change."""

    def __init__(self, folder: Path, header: list[str]) -> None:
        self.folder = folder
        self.header = header
        self.notes: dict[str, list[str]] = {part: [] for part in PARTS}
        self.tables: dict[str, list[dict]] = {name: [] for name in TABLE_FILES}
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / LOG_FILE
        self.log_path.write_text("")
        self.write()

    def note(self, part: str, line: str) -> None:
        """Add a line to a part's section (and print it)."""
        print(f"[{part}] {line}", flush=True)
        self.notes[part].append(line)
        self.write()

    def add(self, table: str, row: dict) -> None:
        """Append a row (same keys as the table's other rows) and rewrite its CSV."""
        print(f"[{table}] {row}", flush=True)
        self.tables[table].append(row)
        self.write()

    def replace(self, table: str, rows: list[dict]) -> None:
        self.tables[table] = list(rows)
        self.write()

    def write(self) -> None:
        """Write the markdown report and every non-empty table, atomically."""
        for table, rows in self.tables.items():
            if rows:
                image_io.write_text(self.folder / TABLE_FILES[table], csv_text(rows))
        lines = ["# GPU check", "", *self.header]
        table_parts = {"speed": ("speed", "precision"), "batching": ("batching",)}
        table_parts["fullscale"] = ("fullscale",)
        for part in PARTS:
            lines += ["", f"## {part}", ""]
            lines += [f"- {line}" for line in self.notes[part]] or ["- not run"]
            for table in table_parts.get(part, ()):
                if self.tables[table]:
                    lines += [
                        "",
                        f"`{TABLE_FILES[table]}`:",
                        "",
                        *markdown_table(self.tables[table]),
                    ]
        image_io.write_text(self.folder / REPORT_FILE, "\n".join(lines) + "\n")


def csv_text(rows: list[dict]) -> str:
    """CSV text of dict rows (columns: the first row's keys; None as empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


def markdown_table(rows: list[dict]) -> list[str]:
    """Markdown table lines of dict rows (None as '-')."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = ["-" if row[column] is None else str(row[column]) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_logged(command: list[str], deadline: float, log_path: Path, poll=None) -> int | None:
    """Run `command` in the repository root, output appended to `log_path`, until `deadline`.

    Calls `poll()` every 2 s while it runs. Returns the exit status, or None when the deadline
    stopped it (SIGTERM, then SIGKILL after 10 s).
    """
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if seconds_left(deadline) <= 0:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                return None
            time.sleep(min(2.0, max(0.05, seconds_left(deadline))))
            if poll is not None:
                poll()
    return process.returncode


def log_tail(log_path: Path, lines: int) -> list[str]:
    """The last `lines` non-empty lines of the log."""
    text = log_path.read_text(errors="replace").splitlines()
    return [line for line in text if line.strip()][-lines:]


def fastest_within(options: list[dict], tolerance_db: float) -> str:
    """Label of the fastest speed option whose PSNR is within `tolerance_db` of fp32.

    `options`: rows with 'option', 'ms_per_iteration' and 'psnr_vs_fp32_db' (None when not
    measured); the yardstick row (another seed) is not a speed option. fp32 when nothing else
    qualifies.
    """
    qualified = [
        row
        for row in options
        if row["option"] in SPEED_LABELS
        and row["ms_per_iteration"] is not None
        and row["psnr_vs_fp32_db"] is not None
        and abs(row["psnr_vs_fp32_db"]) <= tolerance_db
    ]
    if not qualified:
        return "fp32"
    return min(qualified, key=lambda row: row["ms_per_iteration"])["option"]


SPEED_LABELS = tuple(label for label, _, _, seed in bench_scale.OPTIONS if seed == 0)


def option_settings(label: str) -> tuple[str, bool]:
    """Speed option label -> (precision, compiled)."""
    for option_label, precision, compiled, _ in bench_scale.OPTIONS:
        if option_label == label:
            return precision, compiled
    raise ValueError(f"unknown speed option {label!r}: use one of {', '.join(SPEED_LABELS)}")


def oom_memory_limit(peak_one: int, peak_many: int) -> int:
    """Memory cap (bytes) between the peaks of one image and of K images: K cannot fit, one can."""
    if peak_many <= peak_one:
        raise ValueError(
            f"peak memory of the batch ({peak_many}) is not above one image's ({peak_one})"
        )
    return (peak_one + peak_many) // 2


def centre_crop(pixels: np.ndarray, size: int) -> np.ndarray | None:
    """The centre size x size crop of an HWC/HW array, or None when the image is smaller."""
    height, width = pixels.shape[:2]
    if min(height, width) < size:
        return None
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[top : top + size, left : left + size]


def list_pairs(data: Path) -> list[planning.ImageJob]:
    """The noisy/clean pairs of `data` (real/ and mean/); ValueError naming the folder otherwise."""
    if not (data / "real").is_dir() or not (data / "mean").is_dir():
        raise ValueError(
            f"{data}: needs real/ and mean/ sub-folders of noisy/clean pairs "
            "(bench/prepare_gpu_check.sh copies the CC pairs there)"
        )
    jobs = [job for job in planning.plan_jobs(data / "real", data / "mean") if job.clean]
    if not jobs:
        raise ValueError(f"{data}: no noisy image in real/ has a clean image of its name in mean/")
    return jobs


def crop_pair(job: planning.ImageJob, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre crops (noisy, clean), HWC float32 in [0, 1], or None when the image is smaller."""
    noisy = centre_crop(image_io.read_image(job.noisy).pixels, size)
    clean = centre_crop(image_io.read_image(job.clean).pixels, size)
    return None if noisy is None or clean is None else (noisy, clean)


def synchronized_peak(device: torch.device) -> int | None:
    """Peak allocated device memory (bytes) since the last reset; None on the CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def network_config(args: argparse.Namespace) -> SkipConfig:
    return SkipConfig(
        input_depth=args.input_depth,
        channels_down=args.channels,
        channels_up=args.channels,
        channels_skip=args.skip_channels,
    )


def run_tests(args: argparse.Namespace, report: Report, deadline: float) -> bool:
    """Part 1: pytest -m gpu; True when it passed (or found nothing to run)."""
    # a module that cannot be imported there (a package the GPU machine lacks) is reported in the
    # summary line, and the GPU tests of the other modules still run
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors"]
    status = run_logged(command + args.test_paths, deadline, report.log_path)
    summary = log_tail(report.log_path, 1)
    if status is None:
        report.note("tests", "stopped: the part's budget ran out (the log has what ran)")
        return False
    report.note("tests", f"pytest -m gpu {' '.join(args.test_paths)}: exit {status}, {summary[0]}")
    return status in (0, 5)  # 5: no test selected


def speed_plan(sizes: list[int], psnr_size: int, labels: list[str]) -> list[tuple[int, list[str]]]:
    """Order of the speed measurements: (size, option labels) steps.

    --psnr_size first with every option (the full-scale choice needs it), then the other sizes
    without the compiled option, then the compiled option at those sizes (each new size costs
    a compilation, the most likely to run out of budget).
    """
    others = [size for size in sizes if size != psnr_size]
    plain = [label for label in labels if label in SPEED_LABELS and label != "compiled"]
    plan = [(psnr_size, list(labels))] + [(size, plain) for size in others]
    if "compiled" in labels:
        plan += [(size, ["compiled"]) for size in others]
    return plan


def measure_speed(
    args: argparse.Namespace,
    report: Report,
    deadline: float,
    device: torch.device,
    job: planning.ImageJob,
) -> str:
    """Part 2: speed rows at every size, PSNR rows at --psnr_size; returns the full-scale option."""
    config = network_config(args)
    reference_loop = functools.partial(bench_dip.reference_loop, config=config)
    settings = FitSettings(save_iter=args.save_iter)
    options = {
        label: (precision, compiled, seed)
        for label, precision, compiled, seed in bench_scale.OPTIONS
    }
    original_ms: dict[int, float] = {}
    fp32_psnr = None
    report.note("speed", f"real crop: centre of {job.noisy.name} and its reference")
    with tempfile.TemporaryDirectory(dir=args.work_path) as folder:
        for size, labels in speed_plan(args.sizes, args.psnr_size, args.speed_options):
            pair = crop_pair(job, size)
            if pair is None:
                report.note("speed", f"{size} px: skipped, {job.noisy.name} is smaller")
                continue
            noisy, clean = to_tensor(pair[0], device), pair[1]
            if size not in original_ms and seconds_left(deadline) > 0:
                devices.configure_precision("fp32", device)
                original_ms[size] = 1000 / bench_dip.time_loop(
                    reference_loop, noisy, settings, Path(folder), args.iterations, args.warmup
                )
                report.add(
                    "speed", speed_row(size, "original", original_ms[size], original_ms[size])
                )
            for label in labels:
                if seconds_left(deadline) <= 0:
                    report.note("speed", f"{label} at {size} px: not measured, the budget ran out")
                    continue
                precision, compiled, seed = options[label]
                devices.configure_precision(precision, device)
                fit = bench_scale.make_fit(
                    noisy, precision, compiled, args.psnr_iters, seed, config
                )
                ms = None
                if not seed:
                    ms = bench_scale.ms_per_iteration(fit, args.iterations, args.warmup)
                    report.add("speed", speed_row(size, label, ms, original_ms[size]))
                if size != args.psnr_size:
                    continue
                while fit.iteration < args.psnr_iters and seconds_left(deadline) > 0:
                    fit.step()
                if fit.iteration < args.psnr_iters:
                    report.note("speed", f"PSNR of {label}: not measured, the budget ran out")
                    continue
                psnr = metrics.psnr(np.clip(to_array(fit.average[:1]), 0, 1), clean)
                fp32_psnr = psnr if label == "fp32" else fp32_psnr
                report.add(
                    "precision",
                    {
                        "size": size,
                        "option": label,
                        "ms_per_iteration": None if ms is None else round(ms, 3),
                        "iterations": args.psnr_iters,
                        "psnr_db": round(psnr, 3),
                        "psnr_vs_fp32_db": None
                        if fp32_psnr is None
                        else round(psnr - fp32_psnr, 3),
                        "noisy_psnr_db": round(metrics.psnr(pair[0], clean), 3),
                    },
                )
    devices.configure_precision("fp32", device)
    size, target = TARGET_ITERATIONS_PER_SECOND
    ours = [
        row for row in report.tables["speed"] if row["size"] == size and row["loop"] != "original"
    ]
    if ours:
        best = max(ours, key=lambda row: row["iterations_per_second"])
        verdict = "met" if best["iterations_per_second"] >= target else "not met"
        report.note(
            "speed",
            f"target {target:.0f} iterations/s at {size} px: {verdict} "
            f"({best['iterations_per_second']} with {best['loop']})",
        )
    choice = fastest_within(report.tables["precision"], args.tolerance_db)
    report.note(
        "speed",
        f"full-scale option: {choice} (fastest within {args.tolerance_db} dB of fp32 after "
        f"{args.psnr_iters} iterations at {args.psnr_size} px)",
    )
    return choice


def speed_row(size: int, loop: str, ms: float, original_ms: float) -> dict:
    return {
        "size": size,
        "loop": loop,
        "ms_per_iteration": round(ms, 3),
        "iterations_per_second": round(1000 / ms, 1),
        "speed_up_vs_original": round(original_ms / ms, 2),
    }


def measure_batching(
    args: argparse.Namespace,
    report: Report,
    deadline: float,
    device: torch.device,
    job: planning.ImageJob,
    precision: str,
) -> dict[tuple[int, int], int]:
    """Part 3: images/hour per --batch_images; returns peak memory (bytes) by (size, K) on CUDA."""
    config = network_config(args)
    devices.configure_precision(precision, device)
    peaks = {}
    report.note("batching", f"precision {precision}; the same real crop K times")
    for size in args.batch_sizes:
        pair = crop_pair(job, size)
        if pair is None:
            report.note("batching", f"{size} px: skipped, {job.noisy.name} is smaller")
            continue
        single = None
        for count in args.batches:
            if seconds_left(deadline) <= 0:
                report.note("batching", f"stopped at {size} px, K={count}: budget ran out")
                return peaks
            batch = to_tensor(pair[0], device).expand(count, -1, -1, -1).contiguous()
            reset_memory(device)
            try:
                fit = bench_scale.make_fit(batch, precision, False, args.iterations, 0, config)
                ms = bench_scale.ms_per_iteration(fit, args.iterations, args.warmup)
            except torch.OutOfMemoryError:
                report.note("batching", f"{size} px, K={count}: out of memory")
                break
            peak = synchronized_peak(device)
            del fit, batch
            if peak is not None:
                peaks[(size, count)] = peak
            per_hour = count * 3600 * 1000 / (ms * bench_scale.PAPER_ITERATIONS)
            single = per_hour if single is None else single
            report.add(
                "batching",
                {
                    "size": size,
                    "batch_images": count,
                    "ms_per_iteration": round(ms, 3),
                    "images_per_hour": round(per_hour, 1),
                    "vs_one_at_a_time": round(per_hour / single, 2),
                    "peak_memory_mib": None if peak is None else round(peak / 2**20),
                },
            )
    devices.configure_precision("fp32", device)
    size, target = TARGET_BATCH_GAIN
    gains = [row for row in report.tables["batching"] if row["size"] == size]
    if len(gains) > 1:
        best = max(gains, key=lambda row: row["vs_one_at_a_time"])
        verdict = "met" if best["vs_one_at_a_time"] >= target else "not met"
        report.note(
            "batching",
            f"target {target:.0f}x images/hour at {size} px: {verdict} "
            f"({best['vs_one_at_a_time']}x with --batch_images {best['batch_images']})",
        )
    return peaks


def finished_summaries(run_folder: Path) -> list[dict]:
    """summary.json of every finished image of a run_BDN output folder, by name."""
    return [json.loads(path.read_text()) for path in sorted(run_folder.glob(f"*/{SUMMARY_FILE}"))]


def read_selection(path: Path) -> dict[tuple[str, str], dict]:
    """test_BIQAN's selection.csv -> {(image, selector): row}; empty when absent."""
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {(row["image"], row["selector"]): row for row in csv.DictReader(handle)}


def fullscale_rows(
    summaries: list[dict],
    noisy_psnr: dict[str, float],
    selections: dict[str, dict[tuple[str, str], dict]],
    fixed_label: str,
) -> list[dict]:
    """One row per finished image: time, true best, last, and each selector's pick."""
    rows = []
    for summary in summaries:
        image = summary["image"]
        row = {
            "image": image,
            "iterations": summary["iterations"],
            "seconds": summary["seconds"],
            "iterations_per_second": summary["iterations_per_second"],
            "noisy_psnr_db": noisy_psnr.get(image),
            "best_iteration": summary["best_iteration"],
            "best_psnr_db": summary["best_psnr"],
            "last_psnr_db": summary["final_psnr"],
        }
        picks = [(f"{name}_wmv", chosen, "wmv") for name, chosen in selections.items()]
        if selections:
            first = next(iter(selections.values()))
            picks += [
                (label.replace(":", ""), first, label)
                for label in (fixed_label, selection.AUTO_STOP.label)
            ]
        for column, chosen, selector in picks:
            picked = chosen.get((image, selector), {})
            row[f"{column}_iteration"] = picked.get("picked_iteration") or None
            row[f"{column}_psnr_db"] = picked.get("picked_psnr") or None
        rows.append(row)
    return rows


def run_fullscale(
    args: argparse.Namespace,
    report: Report,
    fit_deadline: float,
    deadline: float,
    jobs: list[planning.ImageJob],
    option: str,
) -> bool:
    """Part 4: run_BDN.py on the pairs, then test_BIQAN.py's no-reference selectors.

    Returns True when the fit and both selector runs finished without error.
    """
    precision, compiled = option_settings(option)
    run_folder = args.work_path / "fullscale"
    command = [
        sys.executable,
        "run_BDN.py",
        "--dataset_real_path", str(args.data / "real"),
        "--dataset_mean_path", str(args.data / "mean"),
        "--output_path", str(run_folder),
        "--num_iter", str(args.num_iter),
        "--save_iter", str(args.save_iter),
        "--gpu_id", args.gpu_id,
        "--precision", precision,
        "--batch_images", str(args.full_batch_images),
        "--input_depth", str(args.input_depth),
        "--channels", str(args.channels),
        "--skip_channels", str(args.skip_channels),
        "--quiet",
        "--show_iter", str(args.save_iter * 25),
    ] + (["--compile"] if compiled else [])  # fmt: skip
    report.note(
        "fullscale",
        f"{len(jobs)} pairs of {args.data}, {args.num_iter} iterations, snapshot every "
        f"{args.save_iter}, option {option}, --batch_images {args.full_batch_images}",
    )
    noisy_psnr = {
        job.stem: round(
            metrics.psnr(
                image_io.read_image(job.noisy).pixels, image_io.read_image(job.clean).pixels
            ),
            3,
        )
        for job in jobs
    }
    fixed_label = f"fixed:{args.fixed_iteration}"

    def refresh(selections=None) -> None:
        rows = fullscale_rows(
            finished_summaries(run_folder), noisy_psnr, selections or {}, fixed_label
        )
        if rows != report.tables["fullscale"]:
            report.replace("fullscale", rows)

    start = time.monotonic()
    status = run_logged(command, fit_deadline, report.log_path, refresh)
    refresh()
    finished = len(report.tables["fullscale"])
    if status is None:
        report.note(
            "fullscale",
            f"run_BDN.py stopped by the budget after {time.monotonic() - start:.0f} s: "
            f"{finished} of "
            f"{len(jobs)} images finished (rerunning the check resumes the run in {run_folder})",
        )
    else:
        report.note(
            "fullscale",
            f"run_BDN.py: exit {status}, {finished} of {len(jobs)} images finished "
            f"in {time.monotonic() - start:.0f} s",
        )
    if not finished:
        return False
    selections, selection_failed = {}, False
    tuned_window = max(2, denoising.WMV_WINDOW // args.save_iter)
    published_flags = (
        []
        if args.published_start_index is None
        else ["--start_index", str(args.published_start_index)]
    )
    runs = {
        "tuned": ["--start_index", "0", "--wmv_window", str(tuned_window * args.save_iter),
                  "--patience", selection.AUTO],
        "published": published_flags,
    }  # fmt: skip
    for name, flags in runs.items():
        output = args.work_path / f"selection_{name}"
        select = [
            sys.executable, "test_BIQAN.py",
            "--dataset_image_path", str(run_folder),
            "--output_path", str(output),
            "--selector", "wmv", "last", fixed_label, selection.AUTO_STOP.label,
            "--gpu_id", args.gpu_id,
        ] + flags  # fmt: skip
        selection_status = run_logged(select, deadline, report.log_path)
        if selection_status is None:
            report.note("fullscale", f"test_BIQAN.py ({name} WMV): stopped, the budget ran out")
            break
        selection_failed |= selection_status != 0
        selections[name] = read_selection(output / "selection.csv")
        summary = output / "Denoised_PSNR.txt"
        gaps = summary.read_text().splitlines()[-1] if summary.is_file() else "see the log"
        report.note(
            "fullscale",
            f"test_BIQAN.py --selector wmv last {fixed_label} "
            f"{selection.AUTO_STOP.label} {' '.join(flags)} ({name} WMV): "
            f"exit {selection_status}; {gaps}",
        )
        refresh(selections)
    rows = report.tables["fullscale"]
    best = [row["best_psnr_db"] for row in rows if row["best_psnr_db"] is not None]
    if best:
        report.note(
            "fullscale",
            f"mean true best {np.mean(best):.2f} dB over {len(best)} images (paper: "
            f"{PAPER_TRUE_BEST_DB} dB over its 15 CC images); mean "
            f"{np.mean([row['seconds'] for row in rows]):.1f} s per image",
        )
    return status == 0 and len(selections) == len(runs) and not selection_failed


def write_crops(
    jobs: list[planning.ImageJob], size: int, count: int, folder: Path
) -> list[planning.ImageJob]:
    """`count` centre crops of the pairs (cycling through them), PNG pairs in `folder`."""
    written = []
    for index in range(count):
        job = jobs[index % len(jobs)]
        pair = crop_pair(job, size)
        if pair is None:
            raise ValueError(f"{job.noisy}: smaller than {size} px")
        stem = f"{index:02d}_{job.stem}"
        image_io.write_png(folder / "real" / f"{stem}.png", pair[0])
        image_io.write_png(folder / "mean" / f"{stem}.png", pair[1])
        written.append(
            planning.ImageJob(folder / "real" / f"{stem}.png", folder / "mean" / f"{stem}.png")
        )
    return written


def run_settings(
    args: argparse.Namespace,
    folder: Path,
    device: torch.device,
    precision: str,
    batch_images: int,
    iterations: int,
) -> planning.RunSettings:
    return planning.RunSettings(
        output_path=folder,
        network=network_config(args),
        fit=FitSettings(num_iter=iterations, save_iter=max(1, iterations // 2)),
        seed=0,
        init_from="scratch",
        checkpoint_every=iterations,
        device=device,
        quiet=True,
        batch_images=batch_images,
        precision=precision,
    )


def run_extras(
    args: argparse.Namespace,
    report: Report,
    deadline: float,
    device: torch.device,
    jobs: list[planning.ImageJob],
    precision: str,
    peaks: dict[tuple[int, int], int],
) -> None:
    """Part 5: two workers on one device through the dispatch path; the OOM fallback on purpose."""
    with tempfile.TemporaryDirectory(dir=args.work_path) as folder:
        crops = write_crops(jobs, args.extras_size, len(jobs), Path(folder) / "data")
        seconds, bests = {}, {}
        for name, worker_devices in (("two workers", [device, device]), ("one process", [device])):
            if seconds_left(deadline) <= 0:
                report.note("extras", f"{name}: skipped, the budget ran out")
                return
            settings = run_settings(
                args,
                Path(folder) / name.replace(" ", "_"),
                device,
                precision,
                1,
                args.extras_iterations,
            )
            start = time.monotonic()
            if len(worker_devices) > 1:
                failures = dispatch.reconstruct_parallel(
                    crops,
                    settings,
                    worker_devices,
                    max(1, devices.available_cores() // len(worker_devices)),
                )
            else:
                devices.configure_precision(precision, device)
                failures = reconstruction.reconstruct_folder(crops, settings)
            seconds[name] = time.monotonic() - start
            bests[name] = {
                row["image"]: row["best_psnr"] for row in finished_summaries(settings.output_path)
            }
            report.note(
                "extras",
                f"{name} on {device}: {len(bests[name])} of {len(crops)} images of "
                f"{args.extras_size} px, {args.extras_iterations} iterations, "
                f"in {seconds[name]:.1f} s"
                + (f"; failures: {[message for _, message in failures]}" if failures else ""),
            )
        common = sorted(set(bests["two workers"]) & set(bests["one process"]))
        if common:
            difference = max(
                abs(bests["two workers"][image] - bests["one process"][image]) for image in common
            )
            report.note(
                "extras",
                f"best PSNR, two workers vs one process: at most {difference:.3f} dB apart",
            )
        run_oom_fallback(args, report, deadline, device, jobs, precision, peaks, Path(folder))


def run_oom_fallback(
    args: argparse.Namespace,
    report: Report,
    deadline: float,
    device: torch.device,
    jobs: list[planning.ImageJob],
    precision: str,
    peaks: dict[tuple[int, int], int],
    folder: Path,
) -> None:
    """A --batch_images group that cannot fit under a memory cap: it must be retried in halves."""
    size, count = args.batch_sizes[-1], args.oom_images
    if device.type != "cuda":
        report.note("extras", "OOM fallback: skipped, needs a CUDA device")
        return
    if (size, 1) not in peaks or (size, count) not in peaks:
        report.note(
            "extras",
            f"OOM fallback: skipped, no peak memory of K=1 and K={count} at {size} px "
            "from the batching part",
        )
        return
    if seconds_left(deadline) <= 0:
        report.note("extras", "OOM fallback: skipped, the budget ran out")
        return
    crops = write_crops(jobs, size, count, folder / "oom_data")
    limit = oom_memory_limit(peaks[(size, 1)], peaks[(size, count)])
    total = torch.cuda.get_device_properties(device).total_memory
    settings = run_settings(args, folder / "oom", device, precision, count, args.extras_iterations)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    group_fit.LOGGER.addHandler(handler)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(limit / total, device)
    try:
        devices.configure_precision(precision, device)
        failures = reconstruction.reconstruct_folder(crops, settings)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        group_fit.LOGGER.removeHandler(handler)
    retries = sum("retrying in halves" in message for message in messages)
    finished = len(finished_summaries(settings.output_path))
    report.note(
        "extras",
        f"OOM fallback: {count} images of {size} px under a cap of {limit / 2**30:.2f} GiB "
        f"(peak K=1 {peaks[(size, 1)] / 2**30:.2f}, "
        f"K={count} {peaks[(size, count)] / 2**30:.2f} GiB): "
        f"{retries} retries in halves, {finished} of {count} finished"
        + (f"; failures: {[message for _, message in failures]}" if failures else ""),
    )


def header(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Where and what: date, device, versions, command."""
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        versions += [f"CUDA {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}"]
        where = f"{properties.name}, {properties.total_memory / 2**30:.1f} GiB"
    else:
        where = bench_dip.device_name(device)
    for package in ("keras", "numpy", "scikit-image"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- device: {where}",
        f"- versions: {', '.join(versions)}",
        f"- budget: {args.budget:.0f} s{' (smoke mode)' if args.smoke else ''}",
        f"- command: `python {' '.join(sys.argv)}`",
    ]


def run_part(report: Report, part: str, function, *arguments):
    """Run one part; an exception is noted (traceback in the log) and the check goes on."""
    try:
        return function(*arguments)
    except Exception as error:  # one part's failure must not lose the others
        with open(report.log_path, "a") as log:
            log.write(traceback.format_exc())
        report.note(part, f"error: {type(error).__name__}: {error} (traceback in {LOG_FILE})")
        return None
    finally:
        torch.cuda.empty_cache()  # the next part's subprocesses get the memory back


def main(args: argparse.Namespace) -> int:
    """Run the parts within the budget; 0 when every part ran and passed, 1 otherwise."""
    start = time.monotonic()
    deadline = start + args.budget
    ids = devices.parse_gpu_ids(args.gpu_id)
    device = devices.resolve_device(ids[0] if ids else None)
    if device.type != "cuda" and not args.smoke:
        print(
            f"error: --gpu_id {args.gpu_id}: no CUDA device; use --smoke for the CPU check",
            file=sys.stderr,
        )
        return 2
    try:
        jobs = list_pairs(args.data)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.work_path.mkdir(parents=True, exist_ok=True)
    report = Report(args.output_path, header(args, device))
    passed = True
    option, peaks = args.full_option, {}
    if "tests" in args.parts:
        part_end = time.monotonic() + PART_SHARES["tests"] * args.budget
        passed &= bool(run_part(report, "tests", run_tests, args, report, min(part_end, deadline)))
    if "speed" in args.parts:
        part_end = time.monotonic() + PART_SHARES["speed"] * args.budget
        chosen = run_part(
            report, "speed", measure_speed, args, report, min(part_end, deadline), device, jobs[0]
        )
        passed &= chosen is not None
        if option == "auto":
            option = chosen or "fp32"
    option = "fp32" if option == "auto" else option
    precision = option_settings(option)[0]
    if "batching" in args.parts:
        part_end = time.monotonic() + PART_SHARES["batching"] * args.budget
        peaks = run_part(
            report,
            "batching",
            measure_batching,
            args,
            report,
            min(part_end, deadline),
            device,
            jobs[0],
            precision,
        )
        passed &= peaks is not None
    if "fullscale" in args.parts:
        fit_deadline = deadline - SELECTION_SHARE * args.budget
        passed &= bool(
            run_part(
                report,
                "fullscale",
                run_fullscale,
                args,
                report,
                fit_deadline,
                deadline,
                jobs,
                option,
            )
        )
    if "extras" in args.parts:
        run_part(
            report,
            "extras",
            run_extras,
            args,
            report,
            deadline,
            device,
            jobs,
            precision,
            peaks or {},
        )
        passed &= not any(line.startswith("error") for line in report.notes["extras"])
    report.note(
        args.parts[-1], f"check finished in {time.monotonic() - start:.0f} s of {args.budget:.0f}"
    )
    return 0 if passed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU check with tiny sizes (CI)")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("devdata/gpu/CC"),
        help="folder with real/ and mean/ pairs (default devdata/gpu/CC)",
    )
    parser.add_argument(
        "--output_path",
        type=Path,
        default=Path("result/gpu_check"),
        help="report and CSV files (default result/gpu_check)",
    )
    parser.add_argument(
        "--work_path",
        type=Path,
        default=Path("result/gpu_check_work"),
        help="run folders (default result/gpu_check_work)",
    )
    parser.add_argument("--gpu_id", default="0", help="CUDA device (default 0)")
    parser.add_argument("--budget", type=float, default=480.0, help="wall seconds (default 480)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--test_paths", nargs="+", default=["tests"], help="pytest paths")
    speed = parser.add_argument_group("speed and batching")
    speed.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    speed.add_argument("--iterations", type=int, default=50, help="timed iterations")
    speed.add_argument("--warmup", type=int, default=10)
    speed.add_argument(
        "--speed_options",
        nargs="+",
        choices=[label for label, *_ in bench_scale.OPTIONS],
        default=[label for label, *_ in bench_scale.OPTIONS],
        help="our loop's options to measure (default all)",
    )
    speed.add_argument("--psnr_size", type=int, default=512)
    speed.add_argument("--psnr_iters", type=int, default=1000)
    speed.add_argument("--tolerance_db", type=float, default=0.05)
    speed.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 512])
    speed.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    full = parser.add_argument_group("full scale")
    full.add_argument("--num_iter", type=int, default=3000)
    full.add_argument("--save_iter", type=int, default=20)
    full.add_argument(
        "--full_option",
        choices=("auto",) + SPEED_LABELS,
        default="auto",
        help="speed option (default auto: the speed part's choice, else fp32)",
    )
    full.add_argument("--full_batch_images", type=int, default=1)
    full.add_argument(
        "--fixed_iteration",
        type=int,
        default=600,
        help="fixed:N selector (default 600, tuned on PolyU 64 px crops)",
    )
    full.add_argument(
        "--published_start_index",
        type=int,
        default=None,
        help="--start_index of the published-WMV test_BIQAN run (default: its own)",
    )
    extras = parser.add_argument_group("extras")
    extras.add_argument("--extras_size", type=int, default=128)
    extras.add_argument("--extras_iterations", type=int, default=200)
    extras.add_argument("--oom_images", type=int, default=8)
    network = parser.add_argument_group("network")
    network.add_argument("--input_depth", type=int, default=32)
    network.add_argument("--channels", type=int, default=128)
    network.add_argument("--skip_channels", type=int, default=4)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags; with --smoke, SMOKE_DEFAULTS replace the defaults (explicit flags still win)."""
    parser = build_parser()
    if parser.parse_args(argv).smoke:
        parser.set_defaults(**SMOKE_DEFAULTS)
    args = parser.parse_args(argv)
    for name in ("data", "output_path", "work_path"):
        setattr(args, name, getattr(args, name).resolve())
    if args.budget <= 0 or min(args.iterations, args.psnr_iters, args.num_iter) < 1:
        parser.error("--budget, --iterations, --psnr_iters and --num_iter must be positive")
    if args.fixed_iteration % args.save_iter or not 0 < args.fixed_iteration <= args.num_iter:
        parser.error("--fixed_iteration must be a multiple of --save_iter within --num_iter")
    return args


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    sys.exit(main(parse_args()))
