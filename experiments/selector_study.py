"""Issue 9: does a no-reference selector rank the DIP snapshots of an image? Train on PolyU,
tune on PolyU (cross-validation by whole images), report on the CC runs (seeds 0-2).

Reads the feature cache of experiments/selector_features.py (`<cache>/PolyU_s0_o<k>/` = the
PolyU images every 10th from offset k, `<cache>/CC_scratch_s<seed>/`). Every selector skips the
first `--start_index` snapshots, as test_BIQAN.py does. Per CC image and seed it measures the
within-image SRCC and PLCC of the scores against the true PSNR and the gap of the pick to the
true best; `fixed:N` is tuned on the same PolyU images. Writes `<tables>/selector_study.md`.

    python experiments/selector_study.py --cache devdata/features --tables devdata/tables
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common
from utils import snapshot_features
from utils.ranker_training import RankerTraining, ranking_quality, train_ranker


@dataclasses.dataclass(frozen=True)
class ImageRun:
    """One image's cached run: dataset, name, seed, iterations (N,), PSNR (N,), features (N, F)."""

    dataset: str
    name: str
    seed: int
    offset: int
    iteration: np.ndarray
    psnr: np.ndarray
    features: np.ndarray


def load_cache(cache: Path, start_index: int) -> list[ImageRun]:
    """Every cached image with its first `start_index` snapshots dropped."""
    runs = []
    for folder in sorted(path for path in cache.iterdir() if path.is_dir()):
        if folder.name.startswith("PolyU_s0_o"):
            dataset, seed, offset = "PolyU", 0, int(folder.name.rsplit("o", 1)[1])
        elif folder.name.startswith("PolyU_s0_n"):  # experiments/noisier_polyu.py
            dataset, seed, offset = "PolyU+noise", 0, int(folder.name.rsplit("n", 1)[1])
        elif folder.name.startswith("CC_scratch_s"):
            dataset, seed, offset = "CC", int(folder.name.rsplit("s", 1)[1]), 0
        else:
            continue
        for path in sorted(folder.glob("*.npz")):
            data = np.load(path)
            runs.append(
                ImageRun(
                    dataset,
                    path.stem,
                    seed,
                    offset,
                    data["iteration"][start_index:],
                    data["psnr"][start_index:],
                    data["features"][start_index:],
                )
            )
    return runs


def with_iteration(run: ImageRun, columns: list[int], use_iteration: bool) -> np.ndarray:
    """The chosen feature columns, plus log10(iteration) when asked."""
    chosen = run.features[:, columns]
    return np.column_stack([chosen, np.log10(run.iteration)]) if use_iteration else chosen


@dataclasses.dataclass(frozen=True)
class Variant:
    """A ranker variant: which features, whether log-iteration is one, the training settings."""

    label: str
    features: tuple[str, ...]
    use_iteration: bool
    training: RankerTraining


def fit_variant(variant: Variant, train: list[ImageRun]):
    columns = [snapshot_features.FEATURE_NAMES.index(name) for name in variant.features]
    images = [(with_iteration(run, columns, variant.use_iteration), run.psnr) for run in train]
    names = variant.features + (("log_iteration",) if variant.use_iteration else ())
    ranker = train_ranker(images, names, variant.training)
    return lambda run: ranker.score(with_iteration(run, columns, variant.use_iteration))


def evaluate(scores: np.ndarray, run: ImageRun) -> tuple[float, float, float]:
    """(SRCC, PLCC, gap of the argmax pick to the true best in dB) of one image."""
    return ranking_quality(scores, run.psnr)


def fixed_scores(iteration: int):
    return lambda run: -np.abs(run.iteration - iteration).astype(float)


