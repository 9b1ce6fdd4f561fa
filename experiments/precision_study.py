"""Issue 21: does bf16 change what DIP finds? fp32 against bf16 on the same crops and seeds.

Three actions:

    python -m experiments.precision_study collect    # devdata/precision -> results/precision
    python -m experiments.precision_study report     # results/precision -> the table (seconds)
    python -m experiments.precision_study pooling    # section 8's check; exit 0 if it passed

`collect` reads the finished images of experiments/precision_runs.sh (run_BDN.py folders under
`devdata/precision/<size>px/<precision>/<set>_s<seed>/`) and writes, per image, its metrics.csv
rows plus what the no-reference rules see (the WMV rule's window variances, computed from the
snapshots with `method.WmvRule`, and the snapshot ranker's features,
`utils.snapshot_features`), under `results/precision/` in the same layout: per-iteration numbers
only, no pixels. The layout's <precision> is a variant: `fp32`, `bf16` (the shipped bf16:
autocast with BatchNorm and the output head in fp32) and `bf16-autocast` (plain autocast, the
bf16 before it). `report` needs nothing else: for every image run in fp32 and in a variant it
takes DIP's best PSNR and best iteration over test_BIQAN.py's candidates (the snapshots from
`selection.START_INDEX`), and the PSNR each shipped rule picks (the default `wmv`, `fixed:auto`,
`last`), and prints the paired differences variant - fp32 (mean, standard deviation, lowest and
highest) by size and set, as the markdown table of docs/REPRODUCTION.md, with the verdict of
section 8's check (`POOLING_CHECK`) under it; `pooling` prints that verdict alone and exits 0
only where the check passed (experiments/scale_runs.sh's `polyu256` list starts only then).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import REPO, add_report_flags, publish_table, run_images
from utils import image_io, method, run_output, selection, snapshot_features

RUNS = REPO / "devdata" / "precision"
RESULTS = REPO / "results" / "precision"
DIP_STUDIES = ("precision", "scale")  # folders of results/ with <size>px/<precision>/<set>_s<seed>
REFERENCE = "fp32"  # every other variant is compared with it
WINDOWS = (selection.TUNED_WMV.window, selection.PUBLISHED_WMV.window)
IMAGES_FILE = "images.csv"  # per run folder: stem, height, width, noisy_psnr
TABLE_FILE = "precision.md"  # the report, beside the rows it comes from
DOC_BLOCK = "precision"  # this table's block in docs/REPRODUCTION.md
RULES = ("best", "wmv", "fixed:auto", "last")  # what each image contributes to the table
SEED_YARDSTICKS = (REFERENCE, "bf16")  # precisions whose seed-to-seed differences are tabled


@dataclass(frozen=True)
class PoolingCheck:
    """The check set down in docs/REPRODUCTION.md section 8 on 2026-12-07, before its pairs were
    in: on a CPU without bf16 instructions, section 9's remaining PolyU tuning crops may be fitted
    in fp32 and tuned on beside the bf16 ones if, over `pairs` crops of `set_name` at `size` px
    fitted in both, the mean `candidate` - fp32 best PSNR is within ±`mean_bound` dB, no pair is
    below `lowest` dB, and the mean best-iteration difference is within ±`iteration_bound`."""

    candidate: str = "bf16"
    size: int = 256
    set_name: str = "CC"
    pairs: int = 5
    mean_bound: float = 0.10
    lowest: float = -0.30
    iteration_bound: float = 200.0


POOLING_CHECK = PoolingCheck()


def variance_column(window: int) -> str:
    return f"wmv{window}"


def window_variances(snapshots: list[np.ndarray], window: int) -> np.ndarray:
    """(snapshots,) variance of each window of `window` snapshots ending there (NaN before)."""
    rule = method.WmvRule(method.RuleOptions(window, patience=len(snapshots) + 1))
    for index, snapshot in enumerate(snapshots):
        rule.push(index, snapshot)
    return np.asarray(rule.variances)


def no_reference_columns(image_dir: Path, iterations: np.ndarray) -> dict[str, np.ndarray]:
    """What the no-reference rules see of each snapshot, (snapshots,) per column: the WMV window
    variances and the snapshot ranker's features (`snapshot_features.FEATURE_NAMES`, computed
    in snapshot order from the first, against the noisy input named in the image's input.json)."""
    snapshots = [
        image_io.read_rgb(run_output.snapshot_path(image_dir, int(it))) for it in iterations
    ]
    inputs = json.loads((image_dir / run_output.INPUT_FILE).read_text())
    noisy = image_io.read_rgb(REPO / inputs["noisy"])
    columns = {variance_column(window): window_variances(snapshots, window) for window in WINDOWS}
    features = snapshot_features.image_features(noisy, snapshots)
    return columns | dict(zip(snapshot_features.FEATURE_NAMES, features.T))


