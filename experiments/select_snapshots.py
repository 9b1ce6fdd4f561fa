"""Questions 1 and 3: pick a snapshot per CC image with test_BIQAN.py's selectors and tabulate the gaps.

Actions (one run_BDN output folder per seed, `<runs>/CC_scratch_s<seed>`; test_BIQAN.py writes
into `<selection>/<run>/<variant>/`, which experiments/report.py reads):

- `noref`: the model-free selectors `wmv` (published settings: window 5 snapshots = 100
  iterations, patience 50 snapshots = 1000 iterations) and `last` -> variant `noref`.
- `tune_wmv`: the WMV window/patience grid on the PolyU runs (`--polyu_run`, which have clean
  references), the setting with the smallest mean gap to the true best, then that setting on
  CC -> variant `wmv_tuned`; the grid goes to `<tables>/wmv_tuning.md`.
- `tune_fixed`: the fixed stopping iteration with the smallest mean gap on the PolyU runs, then
  `fixed:N` on CC -> variant `fixed_tuned` (the simplest no-reference rule, as a yardstick).
- `biqan`: every `--model NAME=CHECKPOINT` (a train_BIQAN.py checkpoint) -> variant `NAME`.
- `table`: gap to the true best per selector (mean and spread over images and seeds) and, for
  BIQAN, the within-image SRCC/PLCC of predicted score vs PSNR -> `<tables>/selection.md`.

    python experiments/select_snapshots.py noref --code devdata/code/SHA
    python experiments/select_snapshots.py tune_wmv --code devdata/code/SHA
    python experiments/select_snapshots.py tune_fixed --code devdata/code/SHA
    python experiments/select_snapshots.py biqan --model resize_imagenet=devdata/biqan/resize_imagenet --code devdata/code/SHA
    python experiments/select_snapshots.py table

All snapshots before `--start_index` (8, i.e. iteration 160) are excluded from every selector and
from the true best, as in test_BIQAN.py.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments import common


def variant_keeps(variant: str, selector: str) -> bool:
    """Which selection.csv rows of a variant folder count: all of 'noref'; the tuned selector of a
    '*_tuned' variant; the BIQAN rows of a model variant (its wmv/last rows repeat 'noref')."""
    if variant == "noref":
        return True
    if variant.endswith("_tuned"):
        return selector.startswith(variant[: -len("_tuned")])
    return selector == "biqan"


def variant_label(variant: str, selector: str) -> str:
    if variant == "noref":
        return selector
    if variant.endswith("_tuned"):
        return f"{selector} (tuned on PolyU)"
    return f"{selector} ({variant})"


def cc_runs(runs: Path, seeds: list[int]) -> list[Path]:
    return [
        runs / f"CC_scratch_s{seed}"
        for seed in seeds
        if common.run_images(runs / f"CC_scratch_s{seed}")
    ]


def complete(run: Path, expected: int) -> bool:
    return len(common.run_images(run)) >= expected


def test_biqan(
    args: argparse.Namespace, run: Path, out: Path, selectors: list[str], extra: list[str] = ()
) -> int:
    command = [
        sys.executable,
        str(Path(args.code) / "test_BIQAN.py"),
        "--dataset_image_path",
        str(run),
        "--output_path",
        str(out),
        "--start_index",
        str(args.start_index),
        "--selector",
        *selectors,
        "--gpu_id",
        args.gpu_id,
        *extra,
    ]
    print(" ".join(command), flush=True)
    return subprocess.call(command, stdout=subprocess.DEVNULL if args.quiet else None)


def wmv_flags(args: argparse.Namespace, window: int, patience: int) -> list[str]:
    """test_BIQAN's flags for a window and patience in snapshots (its flags count iterations)."""
    return [
        "--wmv_window",
        str(window * args.save_iter),
        "--patience",
        str(patience * args.save_iter),
    ]


def mean_gap(csv_path: Path, selector: str) -> tuple[float, int, int]:
    """(mean loss in dB, number of images, number where the rule fired) for one selector."""
    rows = [r for r in common.read_csv(csv_path) if r["selector"] == selector]
    fired = sum("did not fire" not in r.get("note", "") for r in rows)
    return (
        (float(np.mean([float(r["loss_db"]) for r in rows])) if rows else float("nan")),
        len(rows),
        fired,
    )


def action_noref(args: argparse.Namespace) -> int:
    failures = 0
    for run in cc_runs(Path(args.runs), args.seeds):
        out = Path(args.selection) / run.name / "noref"
        failures += test_biqan(args, run, out, ["wmv", "last"], wmv_flags(args, 5, 50)) != 0
    return 1 if failures else 0


