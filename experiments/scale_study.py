"""Issue 26: what DIP and its no-reference rules give at each image size, from `results/` alone.

    python -m experiments.scale_study [--write]

Reads the per-iteration rows that `experiments.precision_study collect` copies out of the run
folders (`results/precision/64px/...` from experiments/precision_runs.sh, `results/scale/256px/...`
from experiments/scale_runs.sh; layout `<size>px/<precision>/<set>_s<seed>/<stem>.csv` with
`images.csv`) and the CBM3D rows of experiments/cbm3d_full.py run on the same crops
(`results/cbm3d/<size>px/cbm3d_full.csv`). For every size and precision it prints two tables:

1. on CC: the noisy input, DIP's true best over test_BIQAN's candidates, and CBM3D with the
   sigma that is best on that size's PolyU crops;
2. on CC: each no-reference rule's gap to DIP's best, its pick against CBM3D, and, for rules
   that score snapshots, the within-image Spearman correlation of the score with PSNR. The rules
   are the shipped ones (`wmv`, `fixed:auto`, `last`); the same two kinds tuned on that size's
   PolyU runs (a fixed iteration, and WMV's window and patience; at 256 px with the fp32 runs
   of the crops that have no bf16 run once section 8's check has passed,
   `precision_study.pooling_holds`), and BIQAN with the paper's
   recipe trained on them, and with per-image relative labels (experiments/biqan_scale.py,
   once its scores are collected under `results/biqan/`); the shipped ones with a size
   exponent tuned on the PolyU runs of every size at once (`fixed:auto`'s stop and WMV's
   patience grow as (pixels / 64²) ** exponent), so that the defaults can follow the size; and, as a bound, the tuned kinds fitted to the CC
   runs themselves (`hindsight_bounds`: the least gap any setting of a rule family reaches, so
   a target below it needs a better rule, not more tuning).

Transfer learning on the same rows is `experiments.transfer_study` (section 2).

Nothing that is reported as a result tunes on CC. `--write` also writes `results/scale.md` and
its block in docs/REPRODUCTION.md.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from experiments import biqan_scale, precision_study
from experiments.common import REPO, count_of, report_main
from experiments.precision_study import DIP_STUDIES, IMAGES_FILE, WINDOWS, variance_column
from utils import ranker_training, selection, snapshot_features

RESULTS = REPO / "results"
CBM3D_ROWS = "cbm3d"  # RESULTS/cbm3d/<size>px/cbm3d_full.csv
TABLE_FILE = "scale.md"
DOC_BLOCK = "scale"  # this table's block in docs/REPRODUCTION.md
REPORT_SET, TUNING_SET = "CC", "PolyU"  # run folders are <set>[_<init>]_s<seed>
PRECISIONS = ("fp32", "bf16")  # the shipped ones (precision_study also has a retired variant)
PATIENCES = tuple(range(1, 31))  # WMV's patience grid, in snapshots
MIN_TUNING_RUNS = 5  # a size's PolyU runs tune nothing until there are this many
EXPONENTS = tuple(np.round(np.arange(0.0, 1.0001, 0.02), 2))  # the size exponents' grid


@dataclasses.dataclass(frozen=True)
class ImageRun:
    """One image's DIP run over test_BIQAN's candidates: `iterations`, `psnr` (the averaged
    output against the clean image, dB) and WMV window variances, each (candidates,), and the
    ranker's features (candidates, F), or None in rows collected without them."""

    size: int
    precision: str
    set_name: str
    seed: int
    stem: str
    height: int
    width: int
    noisy: float
    iterations: np.ndarray
    psnr: np.ndarray
    variances: dict[int, np.ndarray]
    features: np.ndarray | None

    @property
    def best(self) -> float:
        return float(self.psnr.max())


def is_tuning_set(set_name: str) -> bool:
    """Whether a run folder's set is tuning data: a PolyU set fitted from scratch (`PolyU30`,
    `PolyUnoisy4`; not a PolyU chain started from another network, `PolyU_<init>`)."""
    return set_name.startswith(TUNING_SET) and "_" not in set_name