def summary(
    selector, runs: list[ImageRun], label: str = "", picks: list | None = None
) -> dict[str, float]:
    """Mean within-image SRCC/PLCC and gap of `selector` over `runs`; picks appended to `picks`."""
    rows = []
    for run in runs:
        scores = selector(run)
        rows.append(evaluate(scores, run))
        if picks is not None:
            picks.append(pick_row(label, run, scores))
    rows = np.array(rows)
    low, high = image_bootstrap(rows[:, 2], [run.name for run in runs])
    return {
        "srcc": np.nanmean(rows[:, 0]),
        "plcc": np.nanmean(rows[:, 1]),
        "gap": rows[:, 2].mean(),
        "gap_sd": rows[:, 2].std(),
        "n": len(runs),
        "gap_low": low,
        "gap_high": high,
    }


def image_bootstrap(gaps: np.ndarray, names: list[str], draws: int = 2000) -> tuple[float, float]:
    """95 % interval of the mean gap, resampling whole images (an image's seeds stay together:
    they are not independent); `gaps` (N,) of the N runs named `names`."""
    groups = [
        gaps[[i for i, name in enumerate(names) if name == image]] for image in sorted(set(names))
    ]
    random = np.random.default_rng(0)
    means = [
        np.mean(np.concatenate([groups[i] for i in random.integers(0, len(groups), len(groups))]))
        for _ in range(draws)
    ]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def out_of_fold_scores(
    variant: Variant, polyu: list[ImageRun], folds: int
) -> dict[str, np.ndarray]:
    """Image name -> the scores of `variant` trained on the other folds (fold by whole images:
    a fold's images are never trained on)."""
    scores = {}
    for train, test in fold_split(polyu, folds):
        selector = fit_variant(variant, train)
        scores.update({run.name: selector(run) for run in test})
    return scores


def fold_split(polyu: list[ImageRun], folds: int) -> list[tuple[list[ImageRun], list[ImageRun]]]:
    """(train, test) per fold; fold k tests every `folds`-th image from index k."""
    return [
        ([run for index, run in enumerate(polyu) if index % folds != fold], polyu[fold::folds])
        for fold in range(folds)
    ]


def cross_validate(
    variant: Variant, polyu: list[ImageRun], folds: int, picks: list[dict]
) -> dict[str, float]:
    """Out-of-fold SRCC and gap pooled over folds; every image's pick is appended to `picks`."""
    scores = out_of_fold_scores(variant, polyu, folds)
    rows = np.array([evaluate(scores[run.name], run) for run in polyu])
    picks += [pick_row(variant.label, run, scores[run.name]) for run in polyu]
    return {"srcc": np.nanmean(rows[:, 0]), "gap": rows[:, 2].mean(), "n": len(rows)}


def pick_row(selector: str, run: ImageRun, scores: np.ndarray) -> dict:
    """One pick: which snapshot `selector` chose for `run`, and the true best."""
    return {
        "selector": selector,
        "dataset": run.dataset,
        "image": run.name,
        "seed": run.seed,
        "offset": run.offset,
        "picked_iteration": int(run.iteration[int(np.argmax(scores))]),
        "best_iteration": int(run.iteration[int(np.argmax(run.psnr))]),
    }


def variants() -> list[Variant]:
    names = snapshot_features.FEATURE_NAMES
    trajectory = snapshot_features.TRAJECTORY_FEATURES
    residual = snapshot_features.RESIDUAL_FEATURES
    base = RankerTraining()
    return [
        Variant("all features", names, False, base),
        Variant("all + log iteration", names, True, base),
        Variant("trajectory only", trajectory, False, base),
        Variant("residual only", residual, False, base),
        Variant("all, linear", names, False, dataclasses.replace(base, hidden=())),
        Variant("all, hidden 32x32", names, False, dataclasses.replace(base, hidden=(32, 32))),
        Variant(
            "all, temperature 1 dB", names, False, dataclasses.replace(base, temperature_db=1.0)
        ),
        Variant("noise level + log iteration", ("noise_db",), True, base),
    ]


def log_best_iterations(runs: list[ImageRun]) -> np.ndarray:
    """ln of each run's best iteration, shape (len(runs),)."""
    return np.log([run.iteration[int(np.argmax(run.psnr))] for run in runs])


def noise_line(train: list[ImageRun]) -> tuple[float, float]:
    """(slope, intercept) of ln(best iteration) regressed linearly on `noise_level` over `train`."""
    levels = np.array([noise_level(run) for run in train])
    slope, intercept = np.polyfit(levels, log_best_iterations(train), 1)
    return float(slope), float(intercept)