def action_tune_wmv(args: argparse.Namespace) -> int:
    polyu = Path(args.polyu_run)
    if not common.run_images(polyu):
        print(f"{polyu}: no finished PolyU image yet")
        return 1
    grid = []
    for window, patience in itertools.product(args.windows, args.patiences):
        out = Path(args.selection) / polyu.name / f"wmv_w{window}_p{patience}"
        test_biqan(args, polyu, out, ["wmv"], wmv_flags(args, window, patience))
        gap, n, fired = mean_gap(out / "selection.csv", "wmv")
        grid.append(
            {
                "window": window,
                "patience": patience,
                "mean_gap_db": round(gap, 4),
                "images": n,
                "fired": fired,
            }
        )
    grid.sort(key=lambda row: row["mean_gap_db"])
    best = grid[0]
    rows = [
        [
            f"{r['window']} ({r['window'] * args.save_iter} it)",
            f"{r['patience']} ({r['patience'] * args.save_iter} it)",
            f"{r['mean_gap_db']:.3f}",
            f"{r['fired']}/{r['images']}",
        ]
        for r in grid
    ]
    text = (
        f"WMV on {polyu} ({best['images']} PolyU crops; window and patience in snapshots of {args.save_iter} "
        f"iterations), sorted by mean gap to the true best:\n\n"
        + common.markdown_table(["window", "patience", "mean gap dB", "rule fired"], rows)
        + "\n"
    )
    common.write_table(args.tables, "wmv_tuning.md", text)
    common.write_csv(Path(args.tables) / "wmv_tuning.csv", grid)
    for run in cc_runs(Path(args.runs), args.seeds):
        out = Path(args.selection) / run.name / "wmv_tuned"
        test_biqan(args, run, out, ["wmv"], wmv_flags(args, best["window"], best["patience"]))
        (out / "setting.txt").write_text(f"window {best['window']} patience {best['patience']}\n")
    return 0


