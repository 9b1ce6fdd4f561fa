"""Issue 6: time to the denoised image and its PSNR, fixed iterations vs online stopping.

The online WMV rule of `run_BDN.py --early_stop wmv` sees exactly the saved snapshots, in order
(`method.WmvRule`, tested equal online and offline), and stops the fit `save_iter`
iterations after it fires. So its stop and pick on a finished fixed-iteration run are what an
online run would have done: this script replays the rule on the runs' snapshots.

1. Tune (window, patience) on PolyU runs: the setting with the smallest mean gap to the true
   best among those that fire on at least half of the images (ties: fewer iterations).
2. Report on CC runs (every init and seed found): iterations, time (iterations x a measured
   ms/iteration, --ms_per_iteration) and PSNR for (a) the paper's fixed iterations with the pick made
   afterwards (the true best: an upper bound for any picker), the last snapshot, and (b) online
   WMV, (c) online BIQAN (`--biqan MODEL...`: the BiqanRule of run_BDN.py replayed on the
   per-snapshot scores that `test_BIQAN.py` wrote for the run, e.g. by experiments/biqan_study.py),
   (d) both on the transfer-learning runs (every CC_<init>_s<seed> folder found).

    python experiments/online_stopping.py --runs devdata/runs --biqan resize_imagenet crop_imagenet
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common
from utils import image_io, method, run_output


def read_run(folder: Path) -> list[dict]:
    """Finished images of a run folder (those in its summary.csv): name, iterations, PSNRs and
    snapshots."""
    summary_path = folder / run_output.SUMMARY_TABLE_FILE
    if not summary_path.exists():
        return []
    images = []
    for name in sorted(pd.read_csv(summary_path, dtype={"image": str})["image"]):
        metrics = run_output.read_metrics(folder / name)
        images.append(
            {
                "name": name,
                "iterations": metrics.iteration,
                "psnr": metrics.psnr_avg,
                "snapshots": [
                    image_io.read_image(path).pixels for path in metrics.snapshot_paths()
                ],
            }
        )
    return images


def replay(
    stopper: method.StoppingRule, image: dict, inputs: list[tuple[int, object]]
) -> tuple[int, int, bool]:
    """(iterations an online run would do, picked iteration, fired): push (iteration, input)
    pairs into one of run_BDN.py's stoppers in order; it stops one snapshot after firing."""
    save_iter, last = int(image["iterations"][0]), int(image["iterations"][-1])
    fired_at = method.replay(stopper, inputs)
    if fired_at is not None:
        return min(fired_at + save_iter, last), stopper.pick_iteration, True
    picked = stopper.pick_iteration
    return last, int(image["iterations"][0]) if picked is None else picked, False


def replay_wmv(image: dict, window: int, patience: int) -> tuple[int, int, bool]:
    """`run_BDN.py --early_stop wmv` replayed on one image's saved snapshots."""
    inputs = list(zip(map(int, image["iterations"]), image["snapshots"]))
    return replay(method.WmvRule(method.RuleOptions(window, patience)), image, inputs)


def evaluate(images: list[dict], window: int, patience: int) -> dict:
    """Mean gap to the true best, mean iterations and firing rate of one WMV setting."""
    gaps, used, fired = [], [], 0
    for image in images:
        iterations, picked, did_fire = replay_wmv(image, window, patience)
        psnr = image["psnr"][list(image["iterations"]).index(picked)]
        gaps.append(image["psnr"].max() - psnr)
        used.append(iterations)
        fired += did_fire
    return {
        "window": window,
        "patience": patience,
        "gap": float(np.mean(gaps)),
        "iterations": float(np.mean(used)),
        "fired": fired / len(images),
    }


def tune(images: list[dict], windows: list[int], patiences: list[int]) -> tuple[dict, list[dict]]:
    """All settings evaluated, and the chosen one (see the module docstring)."""
    results = [evaluate(images, w, p) for w, p in itertools.product(windows, patiences)]
    firing = [r for r in results if r["fired"] >= 0.5] or results
    return min(firing, key=lambda r: (round(r["gap"], 2), r["iterations"])), results


def replay_biqan(image: dict, scores: dict[int, float], patience: int) -> tuple[int, int, bool]:
    """`run_BDN.py --early_stop biqan` replayed on the per-snapshot BIQAN scores of test_BIQAN.py
    (`scores`: iteration -> predicted mean quality; snapshots without a score are skipped)."""
    inputs = [(int(it), scores[int(it)]) for it in image["iterations"] if int(it) in scores]
    return replay(
        method.BiqanRule(method.RuleOptions(patience=patience, score=float)), image, inputs
    )


def read_scores(folder: Path, image: str) -> dict[int, float]:
    """iteration -> predicted mean of `<folder>/<image>_scores.csv` (test_BIQAN.py), {} if absent."""
    path = folder / f"{image}_scores.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    return dict(zip(table["iteration"].astype(int), table["predicted_mean"].astype(float)))