def read_run(path: Path, image, size: int, precision: str, set_name: str, seed: int) -> ImageRun:
    """An ImageRun from a collected per-iteration CSV and its images.csv row."""
    rows = pd.read_csv(path).iloc[selection.START_INDEX :].reset_index(drop=True)
    variances = {}
    for window in WINDOWS:
        values = rows[variance_column(window)].to_numpy(dtype=np.float64).copy()
        values[: window - 1] = np.nan  # windows start at the first candidate
        variances[window] = values
    names = list(snapshot_features.FEATURE_NAMES)
    features = rows[names].to_numpy(dtype=np.float64) if set(names) <= set(rows) else None
    return ImageRun(
        size, precision, set_name, seed, image.stem, int(image.height), int(image.width),
        float(image.noisy_psnr), rows["iteration"].to_numpy(), rows["psnr_avg"].to_numpy(),
        variances, features,
    )  # fmt: skip


def read_runs(results: Path) -> list[ImageRun]:
    """The collected image runs under `results`/{precision,scale} that are tabled: all of them
    but a CC folder still filling (`waiting_folders`)."""
    return tabled_runs(read_all_runs(results))


def tabled_runs(runs: list[ImageRun]) -> list[ImageRun]:
    """`runs` without those of the CC folders still filling (`waiting_folders`)."""
    waiting = waiting_folders(runs)
    return [run for run in runs if report_folder(run) not in waiting]


def report_folder(run: ImageRun) -> tuple[int, str, str, int]:
    return run.size, run.precision, run.set_name, run.seed


def waiting_folders(runs: list[ImageRun]) -> dict[tuple[int, str, str, int], str]:
    """The CC folders (`CC` or `CC_<init>`, one seed) that lack some of the CC crops of their
    size (the crops of every CC folder of that size, in any precision), each with "k of n
    crops": a seed, an init or a precision is tabled once all its crops are in, so that the
    means compare the same crops."""
    crops: dict[int, set[str]] = {}
    folders: dict[tuple[int, str, str, int], set[str]] = {}
    for run in runs:
        if run.set_name.startswith(REPORT_SET):
            crops.setdefault(run.size, set()).add(run.stem)
            folders.setdefault(report_folder(run), set()).add(run.stem)
    return {
        folder: f"{len(stems)} of {len(crops[folder[0]])} crops"
        for folder, stems in sorted(folders.items())
        if stems != crops[folder[0]]
    }


def cc_groups(
    runs: list[ImageRun], inits: bool = False
) -> dict[tuple[int, str, str], list[ImageRun]]:
    """(size, precision, set name) -> the CC runs of that set: REPORT_SET (from scratch) and,
    with `inits`, the `CC_<init>` sets; shipped precisions only; keys sorted, runs in the order
    of `runs`."""
    groups: dict[tuple[int, str, str], list[ImageRun]] = {}
    for run in runs:
        from_init = inits and run.set_name.startswith(f"{REPORT_SET}_")
        if run.precision in PRECISIONS and (run.set_name == REPORT_SET or from_init):
            groups.setdefault((run.size, run.precision, run.set_name), []).append(run)
    return dict(sorted(groups.items()))


def read_all_runs(results: Path) -> list[ImageRun]:
    """Every collected image run under `results`/{precision,scale}."""
    runs = []
    for folder in DIP_STUDIES:
        for images_file in sorted((results / folder).glob(f"*px/*/*/{IMAGES_FILE}")):
            run_dir = images_file.parent
            set_name, _, seed = run_dir.name.rpartition("_s")
            size, precision = int(run_dir.parent.parent.name[:-2]), run_dir.parent.name
            for image in pd.read_csv(images_file).itertuples():
                path = run_dir / f"{image.stem}.csv"
                if path.exists():
                    runs.append(read_run(path, image, size, precision, set_name, int(seed)))
    return runs


def cbm3d_tuned(results: Path, size: int) -> tuple[float, int, dict[str, float]] | None:
    """(the sigma, 8-bit units, with the best mean PSNR on the PolyU crops of `size`; how many
    PolyU crops; each CC crop's PSNR at it), or None before CBM3D has run on both sets there."""
    path = results / CBM3D_ROWS / f"{size}px" / "cbm3d_full.csv"
    if not path.is_file():
        return None
    rows = pd.read_csv(path, dtype={"sigma": str})
    grid = rows[rows["sigma"] != "blind"]
    sigmas = grid.groupby(["dataset", "image"])["sigma"].transform("nunique")
    grid = grid[sigmas == grid["sigma"].nunique()]  # images with every σ (a run may be under way)
    polyu = grid[grid["dataset"] == TUNING_SET].groupby("sigma_255")["psnr"].mean()
    report = grid[grid["dataset"] == REPORT_SET]
    if polyu.empty or report.empty:
        return None
    sigma = float(polyu.idxmax())
    at_sigma = report[report["sigma_255"] == sigma]
    count = grid[grid["dataset"] == TUNING_SET]["image"].nunique()
    return sigma, count, dict(zip(at_sigma["image"], at_sigma["psnr"]))