def action_tune_fixed(args: argparse.Namespace) -> int:
    """The fixed iteration with the smallest mean gap to the true best on the PolyU runs, applied to CC."""
    polyu = Path(args.polyu_run)
    images = common.run_images(polyu)
    if not images:
        print(f"{polyu}: no finished PolyU image yet")
        return 1
    gaps = []
    for image in images:
        m = common.read_metrics(polyu / image)
        keep = slice(args.start_index, None)
        iterations, values = m["iteration"][keep], m["psnr_avg"][keep]
        gaps.append(np.nanmax(values) - values)
    length = min(len(g) for g in gaps)
    mean_gaps = np.mean([g[:length] for g in gaps], axis=0)
    best = int(np.argmin(mean_gaps))
    iteration = int(iterations[best])
    shown = [
        (int(iterations[i]), float(mean_gaps[i])) for i in range(0, length, max(1, length // 12))
    ]
    text = (
        f"Fixed stopping iteration tuned on {polyu} ({len(images)} PolyU crops): mean gap to the true best "
        f"is smallest at iteration {iteration} ({mean_gaps[best]:.3f} dB). Mean gap by iteration: "
        + ", ".join(f"{it}: {gap:.2f}" for it, gap in shown)
        + " dB.\n"
    )
    common.write_table(args.tables, "fixed_tuning.md", text)
    failures = 0
    for run in cc_runs(Path(args.runs), args.seeds):
        out = Path(args.selection) / run.name / "fixed_tuned"
        failures += test_biqan(args, run, out, [f"fixed:{iteration}"]) != 0
    return 1 if failures else 0


def action_biqan(args: argparse.Namespace) -> int:
    failures = 0
    for spec in args.model:
        name, _, checkpoint = spec.partition("=")
        for run in cc_runs(Path(args.runs), args.seeds):
            out = Path(args.selection) / run.name / name
            failures += (
                test_biqan(
                    args,
                    run,
                    out,
                    ["biqan", "wmv", "last"],
                    ["--pre_trained_model", checkpoint, *wmv_flags(args, 5, 50)],
                )
                != 0
            )
    return 1 if failures else 0


def correlations(folder: Path) -> tuple[float, float]:
    """Mean within-image SRCC and PLCC of predicted mean score vs true PSNR (from <stem>_scores.csv)."""
    srcc, plcc = [], []
    for path in sorted(folder.glob("*_scores.csv")):
        rows = common.read_csv(path)
        pred = np.array([float(r["predicted_mean"]) for r in rows])
        true = np.array([float(r["true_psnr"]) for r in rows])
        if pred.size > 2 and np.std(pred) > 0 and np.std(true) > 0:
            rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties in practice)
            srcc.append(np.corrcoef(rank(pred), rank(true))[0, 1])
            plcc.append(np.corrcoef(pred, true)[0, 1])
    return (float(np.mean(srcc)) if srcc else float("nan")), (
        float(np.mean(plcc)) if plcc else float("nan")
    )


def action_table(args: argparse.Namespace) -> int:
    selection = Path(args.selection)
    by_label: dict[str, list[float]] = {}
    fired: dict[str, list[bool]] = {}
    corr: dict[str, list[tuple[float, float]]] = {}
    seeds_seen: dict[str, set] = {}
    for seed in args.seeds:
        folder = selection / f"CC_scratch_s{seed}"
        for csv_path in sorted(folder.glob("*/selection.csv")):
            variant = csv_path.parent.name
            for row in common.read_csv(csv_path):
                if not variant_keeps(variant, row["selector"]):
                    continue
                label = variant_label(variant, row["selector"])
                by_label.setdefault(label, []).append(float(row["loss_db"]))
                fired.setdefault(label, []).append("did not fire" not in row.get("note", ""))
                seeds_seen.setdefault(label, set()).add(seed)
            if variant != "noref" and not variant.endswith("_tuned"):
                corr.setdefault(f"biqan ({variant})", []).append(correlations(csv_path.parent))
    if not by_label:
        text = "Not measured yet.\n"
    else:
        rows = []
        for label, gaps in sorted(by_label.items()):
            srcc = plcc = "-"
            if label in corr:
                srcc = f"{np.nanmean([c[0] for c in corr[label]]):.3f}"
                plcc = f"{np.nanmean([c[1] for c in corr[label]]):.3f}"
            fire = f"{sum(fired[label])}/{len(gaps)}" if label.startswith("wmv") else "-"
            rows.append(
                [
                    label,
                    f"{len(gaps)} ({len(seeds_seen[label])} seeds)",
                    common.mean_std(gaps),
                    f"{np.max(gaps):.2f}",
                    fire,
                    srcc,
                    plcc,
                ]
            )
        text = (
            "Gap to the true best snapshot (dB; true best over snapshots from iteration "
            f"{(args.start_index + 1) * args.save_iter}), CC crops:\n\n"
            + common.markdown_table(
                [
                    "selector",
                    "images (seeds)",
                    "gap mean ± sd",
                    "worst gap",
                    "WMV fired",
                    "SRCC (within image)",
                    "PLCC (within image)",
                ],
                rows,
            )
            + "\n"
        )
        for name in ("fixed_tuning.md", "wmv_tuning.md"):
            tuning = Path(args.tables) / name
            if tuning.is_file():
                text += "\n" + tuning.read_text()
    common.write_table(args.tables, "selection.md", text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("noref", "tune_wmv", "tune_fixed", "biqan", "table"))
    common.add_folder_flags(parser, "runs", "selection", "tables")
    parser.add_argument(
        "--polyu_run", default="devdata/runs/PolyU_s0", help="PolyU run for tune_wmv"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="CC run seeds (default 0 1 2)"
    )
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[3, 5, 10], help="tune_wmv windows, snapshots"
    )
    parser.add_argument(
        "--patiences",
        type=int,
        nargs="+",
        default=[5, 10, 25, 50],
        help="tune_wmv patiences, snapshots",
    )
    parser.add_argument(
        "--model", nargs="+", default=[], help="biqan: NAME=CHECKPOINT (file or folder)"
    )
    common.add_start_index_flag(parser)
    parser.add_argument(
        "--save_iter", type=int, default=20, help="snapshot interval of the runs (default 20)"
    )
    parser.add_argument(
        "--code", default=str(common.REPO), help="repository root whose test_BIQAN.py is run"
    )
    parser.add_argument("--gpu_id", default="cpu", help="'cpu' (default) or a CUDA device number")
    parser.add_argument("--quiet", action="store_true", help="hide test_BIQAN.py's per-image lines")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    actions = {
        "noref": action_noref,
        "tune_wmv": action_tune_wmv,
        "tune_fixed": action_tune_fixed,
        "biqan": action_biqan,
        "table": action_table,
    }
    sys.exit(actions[arguments.action](arguments))