def table_row(
    label: str, images: list[dict], replays: list[tuple[int, int, bool]], ms: float
) -> str:
    """One markdown row: fixed iterations (true best, last) vs an online rule's stop and pick."""
    fixed_iterations = np.mean([image["iterations"][-1] for image in images])
    used = np.mean([replay[0] for replay in replays])
    picks = [
        image["psnr"][list(image["iterations"]).index(replay[1])]
        for image, replay in zip(images, replays)
    ]
    best = [image["psnr"].max() for image in images]
    last = [image["psnr"][-1] for image in images]
    fired = sum(replay[2] for replay in replays)
    return (
        f"| {label} | {len(images)} | {fixed_iterations:.0f} | {fixed_iterations * ms / 1000:.1f} "
        f"| {np.mean(best):.2f} | {np.mean(last):.2f} | {used:.0f} | {used * ms / 1000:.1f} "
        f"| {fixed_iterations / used:.2f}x | {np.mean(picks):.2f} | {np.mean(picks) - np.mean(best):+.2f} "
        f"| {fired}/{len(images)} |"
    )


def table(runs: Path, chosen: dict, args: argparse.Namespace) -> list[str]:
    """Markdown rows per CC run folder: fixed iterations vs online WMV and, where test_BIQAN.py
    scored the run (`<selection>/<run>/<model>/`), online BIQAN."""
    lines = [
        (
            "| run (init, seed), rule | images | fixed: iterations | fixed: time/image (s) "
            "| fixed: true best (dB) | fixed: last (dB) | online: iterations | time/image (s) | speed-up "
            "| online pick (dB) | pick - true best (dB) | fired |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for folder in sorted(runs.glob("CC_*_s*")):
        images = read_run(folder)
        if not images:
            continue
        replays = [replay_wmv(image, chosen["window"], chosen["patience"]) for image in images]
        lines.append(table_row(f"{folder.name}, wmv", images, replays, args.ms_per_iteration))
        for model in args.biqan:
            scores = [
                read_scores(args.selection / folder.name / model, image["name"]) for image in images
            ]
            if not all(scores):
                continue
            replays = [
                replay_biqan(image, s, args.biqan_patience) for image, s in zip(images, scores)
            ]
            lines.append(
                table_row(f"{folder.name}, biqan {model}", images, replays, args.ms_per_iteration)
            )
    return lines


def main(args: argparse.Namespace) -> None:
    polyu = read_run(args.runs / args.tune_on)
    if not polyu:
        raise SystemExit(f"{args.runs / args.tune_on}: no finished runs to tune on")
    chosen, results = tune(polyu, args.windows, args.patiences)
    lines = [
        f"WMV (window, patience in snapshots of 20 iterations) tuned on {args.tune_on} ({len(polyu)} images):",
        "",
        "| window | patience | fired | mean iterations | mean gap to true best (dB) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['window']} | {r['patience']} | {r['fired']:.0%} | {r['iterations']:.0f} | {r['gap']:.2f} |"
        for r in results
    ]
    lines += [
        "",
        f"Chosen: window {chosen['window']}, patience {chosen['patience']} snapshots.",
        "",
    ]
    lines += [
        (
            f"Times: iterations x {args.ms_per_iteration} ms (this CPU, 64x64, fp32, measured with "
            "bench/bench_scale.py on a quiet machine; the runs themselves shared the CPU)."
        ),
        "",
    ]
    if args.biqan:
        lines += [
            f"BIQAN: patience {args.biqan_patience} snapshots (not tuned), scores of test_BIQAN.py "
            "from snapshot 9 on (iteration 180); models: " + ", ".join(args.biqan) + ".",
            "",
        ]
    lines += table(args.runs, chosen, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_folder_flags(parser, "runs", path=True)
    parser.add_argument(
        "--tune_on", default="PolyU_s0", help="run folder (under --runs) to tune on"
    )
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 3, 5, 10])
    parser.add_argument("--patiences", type=int, nargs="+", default=[2, 3, 5, 10, 25, 50])
    parser.add_argument(
        "--out", type=Path, default=Path(common.FOLDERS["tables"][0]) / "online_stopping.md"
    )
    common.add_folder_flags(parser, "selection", path=True)
    parser.add_argument(
        "--biqan",
        nargs="*",
        default=[],
        help="BIQAN variants (folder names under each run's selection)",
    )
    parser.add_argument("--biqan_patience", type=int, default=5, help="snapshots (default 5)")
    parser.add_argument(
        "--ms_per_iteration",
        type=float,
        default=71.0,
        help="time of one iteration for the time columns (default 71.0: 64x64 on the 2-core CI CPU)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