def noise_peak_rule(train: list[ImageRun]):
    """A fixed stop that moves with the noise level (`noise_line` over `train`); the pick is the
    snapshot nearest the prediction."""
    slope, intercept = noise_line(train)
    return lambda run: -np.abs(np.log(run.iteration) - (intercept + slope * noise_level(run)))


def online_pick(scores: np.ndarray, patience: int) -> tuple[int, int]:
    """(pick index, stop index) of run_BDN's online rule on a score curve: the best score so far,
    stopping after `patience` snapshots without a better one (the last index when it never fires)."""
    best, waited = 0, 0
    for index in range(1, len(scores)):
        if scores[index] > scores[best]:
            best, waited = index, 0
        else:
            waited += 1
            if waited >= patience:
                return best, index
    return best, len(scores) - 1


def online_table(
    variant: Variant,
    polyu: list[ImageRun],
    cc: list[ImageRun],
    folds: int,
    patiences: tuple[int, ...] = (3, 5, 10, 15, 20),
) -> list[str]:
    """Online stopping with the ranker: patience tuned on PolyU (out-of-fold scores), on CC."""
    polyu_scores = out_of_fold_scores(variant, polyu, folds)
    selector = fit_variant(variant, polyu)

    def measure(runs, scores_of, patience):
        gaps, fractions = [], []
        for run in runs:
            pick, stop = online_pick(scores_of(run), patience)
            gaps.append(run.psnr.max() - run.psnr[pick])
            fractions.append(run.iteration[stop] / run.iteration[-1])
        return float(np.mean(gaps)), float(np.mean(fractions))

    tuned = min(patiences, key=lambda p: measure(polyu, lambda run: polyu_scores[run.name], p)[0])
    lines = [
        "",
        f"Online stopping with the ranker ({variant.label}); patience in snapshots, "
        "tuned on PolyU (out-of-fold scores):",
        "",
        "| patience | PolyU gap (dB) | PolyU share of iterations | CC gap (dB) | CC share of iterations |",
        "|---|---|---|---|---|",
    ]
    for patience in patiences:
        polyu_gap, polyu_share = measure(polyu, lambda run: polyu_scores[run.name], patience)
        cc_gap, cc_share = measure(cc, selector, patience)
        mark = " (tuned)" if patience == tuned else ""
        lines.append(
            f"| {patience}{mark} | {polyu_gap:.2f} | {polyu_share:.2f} | {cc_gap:.2f} | {cc_share:.2f} |"
        )
    return lines


def noise_level(run: ImageRun) -> float:
    """The noisy input's noise level in dB (the `noise_db` feature, constant over a run)."""
    return float(run.features[0, snapshot_features.FEATURE_NAMES.index("noise_db")])