def wmv_pick(run: ImageRun, window: int, patience: int, stop_index: int | None = None) -> int:
    """Index of the snapshot the WMV rule (`window`, `patience`; stopping at snapshot
    `stop_index` at the latest, if given) picks."""
    return selection.wmv_replay(run.variances[window], patience, stop_index)[0]


def fixed_pick(run: ImageRun, iteration: float) -> int:
    return selection.select_at_or_after(run.iterations, iteration)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A no-reference rule as the table shows it: `pick(run)` -> candidate index; `score(run)`
    -> (candidates,) scores whose within-image SRCC with PSNR is reported (None: no score);
    `seeds`: the CC seeds it was measured on where not all of them (BIQAN scores collected for
    some seeds only), else None."""

    setting: str
    pick: Callable[[ImageRun], int]
    score: Callable[[ImageRun], np.ndarray] | None = None
    tuned_on: str = "-"
    seeds: frozenset[int] | None = None


def wmv_rule(window: int, patience: int, tuned_on: str = "-") -> Rule:
    """WMV with (`window`, `patience`); its score is minus the window variance."""
    return Rule(
        f"window {window}, patience {patience}",
        lambda run: wmv_pick(run, window, patience),
        lambda run: -run.variances[window],
        tuned_on,
    )


def tune_on(runs: list[ImageRun], source: str = TUNING_SET) -> dict[str, Rule]:
    """The rules fitted to `runs` (the tuning set, from the set `source`): the fixed iteration
    and the WMV (window, patience) with the best mean picked PSNR, and the snapshot ranker
    trained on them."""
    if not runs:
        return {}
    common = sorted(set.intersection(*(set(run.iterations.tolist()) for run in runs)))
    fixed_means = [np.mean([run.psnr[fixed_pick(run, it)] for run in runs]) for it in common]
    iteration = common[int(np.argmax(fixed_means))]
    grid = [(window, patience) for window in WINDOWS for patience in PATIENCES]
    wmv_means = [np.mean([run.psnr[wmv_pick(run, *cell)] for run in runs]) for cell in grid]
    tuned_on = f"{source}, {runs_count(runs)}"
    rules = {
        "fixed, tuned": Rule(
            f"fixed:{iteration}", lambda run: fixed_pick(run, iteration), None, tuned_on
        ),
        "wmv, tuned": wmv_rule(*grid[int(np.argmax(wmv_means))], tuned_on),
    }
    return rules | ranker_rule("snapshot ranker, trained", runs, tuned_on)


def ranker_rule(name: str, runs: list[ImageRun], tuned_on: str) -> dict[str, Rule]:
    """{name: the snapshot ranker trained with its defaults on `runs`}, or {} where some run
    was collected without the features."""
    if not all(run.features is not None for run in runs):
        return {}
    settings = ranker_training.RankerTraining()
    ranker = ranker_training.train_ranker(
        [(run.features, run.psnr) for run in runs], snapshot_features.FEATURE_NAMES, settings
    )
    rule = Rule(
        f"hidden {settings.hidden}, {settings.steps} steps",
        lambda run: int(np.argmax(ranker.score(run.features))),
        lambda run: ranker.score(run.features),
        tuned_on,
    )
    return {name: rule}


def biqan_rules(
    results: Path, size: int, precision: str, report: list[ImageRun]
) -> dict[str, Rule]:
    """BIQAN (experiments.biqan_scale, trained on the PolyU runs of this size) with each kind of
    labels collected: it picks each image's highest predicted score, on the seeds whose report
    runs all have their scores collected (a network whose training set is gone cannot score a
    later seed)."""
    rules, folder = {}, results / biqan_scale.RESULTS_FOLDER
    seeds = {run.seed for run in report}
    for labels, name in biqan_scale.LABEL_RULES.items():
        collected = biqan_scale.read_scores(folder, size, precision, labels)
        if collected is None:
            continue
        record, scores = collected
        missing = {
            run.seed for run in report if (f"{run.set_name}_s{run.seed}", run.stem) not in scores
        }
        if missing != seeds:
            rule = biqan_rule(record, scores)
            rules[name] = dataclasses.replace(
                rule, seeds=frozenset(seeds - missing) if missing else None
            )
    return rules


def biqan_rule(record: dict, scores: dict) -> Rule:
    """The rule of one collected BIQAN training (biqan_scale.read_scores's pair)."""

    def score(run: ImageRun) -> np.ndarray:
        iterations, means = scores[(f"{run.set_name}_s{run.seed}", run.stem)]
        return pd.Series(means, index=iterations).reindex(run.iterations).to_numpy()

    return Rule(
        record["recipe"],
        lambda run: selection.select_argmax(score(run)),
        score,
        f"PolyU, {count_of(len(record['polyu_images']), 'run')}",
    )


def hindsight_bounds(report: list[ImageRun]) -> dict[str, Rule]:
    """`tune_on` fitted to the report runs themselves: the least gap each rule family could
    reach on them with its best setting known in advance. A bound on what tuning can do, never
    a result (the rows say so)."""
    return {
        f"{name} (bound)": rule
        for name, rule in tune_on(report, f"{REPORT_SET} itself, in hindsight").items()
    }


def picked_psnr(
    tuning: dict[int, list[ImageRun]], pick: Callable[[ImageRun, float], int]
) -> tuple[np.ndarray, np.ndarray]:
    """(the PSNR `pick(run, exponent)` gives, (runs, EXPONENTS), dB; each run's size, (runs,))
    over the tuning runs of every size."""
    runs = [(size, run) for size, size_runs in tuning.items() for run in size_runs]
    psnr = np.array([[run.psnr[pick(run, exponent)] for exponent in EXPONENTS] for _, run in runs])
    return psnr, np.array([size for size, _ in runs])


def best_exponent(psnr: np.ndarray, sizes: np.ndarray, keep: np.ndarray) -> float:
    """The EXPONENTS value with the best mean over sizes of the size's mean picked PSNR, over the
    runs where `keep` (bool, (runs,)) holds; `psnr` and `sizes` as picked_psnr returns them."""
    means = [psnr[keep & (sizes == size)].mean(axis=0) for size in np.unique(sizes[keep])]
    return EXPONENTS[int(np.argmax(np.mean(means, axis=0)))]


class TunedExponent(NamedTuple):
    """A size exponent tuned on every run, and its least and largest value over the folds that
    leave one run out: how far one crop moves it."""

    best: float
    least: float
    largest: float

    def setting(self) -> str:
        return f"{self.best:g} ({self.least:g}-{self.largest:g} leaving one run out)"


def left_out_exponents(psnr: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """best_exponent tuned without each run in turn, (runs,) (arguments as best_exponent's)."""
    runs = np.arange(len(sizes))
    return np.array([best_exponent(psnr, sizes, runs != left) for left in runs])


def tuned_exponent(psnr: np.ndarray, sizes: np.ndarray) -> TunedExponent:
    """best_exponent over every run, and over each leave-one-run-out fold (arguments as
    best_exponent's)."""
    folds = left_out_exponents(psnr, sizes)
    return TunedExponent(best_exponent(psnr, sizes, sizes > 0), min(folds), max(folds))


def polyu_comparison_lines(runs: list[ImageRun], pooled: bool = False) -> list[str]:
    """How the PolyU tuning runs (`tuning_by_size`, `pooled` as there) alone compare the
    size-scaled rules (fixed:auto, WMV alone, and WMV stopped at fixed:auto's stop,
    `wmv_by_stop`, the default): per precision with tuning runs at two sizes or more, each
    rule's mean picked PSNR per size (dB), every run picked with the exponents tuned leaving that
    run out."""
    lines = []
    for precision in PRECISIONS:
        tuning = tuning_by_size(runs, precision, pooled)
        if len(tuning) < 2:
            continue
        flat = [run for size_runs in tuning.values() for run in size_runs]  # picked_psnr's order
        sizes = np.array([run.size for run in flat])
        stops = left_out_exponents(picked_psnr(tuning, stop_at)[0], sizes)
        patiences = left_out_exponents(picked_psnr(tuning, wmv_at)[0], sizes)
        rules = {
            "fixed:auto": lambda run, stop, patience: stop_at(run, stop),
            "wmv alone": lambda run, stop, patience: wmv_at(run, patience),
            "wmv stopped by fixed:auto (the default)": wmv_by_stop,
        }
        cells = []
        for name, pick in rules.items():
            picked = np.array(
                [run.psnr[pick(run, *cell)] for run, *cell in zip(flat, stops, patiences)]
            )
            means = [picked[sizes == size].mean() for size in tuning]
            sized = ", ".join(f"{size} px {mean:.2f}" for size, mean in zip(tuning, means))
            cells.append(f"{name} {sized} (mean {np.mean(means):.3f})")
        lines += [
            "",
            f"The size-scaled rules on the PolyU tuning runs ({precision}, seed 0; "
            f"{runs_count(flat)}): fixed:auto, "
            "WMV alone and WMV stopped at fixed:auto's stop at the latest (the default), each "
            "run picked with the exponents tuned leaving it out; mean picked PSNR (dB): "
            f"{'; '.join(cells)}.",
        ]
    return lines


def stop_at(run: ImageRun, exponent: float) -> int:
    """`fixed:auto`'s pick with the stop exponent `exponent`."""
    return fixed_pick(run, selection.scaled_stop(run.height, run.width, exponent))


def wmv_at(run: ImageRun, exponent: float, stop_index: int | None = None) -> int:
    """WMV's pick with the patience exponent `exponent` (stopping at snapshot `stop_index` at the
    latest, if given)."""
    patience = selection.scaled_patience(run.height, run.width, exponent)
    return wmv_pick(run, selection.DEFAULT_WMV.window, patience, stop_index)


def wmv_by_stop(run: ImageRun, stop_exponent: float, patience_exponent: float) -> int:
    """The default WMV's pick (its patience scaled with `patience_exponent`), stopping at
    `fixed:auto`'s stop (with `stop_exponent`) at the latest, as it runs online."""
    return wmv_at(run, patience_exponent, stop_at(run, stop_exponent))


def tuned_exponents(tuning: dict[int, list[ImageRun]]) -> tuple[TunedExponent, TunedExponent]:
    """(`fixed:auto`'s stop exponent, WMV's patience exponent) fitted to the tuning runs of every
    size (keys: sizes): each the grid value with the best mean over sizes of the size's mean
    picked PSNR, with its range over the leave-one-run-out folds. The shipped
    `selection.STOP_EXPONENT` and `PATIENCE_EXPONENT` are these on the committed bf16 runs."""
    return (
        tuned_exponent(*picked_psnr(tuning, stop_at)),
        tuned_exponent(*picked_psnr(tuning, wmv_at)),
    )


def tuning_by_size(
    runs: list[ImageRun], precision: str, pooled: bool = False
) -> dict[int, list[ImageRun]]:
    """size -> the tuning runs of `precision` at that size (`tuning_runs`, `pooled` as there),
    for the sizes that have enough of them."""
    sizes = sorted({run.size for run in runs if run.precision == precision})
    return {size: tuned for size in sizes if (tuned := tuning_runs(runs, size, precision, pooled))}


def tune_across_sizes(tuning: dict[int, list[ImageRun]]) -> dict[str, Rule]:
    """Rules tuned on the tuning runs of every size at once (keys: sizes, at least two): the
    size-scaled rules with their exponents (`tuned_exponents`, each shown with its
    leave-one-run-out range; WMV alone, without the default's stop at fixed:auto's), and the
    snapshot ranker trained on all those runs (its features are per-pixel measures of each
    snapshot, so runs of any size can train it)."""
    if len(tuning) < 2:
        return {}
    stop, patience = tuned_exponents(tuning)
    wmv, ratio = selection.TUNED_WMV, f"(pixels / {selection.STOP_SIZE}²)"
    sizes = "/".join(str(size) for size in sorted(tuning))
    every_run = [run for runs in tuning.values() for run in runs]
    tuned_on = f"PolyU, {runs_count(every_run)} at {sizes} px"
    return ranker_rule("snapshot ranker, every size", every_run, tuned_on) | {
        "fixed:auto, exponent tuned": Rule(
            f"{selection.TUNED_FIXED.iteration} x {ratio} ^ {stop.setting()}",
            lambda run: stop_at(run, stop.best),
            None,
            tuned_on,
        ),
        "wmv alone, patience scaled": Rule(
            f"window {wmv.window}, patience {wmv.patience} x {ratio} ^ {patience.setting()}",
            lambda run: wmv_at(run, patience.best),
            lambda run: -run.variances[wmv.window],
            tuned_on,
        ),
    }


def shipped_rules() -> dict[str, Rule]:
    """The rules test_BIQAN.py and denoise.py ship."""
    last = Rule("", lambda run: selection.select_last(len(run.iterations)))
    scaled = Rule(
        f"{selection.TUNED_FIXED.iteration} x (pixels / {selection.STOP_SIZE}²) ^ "
        f"{selection.STOP_EXPONENT:g}",
        lambda run: fixed_pick(run, selection.scaled_stop(run.height, run.width)),
    )
    window, exponent = selection.DEFAULT_WMV.window, selection.PATIENCE_EXPONENT
    wmv = Rule(
        f"window {window}, patience {selection.TUNED_WMV.patience}"
        + (f" x (pixels / {selection.STOP_SIZE}²) ^ {exponent:g}" if exponent else "")
        + ", stopping at fixed:auto's stop at the latest",
        lambda run: selection.default_wmv_replay(
            run.variances[window], run.iterations, run.height, run.width
        )[0],
        lambda run: -run.variances[window],
    )
    return {"wmv (default)": wmv, "fixed:auto": scaled, "last": last}


def within_image_srcc(runs: list[ImageRun], score: Callable[[ImageRun], np.ndarray]) -> float:
    """Mean over images of Spearman's rho between `score` and PSNR (over finite scores)."""
    values = []
    for run in runs:
        scores = score(run)
        finite = np.isfinite(scores)
        if finite.sum() > 2:
            values.append(spearmanr(scores[finite], run.psnr[finite])[0])
    return float(np.mean(values)) if values else float("nan")


def spread(values: np.ndarray) -> str:
    """'mean ± sd [max]' of gaps, dB."""
    sd = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    return f"{np.mean(values):.2f}{sd} [{np.max(values):.2f}]"


def quality_row(size: int, precision: str, runs: list[ImageRun], cbm3d) -> str:
    """Table 1's row: CC noisy, DIP best and CBM3D tuned on PolyU at this size."""
    seeds = ",".join(str(seed) for seed in sorted({run.seed for run in runs}))
    noisy = np.mean([run.noisy for run in runs])
    best = np.array([run.best for run in runs])
    best_iterations = [int(run.iterations[np.argmax(run.psnr)]) for run in runs]
    cells = [str(size), precision, seeds, str(len(runs)), f"{noisy:.2f}", f"{best.mean():.2f}"]
    cells += [f"{best.mean() - noisy:+.2f}"]
    if cbm3d is None or any(run.stem not in cbm3d[2] for run in runs):
        cells += ["-", "-"]
    else:
        reference = np.array([cbm3d[2][run.stem] for run in runs])
        tuning = f"σ {cbm3d[0]:g}, {cbm3d[1]} PolyU"
        cells += [f"{reference.mean():.2f} ({tuning})", f"{(best - reference).mean():+.2f}"]
    cells += [f"{np.median(best_iterations):.0f} [{min(best_iterations)}, {max(best_iterations)}]"]
    return "| " + " | ".join(cells) + " |"


def rule_rows(
    size: int, precision: str, runs: list[ImageRun], rules: dict[str, Rule], cbm3d
) -> list[str]:
    """Table 2's rows: every rule's gap to DIP's best on `runs`, its pick against CBM3D and,
    for a rule that scores, its within-image SRCC."""
    rows = []
    every_run = runs
    for name, rule in rules.items():
        setting, runs = rule.setting, every_run
        if rule.seeds is not None:
            runs = [run for run in every_run if run.seed in rule.seeds]
            seeds = ",".join(str(seed) for seed in sorted(rule.seeds))
            label = "seeds" if len(rule.seeds) > 1 else "seed"
            setting += f" ({label} {seeds} only: {len(runs)} of {len(every_run)} runs)"
        picked = np.array([run.psnr[rule.pick(run)] for run in runs])
        gaps = np.array([run.best for run in runs]) - picked
        versus = "-"
        if cbm3d is not None and all(run.stem in cbm3d[2] for run in runs):
            versus = f"{(picked - np.array([cbm3d[2][run.stem] for run in runs])).mean():+.2f}"
        srcc = "-" if rule.score is None else f"{within_image_srcc(runs, rule.score):+.2f}"
        rows.append(
            f"| {size} | {precision} | {name} | {setting} | {rule.tuned_on} | {spread(gaps)} | "
            f"{picked.mean():.2f} | {versus} | {srcc} |"
        )
    return rows


def tuning_runs(
    runs: list[ImageRun], size: int, precision: str, pooled: bool = False
) -> list[ImageRun]:
    """The tuning runs (PolyU sets, seed 0) of one size and precision; with `pooled` (section 8's
    check passed: `precision_study.pooling_holds`) and the check's size and precision, also the
    fp32 runs of the tuning crops that have none in `precision`. None while there are fewer than
    MIN_TUNING_RUNS (one or two images would tune to themselves)."""
    check = precision_study.POOLING_CHECK
    seed_0 = [
        run for run in runs if (run.size, run.seed) == (size, 0) and is_tuning_set(run.set_name)
    ]
    tuning = [run for run in seed_0 if run.precision == precision]
    if pooled and (size, precision) == (check.size, check.candidate):
        fitted = {run.stem for run in tuning}
        for run in seed_0:
            if run.precision == precision_study.REFERENCE and run.stem not in fitted:
                tuning.append(run)
                fitted.add(run.stem)
    return tuning if len(tuning) >= MIN_TUNING_RUNS else []


def runs_count(runs: list[ImageRun]) -> str:
    """ "N runs", with the count of each precision where they mix (pooled tuning runs)."""
    precisions = pd.Series([run.precision for run in runs]).value_counts().sort_index()
    mix = f" ({', '.join(f'{count} {name}' for name, count in precisions.items())})"
    return count_of(len(runs), "run") + (mix if len(precisions) > 1 else "")


def report_lines(results: Path) -> list[str]:
    """Both markdown tables, one row (table 1) or one block of rows (table 2) per size and
    precision that has CC runs."""
    every_run = read_all_runs(results)
    runs = tabled_runs(every_run)
    pooled = precision_study.pooling_holds(results / precision_study.RESULTS.name)
    across = {  # per precision: the size exponents tuned on the PolyU runs of every size
        precision: tune_across_sizes(tuning_by_size(runs, precision, pooled))
        for precision in PRECISIONS
    }
    quality = [
        "DIP and CBM3D on the CC crops (mean over image runs; CBM3D's σ tuned on the PolyU crops "
        "of the same size, 8-bit units):",
        "",
        "| size | precision | seeds | image runs | noisy (dB) | DIP best (dB) | best - noisy | "
        "CBM3D tuned (dB) | best - CBM3D | best iteration, median [range] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rules = [
        "",
        "No-reference rules on the same CC runs: gap to DIP's best (dB, mean ± sd [largest]), the "
        "mean picked PSNR, the pick against CBM3D tuned on PolyU, and for a rule that scores "
        "snapshots (WMV: minus the window variance) the within-image Spearman correlation of "
        "the score with PSNR; tuned rules are tuned on the PolyU runs of the same size and "
        "precision (seed 0), the ranker trained on them with its defaults; the rows marked "
        "(bound) are tuned on these CC runs themselves, in hindsight: the least gap that tuning "
        "each rule family could reach, not a result:",
        "",
        "| size | precision | rule | setting | tuned on | gap to best | picked (dB) | "
        "pick - CBM3D | within-image SRCC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (size, precision, _), report in cc_groups(runs).items():
        cbm3d = cbm3d_tuned(results, size)
        quality.append(quality_row(size, precision, report, cbm3d))
        rules_here = shipped_rules() | tune_on(tuning_runs(runs, size, precision, pooled))
        rules_here |= biqan_rules(results, size, precision, report)
        rules_here |= across[precision] | hindsight_bounds(report)
        rules += rule_rows(size, precision, report, rules_here, cbm3d)
    return quality + rules + polyu_comparison_lines(runs, pooled) + waiting_lines(every_run)


def waiting_lines(runs: list[ImageRun]) -> list[str]:
    """A note naming the CC folders still filling (not in the tables above), if any."""
    waiting = waiting_folders(runs)
    if not waiting:
        return []
    folders = "; ".join(
        f"{size} px {precision} {set_name}_s{seed} ({count})"
        for (size, precision, set_name, seed), count in waiting.items()
    )
    return ["", f"Still filling, tabled once every CC crop is in: {folders}."]


if __name__ == "__main__":
    sys.exit(report_main(sys.modules[__name__]))