def collect_run(run_dir: Path, out_dir: Path) -> int:
    """Write the per-iteration rows of every finished image of `run_dir` not yet in `out_dir`
    (and the feature columns of rows collected before they existed); returns how many images
    were written."""
    written = 0
    images = []
    for stem in run_images(run_dir):
        image_dir = run_dir / stem
        summary = pd.read_json(image_dir / run_output.SUMMARY_FILE, typ="series")
        images.append(
            {
                "stem": stem,
                "height": int(summary["height"]),
                "width": int(summary["width"]),
                run_output.NOISY_PSNR: summary[run_output.NOISY_PSNR],
            }
        )
        target = out_dir / f"{stem}.csv"
        if target.exists():
            table = pd.read_csv(target)
            if set(snapshot_features.FEATURE_NAMES) <= set(table.columns):
                continue
        else:
            metrics = run_output.read_metrics(image_dir)
            table = pd.DataFrame(
                {column: getattr(metrics, column) for column in run_output.METRICS_COLUMNS}
            )
        for column, values in no_reference_columns(image_dir, table["iteration"]).items():
            table[column] = values
        out_dir.mkdir(parents=True, exist_ok=True)
        image_io.write_text(target, table.to_csv(index=False, float_format="%.7g"))
        written += 1
    if images:
        image_io.write_text(
            out_dir / IMAGES_FILE, merged_images(out_dir, images).to_csv(index=False)
        )
    return written


def merged_images(out_dir: Path, images: list[dict]) -> pd.DataFrame:
    """`out_dir`'s images table with `images` (rows of IMAGES_FILE) added or replaced by stem,
    sorted by stem: a run folder that holds only some of the images (a rerun on another machine,
    whose earlier images are in `out_dir` only) adds to the table, it does not shrink it."""
    table = pd.DataFrame(images)
    if (out_dir / IMAGES_FILE).exists():
        earlier = pd.read_csv(out_dir / IMAGES_FILE)
        table = pd.concat([earlier[~earlier["stem"].isin(table["stem"])], table])
    return table.sort_values("stem").reset_index(drop=True)


def collect(runs: Path, results: Path) -> int:
    """`collect_run` over every run folder `<size>px/<precision>/<set>` under `runs`."""
    total = 0
    for run_dir in sorted(runs.glob("*px/*/*")):
        if run_dir.is_dir():
            total += collect_run(run_dir, results / run_dir.relative_to(runs))
    print(f"{total} new image(s) written under {results}")
    return 0


def image_outcomes(table: pd.DataFrame, height: int, width: int) -> dict[str, float]:
    """One image run -> PSNR (dB) of the best candidate and of each rule's pick, and the best
    iteration, over the candidates from `selection.START_INDEX` (test_BIQAN.py's)."""
    candidates = table.iloc[selection.START_INDEX :].reset_index(drop=True)
    psnr = candidates["psnr_avg"].to_numpy()
    iterations = candidates["iteration"].to_numpy()
    window = selection.DEFAULT_WMV.window
    variances = candidates[variance_column(window)].to_numpy().copy()
    variances[: window - 1] = np.nan  # windows start at the first candidate
    picks = {
        "wmv": selection.default_wmv_replay(variances, iterations, height, width)[0],
        "fixed:auto": selection.select_at_or_after(
            iterations, selection.scaled_stop(height, width)
        ),
        "last": selection.select_last(len(iterations)),
    }
    best = int(np.argmax(psnr))
    return {"best": psnr[best], "best_iteration": iterations[best]} | {
        rule: psnr[index] for rule, index in picks.items()
    }


def study_folders(results: Path) -> list[Path]:
    """`results` (this study's rows) and the other `DIP_STUDIES` beside it that exist: the scale
    study's runs (experiments/scale_runs.sh) pair too where a crop was fitted in both precisions
    (its fp32 check at 256 px)."""
    others = [results.parent / name for name in DIP_STUDIES if name != results.name]
    return [results, *(folder for folder in others if folder.is_dir())]


def outcomes(results: Path) -> pd.DataFrame:
    """One row per image run under `study_folders(results)`: size, precision, set, seed, stem,
    outcomes."""
    rows = []
    images_files = [
        path for folder in study_folders(results) for path in folder.glob(f"*px/*/*/{IMAGES_FILE}")
    ]
    for images_file in sorted(images_files):
        run_dir = images_file.parent
        set_name, _, seed = run_dir.name.rpartition("_s")
        for image in pd.read_csv(images_file).itertuples():
            path = run_dir / f"{image.stem}.csv"
            if path.exists():
                rows.append(
                    {
                        "size": int(run_dir.parent.parent.name[:-2]),
                        "precision": run_dir.parent.name,
                        "set": set_name,
                        "seed": int(seed),
                        "stem": image.stem,
                    }
                    | image_outcomes(pd.read_csv(path), image.height, image.width)
                )
    return pd.DataFrame(rows)