def noise_shift_lines(
    polyu: list[ImageRun], cc: list[ImageRun], noisier_copies: list[ImageRun], folds: int
) -> list[str]:
    """Does the noise level explain the PolyU -> CC shift? The noise ranges of both sets, the
    PolyU out-of-fold gap of the first variant for the cleaner and the noisier half of PolyU, and
    the CC gap when the ranker and the fixed stop are trained on the noisier half only (the split
    is PolyU's median noise level: no CC number chooses it), or on PolyU plus the noisier copies
    of experiments/noisier_polyu.py (`noisier_copies`, may be empty)."""
    variant = variants()[0]
    median = float(np.median([noise_level(run) for run in polyu]))
    scores = out_of_fold_scores(variant, polyu, folds)
    out_of_fold = {run.name: evaluate(scores[run.name], run)[2] for run in polyu}
    noisier = [run for run in polyu if noise_level(run) >= median]
    cleaner = [run for run in polyu if noise_level(run) < median]
    cc_levels = [noise_level(run) for run in cc]
    lines = [
        "",
        "Noise level: PolyU vs CC (noise_db, 20 log10 of the estimated sigma):",
        "",
        f"- PolyU: {min(noise_level(r) for r in polyu):.1f} to "
        f"{max(noise_level(r) for r in polyu):.1f} dB, median {median:.1f};",
        f"- CC: {min(cc_levels):.1f} to {max(cc_levels):.1f} dB, median "
        f"{float(np.median(cc_levels)):.1f}; CC images noisier than every PolyU image: "
        f"{sum(level > max(noise_level(r) for r in polyu) for level in cc_levels)}/{len(cc)};",
        f"- PolyU out-of-fold gap ({variant.label}): cleaner half "
        f"{np.mean([out_of_fold[r.name] for r in cleaner]):.2f} dB, noisier half "
        f"{np.mean([out_of_fold[r.name] for r in noisier]):.2f} dB.",
        "",
        header_line(),
        "",
    ]
    lines[-1:] = [
        row(
            f"{variant.label}, trained on the noisier PolyU half ({len(noisier)} images)",
            summary(fit_variant(variant, noisier), cc),
        ),
        row(
            f"fixed:{common.tune_fixed(noisier)} (tuned on the noisier PolyU half)",
            summary(fixed_scores(common.tune_fixed(noisier)), cc),
        ),
    ]
    if noisier_copies:
        widened = polyu + noisier_copies
        for chosen in (variant, variants()[2]):
            lines.append(
                row(
                    f"{chosen.label}, trained on PolyU + {len(noisier_copies)} noisier copies",
                    summary(fit_variant(chosen, widened), cc),
                )
            )
        lines.append(
            row(
                f"fixed:{common.tune_fixed(widened)} (tuned on PolyU + noisier copies)",
                summary(fixed_scores(common.tune_fixed(widened)), cc),
            )
        )
    return lines


def log_iteration_prior(train: list[ImageRun]):
    """Scores (N,) = the log density, up to a constant, of a log-normal fitted to the best
    iterations of `train`: -(ln iteration - mean)^2 / (2 sd^2), at most 0, highest at exp(mean)."""
    peaks = log_best_iterations(train)
    mean, deviation = float(peaks.mean()), float(peaks.std())
    return lambda run: -((np.log(run.iteration) - mean) ** 2) / (2 * deviation**2)


def discrepancy_pick(run: ImageRun, threshold_db: float) -> int:
    """Morozov's discrepancy principle: the first snapshot whose residual energy is within
    `threshold_db` of the estimated noise energy (`residual_db` <= threshold), else the last."""
    residual = run.features[:, snapshot_features.FEATURE_NAMES.index("residual_db")]
    below = np.flatnonzero(residual <= threshold_db)
    return int(below[0]) if below.size else len(residual) - 1


def mean_gap(runs: list[ImageRun], pick) -> float:
    """Mean gap (dB) of `pick(run)` (a snapshot index) to each run's true best."""
    return float(np.mean([run.psnr.max() - run.psnr[pick(run)] for run in runs]))