def differences(table: pd.DataFrame, keys: list[str], side: str, first, second) -> pd.DataFrame:
    """`second` - `first` of every outcome, rows matched on `keys`; `side` is the column whose
    value tells the two apart (precision, or seed)."""
    groups = {value: group.set_index(keys) for value, group in table.groupby(side)}
    if first not in groups or second not in groups:
        return pd.DataFrame()
    common = groups[first].index.intersection(groups[second].index)
    columns = [*RULES, "best_iteration"]
    return (groups[second].loc[common, columns] - groups[first].loc[common, columns]).reset_index()


def paired_differences(table: pd.DataFrame, candidate: str) -> pd.DataFrame:
    """`candidate` - fp32 of every outcome, one row per image run done in both."""
    return differences(table, ["size", "set", "seed", "stem"], "precision", REFERENCE, candidate)


def seed_differences(table: pd.DataFrame, precision: str = REFERENCE) -> pd.DataFrame:
    """`precision` at seed s - the same at seed 0 (s > 0), from scratch (sets without an init):
    how far two equally good fits are apart, the yardstick for the precisions' differences."""
    runs = table[(table["precision"] == precision) & ~table["set"].str.contains("_")]
    seeds = sorted(seed for seed in runs["seed"].unique() if seed > 0)
    parts = [differences(runs, ["size", "set", "stem"], "seed", 0, seed) for seed in seeds]
    parts = [part.assign(seed=seed) for part, seed in zip(parts, seeds) if not part.empty]
    return pd.concat(parts) if parts else pd.DataFrame()


def cell(values: pd.Series, digits: int) -> str:
    """'mean ± sd [lowest, highest]' of paired differences."""
    spread = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{values.mean():+.{digits}f}{spread} [{values.min():+.{digits}f}, {values.max():+.{digits}f}]"


def table_rows(paired: pd.DataFrame, what: str) -> list[str]:
    """Markdown rows of paired differences by size and set (all seeds together), then all."""
    rows = []
    for (size, set_name), group in paired.groupby(["size", "set"]):
        seeds = ",".join(str(seed) for seed in sorted(group["seed"].unique()))
        cells = [cell(group[rule], 2) for rule in RULES] + [cell(group["best_iteration"], 0)]
        rows.append(
            f"| {what} | {size} | {set_name} (seed {seeds}) | {len(group)} | "
            + " | ".join(cells)
            + " |"
        )
    cells = [cell(paired[rule], 3) for rule in RULES] + [cell(paired["best_iteration"], 0)]
    return [*rows, f"| {what} | all | all | {len(paired)} | " + " | ".join(cells) + " |"]


def seed_means(table: pd.DataFrame, candidate: str) -> pd.DataFrame:
    """Per image with at least two seeds fitted in both fp32 and `candidate`: each precision's
    best PSNR over those seeds (mean, lowest, highest) and the difference of the means; the
    per-image comparison that one seed cannot make, since the seed alone moves the best."""
    best = table.pivot_table(
        index=["size", "set", "stem", "seed"], columns="precision", values="best"
    )
    if candidate not in best or REFERENCE not in best:
        return pd.DataFrame()
    both = best[[REFERENCE, candidate]].dropna()
    per_image = both.groupby(level=["size", "set", "stem"])
    summary = per_image.agg(["mean", "min", "max", "count"])
    summary = summary[summary[(REFERENCE, "count")] >= 2]
    summary[("difference", "")] = summary[(candidate, "mean")] - summary[(REFERENCE, "mean")]
    return summary


def seed_mean_rows(table: pd.DataFrame, candidate: str) -> list[str]:
    """Markdown table of `seed_means`: one row per image."""
    summary = seed_means(table, candidate)
    if summary.empty:
        return []
    lines = [
        "",
        f"Per image over the seeds both have (best PSNR, dB; mean [lowest, highest]), {candidate}"
        f" - {REFERENCE}:",
        "",
        f"| size | set | image | seeds | {REFERENCE} | {candidate} | difference of the means |",
        "|---|---|---|---|---|---|---|",
    ]
    for (size, set_name, stem), row in summary.iterrows():
        spans = [
            f"{row[(name, 'mean')]:.2f} [{row[(name, 'min')]:.2f}, {row[(name, 'max')]:.2f}]"
            for name in (REFERENCE, candidate)
        ]
        lines.append(
            f"| {size} | {set_name} | {stem} | {int(row[(REFERENCE, 'count')])} | "
            + " | ".join(spans)
            + f" | {row[('difference', '')]:+.2f} |"
        )
    return lines