def why_lines(
    polyu: list[ImageRun], cc: list[ImageRun], noisier_copies: list[ImageRun], folds: int
) -> list[str]:
    """Why the image-based rules lose to a fixed stop on CC, three measurements:
    1. how much of PolyU's best iteration the noise level explains;
    2. the ranker's scores plus `weight` x a log-normal prior over the best iteration (fitted on
       the training images), the weight tuned on PolyU out-of-fold: how much the features add to
       the prior on CC;
    3. the discrepancy principle with its threshold tuned on PolyU."""
    levels = np.array([noise_level(run) for run in polyu])
    slope, intercept = noise_line(polyu)
    correlation = float(np.corrcoef(levels, log_best_iterations(polyu))[0, 1])
    lowest, highest = (
        float(np.exp(intercept + slope * level)) for level in (levels.max(), levels.min())
    )
    lines = [
        "",
        "Why the image-based rules lose to a fixed stop:",
        "",
        f"- Noise level and best iteration on PolyU: correlation of noise_db with ln(best "
        f"iteration) {correlation:.2f} (R^2 {correlation**2:.2f}, {len(polyu)} images); the fitted "
        f"line moves the stop only from {highest:.0f} to {lowest:.0f} iterations over PolyU's "
        "noise range, so the noise-level rule is a fixed stop with a small tilt.",
    ]
    variant = variants()[0]
    polyu_ranker = out_of_fold_scores(variant, polyu, folds)
    polyu_prior = {}
    for train, test in fold_split(polyu, folds):
        prior = log_iteration_prior(train)
        polyu_prior.update({run.name: prior(run) for run in test})
    ranker, prior = fit_variant(variant, polyu), log_iteration_prior(polyu)
    weights = (0.0, 0.5, 1.0, 2.0, 4.0, 16.0, np.inf)

    def blended(weight: float, ranker_scores: np.ndarray, prior_scores: np.ndarray) -> np.ndarray:
        return prior_scores if np.isinf(weight) else ranker_scores + weight * prior_scores

    polyu_gaps = [
        float(
            np.mean(
                [
                    evaluate(blended(w, polyu_ranker[run.name], polyu_prior[run.name]), run)[2]
                    for run in polyu
                ]
            )
        )
        for w in weights
    ]
    tuned = weights[int(np.argmin(polyu_gaps))]
    lines += [
        "",
        f"Ranker ({variant.label}) plus weight x the log-normal prior over the best iteration "
        "(inf: the prior alone, i.e. a fixed stop at the prior's mode); weight tuned on PolyU "
        "out-of-fold:",
        "",
        "| weight | PolyU CV gap (dB) | CC SRCC | CC gap (dB) |",
        "|---|---|---|---|",
    ]
    for weight, polyu_gap in zip(weights, polyu_gaps):
        cc_rows = np.array([evaluate(blended(weight, ranker(run), prior(run)), run) for run in cc])
        mark = " (tuned)" if weight == tuned else ""
        lines.append(
            f"| {weight:g}{mark} | {polyu_gap:.2f} | {np.nanmean(cc_rows[:, 0]):.2f} | "
            f"{cc_rows[:, 2].mean():.2f} |"
        )
    datasets = [("PolyU", polyu), ("CC", cc)] + (
        [(f"PolyU + white noise ({len(noisier_copies)} images)", noisier_copies)]
        if noisier_copies
        else []
    )
    lines += ["", "Residual features at the true best snapshot (mean ± sd over images):", ""]
    for name in ("residual_db", "residual_correlation"):
        column = snapshot_features.FEATURE_NAMES.index(name)
        cells = []
        for label, runs in datasets:
            at_best = [run.features[int(np.argmax(run.psnr)), column] for run in runs]
            cells.append(f"{label} {np.mean(at_best):.2f} ± {np.std(at_best):.2f}")
        lines.append(f"- `{name}`: " + "; ".join(cells) + ".")
    tuning_grid = np.round(np.arange(0.0, 5.01, 0.1), 1)
    tuned = float(
        tuning_grid[
            int(
                np.argmin(
                    [
                        mean_gap(polyu, partial(discrepancy_pick, threshold_db=t))
                        for t in tuning_grid
                    ]
                )
            )
        ]
    )
    shown = sorted({*np.round(np.arange(0.0, 5.01, 0.5), 1).tolist(), tuned})
    lines += [
        "",
        "Discrepancy principle (stop at the first snapshot with residual_db <= threshold); "
        "threshold tuned on PolyU in steps of 0.1 dB:",
        "",
        "| threshold (dB) | " + " | ".join(f"{name} gap (dB)" for name, _ in datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for threshold in shown:
        pick = partial(discrepancy_pick, threshold_db=threshold)
        mark = " (tuned)" if threshold == tuned else ""
        cells = " | ".join(f"{mean_gap(runs, pick):.2f}" for _, runs in datasets)
        lines.append(f"| {threshold:g}{mark} | {cells} |")
    return lines


def header_line() -> str:
    return (
        "| selector | PolyU CV SRCC | PolyU CV gap (dB) | CC SRCC | CC PLCC | CC gap (dB): mean ± sd [95 % CI over images] |\n"
        "|---|---|---|---|---|---|"
    )


def row(label: str, values: dict[str, float], cv: dict[str, float] | None = None) -> str:
    cv_text = f"{cv['srcc']:.2f} | {cv['gap']:.2f}" if cv else "- | -"
    return (
        f"| {label} | {cv_text} | {values['srcc']:.2f} | {values['plcc']:.2f} | "
        f"{values['gap']:.2f} ± {values['gap_sd']:.2f} [{values['gap_low']:.2f}, "
        f"{values['gap_high']:.2f}] |"
    )


def main(args: argparse.Namespace) -> int:
    runs = load_cache(Path(args.cache), args.start_index)
    polyu = [run for run in runs if run.dataset == "PolyU"]
    cc = [run for run in runs if run.dataset == "CC"]
    if len(polyu) < args.folds or not cc:
        print(f"not enough data: {len(polyu)} PolyU and {len(cc)} CC images cached")
        return 1
    header = header_line()
    fixed = common.tune_fixed(polyu)
    picks: list[dict] = []
    fixed_label = f"fixed:{fixed} (tuned on PolyU)"
    lines = [
        f"PolyU training images: {len(polyu)}; CC image-seeds: {len(cc)} "
        f"(seeds {sorted({run.seed for run in cc})}); start index {args.start_index}.",
        "",
        header,
        "",
        row("last", summary(lambda run: run.iteration.astype(float), cc)),
    ]
    # PolyU picks of the fixed rule (for ensemble_study.py); in-sample: N is tuned on them
    in_sample = summary(fixed_scores(fixed), polyu, fixed_label, picks)
    lines[-2] = row(
        fixed_label + " (PolyU: in-sample)",
        summary(fixed_scores(fixed), cc, fixed_label, picks),
        in_sample,
    )
    noise_rule = "stop at the iteration predicted from the noise level"
    rule_cv = []
    for index, run in enumerate(polyu):  # PolyU picks out of sample (for ensemble_study.py)
        scores = noise_peak_rule(polyu[:index] + polyu[index + 1 :])(run)
        rule_cv.append(evaluate(scores, run))
        picks.append(pick_row(noise_rule, run, scores))
    cv = {"srcc": np.nan, "gap": float(np.mean([gap for _, _, gap in rule_cv]))}
    lines.append(
        row(
            noise_rule + " (PolyU: leave one out)",
            summary(noise_peak_rule(polyu), cc, noise_rule, picks),
            cv,
        )
    )
    for variant in variants():
        cv = cross_validate(variant, polyu, args.folds, picks)
        lines.append(
            row(variant.label, summary(fit_variant(variant, polyu), cc, variant.label, picks), cv)
        )
        print(lines[-1], flush=True)
    Path(args.tables).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(picks).to_csv(Path(args.tables) / "selector_picks.csv", index=False)
    lines += [
        "",
        "Learning curve (all features; PolyU images by offset, every 10th from offset k):",
        "",
        header,
    ]
    for offsets in ((0,), (0, 1, 2), tuple(range(10))):
        subset = [run for run in polyu if run.offset in offsets]
        if len(subset) >= 2:
            lines.append(
                row(
                    f"{len(subset)} PolyU images (offsets {offsets[0]}-{offsets[-1]})",
                    summary(fit_variant(variants()[0], subset), cc),
                )
            )
    lines += online_table(variants()[args.online_variant], polyu, cc, args.folds)
    noisier_copies = [run for run in runs if run.dataset == "PolyU+noise"]
    lines += noise_shift_lines(polyu, cc, noisier_copies, args.folds)
    lines += why_lines(polyu, cc, noisier_copies, args.folds)
    text = "\n".join(lines) + "\n"
    common.write_table(args.tables, "selector_study.md", text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="devdata/features", help="feature cache folder")
    common.add_folder_flags(parser, "tables")
    common.add_start_index_flag(parser)
    parser.add_argument("--folds", type=int, default=5, help="PolyU cross-validation folds")
    parser.add_argument(
        "--online_variant",
        type=int,
        default=0,
        help="index of the variant replayed as an online rule (default 0)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