def check_pairs(table: pd.DataFrame, check: PoolingCheck = POOLING_CHECK) -> pd.DataFrame:
    """The pairs `check` judges: `paired_differences` of `check.candidate` in `table`
    (`outcomes`) at its size and set; empty where there are none."""
    if table.empty or check.candidate not in set(table["precision"]):
        return pd.DataFrame()
    paired = paired_differences(table, check.candidate)
    if paired.empty:
        return paired
    return paired[(paired["size"] == check.size) & (paired["set"] == check.set_name)]


def missed_bounds(paired: pd.DataFrame, check: PoolingCheck = POOLING_CHECK) -> list[str]:
    """The bounds of `check` that `paired` (`check_pairs`, not empty) misses, named."""
    mean, lowest = paired["best"].mean(), paired["best"].min()
    iterations = paired["best_iteration"].mean()
    return [
        name
        for name, holds in [
            (f"mean best beyond ±{check.mean_bound:.2f} dB", abs(mean) <= check.mean_bound),
            (f"a pair below {check.lowest:+.2f} dB", lowest >= check.lowest),
            (
                f"mean best iteration beyond ±{check.iteration_bound:.0f}",
                abs(iterations) <= check.iteration_bound,
            ),
        ]
        if not holds
    ]


def pooling_passed(paired: pd.DataFrame, check: PoolingCheck = POOLING_CHECK) -> bool:
    """Whether `paired` (`check_pairs`) holds all of `check`'s pairs and meets every bound: only
    then are fp32 runs pooled with `check.candidate`'s for tuning (scale_study)."""
    return len(paired) >= check.pairs and not missed_bounds(paired, check)


def pooling_holds(results: Path = RESULTS) -> bool:
    """`pooling_passed` on the rows under `results` (and the studies beside it)."""
    return pooling_passed(check_pairs(outcomes(results)))


def pooling_verdict(paired: pd.DataFrame, check: PoolingCheck = POOLING_CHECK) -> str:
    """One line: `check` applied to `paired` (`check_pairs`): the figures so far against its
    bounds, and `pending` until all its pairs are in, then `passed`, or `failed` naming each
    bound missed."""
    title = (
        f"Section 8's check ({check.candidate} - {REFERENCE}, {check.set_name} at {check.size} "
        "px, set down before the pairs were in)"
    )
    if paired.empty:
        return f"{title}: 0 of {check.pairs} pairs in: pending."
    missed = missed_bounds(paired, check)
    if len(paired) < check.pairs:
        verdict = "pending"
    elif missed:
        verdict = "failed (" + "; ".join(missed) + "): the PolyU crops wait for bf16 or a GPU"
    else:
        verdict = "passed: fp32 PolyU crops may be tuned on beside the bf16 ones"
    return (
        f"{title}: {len(paired)} of {check.pairs} pairs in; mean best "
        f"{paired['best'].mean():+.2f} dB (bound ±{check.mean_bound:.2f}), lowest "
        f"{paired['best'].min():+.2f} (bound {check.lowest:+.2f}), mean best iteration "
        f"{paired['best_iteration'].mean():+.0f} (bound ±{check.iteration_bound:.0f}): {verdict}."
    )


def report_lines(results: Path) -> list[str]:
    """The markdown table: each variant - fp32 by size and set, and fp32 seed s - seed 0."""
    table = outcomes(results)
    header = ["difference", "size", "set", "image runs"]
    header += [f"{rule} PSNR (dB)" for rule in RULES] + ["best iteration"]
    lines = [
        "Paired differences (same crop and flags; mean ± sd [lowest, highest] over the image "
        "runs), over test_BIQAN's candidates:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    if table.empty:
        return [*lines, "| (no image run yet) |"]
    candidates = sorted(set(table["precision"]) - {REFERENCE})
    for paired, what in [
        *[(paired_differences(table, name), f"{name} - {REFERENCE}") for name in candidates],
        *[(seed_differences(table, name), f"{name} seed s - seed 0") for name in SEED_YARDSTICKS],
    ]:
        if not paired.empty:
            lines += table_rows(paired, what)
    for name in candidates:
        lines += seed_mean_rows(table, name)
    return [*lines, "", pooling_verdict(check_pairs(table))]


def main(args: argparse.Namespace) -> int:
    if args.action == "collect":
        return collect(args.runs, args.results)
    if args.action == "pooling":  # exit status 0 only where the check passed (scale_runs.sh)
        paired = check_pairs(outcomes(args.results))
        print(pooling_verdict(paired))
        return 0 if pooling_passed(paired) else 1
    publish_table(report_lines(args.results), args.results / TABLE_FILE, DOC_BLOCK, args.write)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("collect", "report", "pooling"))
    parser.add_argument("--runs", type=Path, default=RUNS, help="the runs (collect)")
    add_report_flags(parser, RESULTS, TABLE_FILE)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
