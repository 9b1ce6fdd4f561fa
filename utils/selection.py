"""Snapshot selectors: which saved DIP snapshot of an image to output.

* ``biqan``: the snapshot with the highest predicted quality (argmax of the score curve).
* ``ranker``: the snapshot with the highest score of the snapshot ranker
  (models/snapshot_ranker.py), which scores no-reference features of the snapshot and its
  residual against the noisy input (utils/snapshot_features.py).
* ``wmv``: the training-free windowed-moving-variance early-stopping rule of Wang et al.
  ("Early Stopping for Deep Image Prior"): the variance of the last ``window`` snapshots is
  tracked; after ``patience`` snapshots without a new variance minimum the rule fires, and the
  pick is the snapshot at the variance minimum (the newest snapshot of that window). It fires
  at ``fixed:auto``'s stop at the latest (the snapshots after it are not looked at).
* ``last``: the last snapshot.
* ``fixed:N``: the snapshot saved at iteration N; ``fixed:auto``: the first snapshot at or
  after the tuned stop scaled to the image's size (`scaled_stop`).
* any other rule of `utils.method.RULES` offered offline.

Each selector replays its rule of `utils.method.RULES`, the class online early stopping runs,
over a finished run's snapshots, so the offline pick is the online one. Selectors return an
index into the candidate list; the caller maps it to an iteration.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from utils import method

# Snapshots skipped at the start of each image: by test_BIQAN's selectors (--start_index), by
# the labels of step 2 (--start_position) and by the ranker's online rule, which is trained on
# the later ones. The first snapshots are far from any useful pick.
START_INDEX = 8


@dataclasses.dataclass(frozen=True)
class Selector:
    """A parsed ``--selector`` value; for ``fixed``, ``iteration`` is N, or None for auto."""

    name: str
    iteration: int | None = None

    @property
    def label(self) -> str:
        """The selector as written on the command line, e.g. ``fixed:500``, ``fixed:auto``."""
        if self.name == "fixed":
            return f"fixed:{AUTO if self.iteration is None else self.iteration}"
        return self.name


def parse_selector(text: str) -> Selector:
    """Parse ``biqan``, ``ranker``, ``wmv``, ``last``, ``fixed:N`` (N a positive iteration
    number) or ``fixed:auto``."""
    name, separator, argument = text.strip().partition(":")
    if name not in method.rule_names("offline"):
        others = [rule for rule in method.rule_names("offline") if rule != "fixed"]
        raise ValueError(
            f"unknown selector {text!r}; choose from {', '.join(others)}, fixed:N, fixed:auto"
        )
    if name != "fixed":
        if separator:
            raise ValueError(f"selector {name!r} takes no argument, got {text!r}")
        return Selector(name=name)
    try:
        iteration = parse_auto(argument)
    except ValueError:
        raise ValueError(
            f"selector {text!r}: write fixed:N with N an iteration number, e.g. fixed:500, or "
            "fixed:auto"
        ) from None
    if iteration is None:
        return Selector(name=name)
    if iteration < 1:
        raise ValueError(f"selector {text!r}: the iteration must be at least 1")
    return Selector(name=name, iteration=iteration)


def parse_auto(text: str) -> int | None:
    """``auto`` -> None (a stop or patience scaled to each image's size), else the number of
    iterations as an int; ValueError otherwise."""
    return None if text.strip() == AUTO else int(text)


def size_ratio(height: int, width: int) -> float:
    """A height x width image's pixels over those of a STOP_SIZE x STOP_SIZE crop (1 at 64x64);
    ValueError for a size that is not positive."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return height * width / STOP_SIZE**2


def scaled_stop(height: int, width: int, exponent: float | None = None) -> float:
    """The tuned stop for a height x width image: `TUNED_FIXED` (tuned on 64x64 crops) times
    `size_ratio` ** `exponent` (default `STOP_EXPONENT`); an iteration number, not rounded to a
    snapshot."""
    ratio = size_ratio(height, width)
    return TUNED_FIXED.iteration * ratio ** (STOP_EXPONENT if exponent is None else exponent)


def stop_side(iteration: float) -> float:
    """The side of the square image whose scaled stop is `iteration` (`scaled_stop` inverted)."""
    ratio = (iteration / TUNED_FIXED.iteration) ** (1 / STOP_EXPONENT)
    return STOP_SIZE * math.sqrt(ratio)


def scaled_patience(height: int, width: int, exponent: float | None = None) -> int:
    """WMV's patience for a height x width image, in snapshots: TUNED_WMV's times `size_ratio`
    ** `exponent` (default `PATIENCE_EXPONENT`), rounded, at least 1."""
    ratio = size_ratio(height, width)
    scale = ratio ** (PATIENCE_EXPONENT if exponent is None else exponent)
    return max(1, round(TUNED_WMV.patience * scale))


def select_at_or_after(iterations: np.ndarray, iteration: float) -> int:
    """Index of the first snapshot saved at or after ``iteration``, or of the last one."""
    iterations = np.asarray(iterations)
    later = np.flatnonzero(iterations >= iteration)
    return int(later[0]) if later.size else len(iterations) - 1


def select_argmax(scores: np.ndarray) -> int:
    """Index of the highest score in a 1-D array (first one on ties); NaN scores never win."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    if not np.any(np.isfinite(scores)):
        raise ValueError("scores has no finite value")
    return int(np.nanargmax(np.where(np.isfinite(scores), scores, np.nan)))


def select_last(count: int) -> int:
    """Index of the last of ``count`` snapshots."""
    if count < 1:
        raise ValueError(NO_SNAPSHOTS)
    return count - 1


def select_fixed(iterations: np.ndarray, iteration: int) -> int:
    """Index of the snapshot saved at ``iteration``, or of the last one when the run ended
    before it (as the online fixed rule keeps the last snapshot of a shorter run); ValueError
    listing the range when no snapshot was saved at ``iteration`` within it."""
    iterations = np.asarray(iterations)
    matches = np.flatnonzero(iterations == iteration)
    if matches.size == 0 and iteration > iterations.max():
        return len(iterations) - 1
    if matches.size == 0:
        raise ValueError(
            f"no snapshot at iteration {iteration}; the candidates run from "
            f"{iterations.min()} to {iterations.max()}"
        )
    return int(matches[0])


@dataclasses.dataclass(frozen=True)
class WmvResult:
    """Outcome of the windowed-moving-variance rule.

    ``variances`` has shape (snapshots,): NaN before the first full window and after the rule
    fired; ``pick_index`` is the snapshot at the variance minimum; ``fired`` tells whether
    ``patience`` snapshots passed without a new minimum (``stop_index`` is where); when it never
    fired, the pick is the minimum over all snapshots.
    """

    pick_index: int
    variances: np.ndarray
    fired: bool
    stop_index: int | None


def wmv_replay(
    variances: np.ndarray, patience: int, stop_index: int | None = None
) -> tuple[int, int | None]:
    """The WMV rule over window variances computed before ((snapshots,), NaN until the first
    full window), firing after `patience` snapshots without a new minimum or at snapshot
    `stop_index` (`fixed:auto`'s stop) at the latest: (the pick, at the minimum up to where the
    rule fired; where it fired, or None), the decisions `method.WmvRule` takes."""
    variances = np.asarray(variances, dtype=np.float64)
    skip = int(np.isnan(variances).sum())  # before the first full window
    options = method.RuleOptions(patience=patience, score=lambda variance: -variance, skip=skip)
    rule = method.BestScoreRule(options)
    seen = variances if stop_index is None else variances[: stop_index + 1]
    fired_at = method.replay(rule, enumerate(seen))
    if fired_at is None and len(seen) < len(variances):
        fired_at = len(seen) - 1
    return rule.best_index, fired_at


def default_wmv_replay(
    variances: np.ndarray, iterations: np.ndarray, height: int, width: int
) -> tuple[int, int | None]:
    """The default rule (`DEFAULT_WMV`, as denoise.py and test_BIQAN.py run it) replayed on a
    height x width image's window variances ((snapshots,), window `DEFAULT_WMV.window`, NaN
    until the first full window) saved at `iterations`: its patience scaled to the size,
    stopping at `fixed:auto`'s stop at the latest; `wmv_replay`'s (pick, fired)."""
    stop = select_at_or_after(iterations, scaled_stop(height, width))
    return wmv_replay(variances, scaled_patience(height, width), stop)


def windowed_moving_variance(
    snapshots: Sequence[np.ndarray] | Callable[[int], np.ndarray],
    window: int,
    patience: int,
    count: int | None = None,
    stop_index: int | None = None,
) -> WmvResult:
    """Run the ES-WMV rule (`method.WmvRule`) over snapshots given as HxWxC float arrays or a loader.

    ``snapshots`` is a sequence of equally shaped float arrays (any range, e.g. [0, 1]) or a
    callable ``index -> array`` together with ``count``. The rule fires at snapshot
    ``stop_index`` at the latest (`fixed:auto`'s stop, as online). Loading stops when it fires.
    """
    if callable(snapshots):
        if count is None:
            raise ValueError("count is required when snapshots is a loader function")
        load = snapshots
    else:
        count = len(snapshots)
        load = snapshots.__getitem__
    if count < window:
        raise ValueError(
            f"the windowed-moving-variance rule needs at least {window} "
            f"snapshots (the window), got {count}"
        )
    options = method.RuleOptions(window=window, patience=patience, stop_iteration=stop_index)
    rule = method.WmvRule(options)  # pushed (index, snapshot): its stop is an index
    stop_index = method.replay(rule, ((index, load(index)) for index in range(count)))
    variances = np.full(count, np.nan)
    variances[: len(rule.variances)] = rule.variances
    return WmvResult(
        pick_index=rule.best_index,
        variances=variances,
        fired=rule.fired,
        stop_index=stop_index,
    )


@dataclasses.dataclass(frozen=True)
class WmvSettings:
    """Window and patience of the windowed-moving-variance rule, in snapshots; a patience of
    None is scaled to each image's size (`scaled_patience`)."""

    window: int = 5
    patience: int | None = 50


# The published rule (100 and 1000 iterations at a snapshot every 20) never fires within
# 1200 iterations on the 64x64 crops; tuned on the PolyU runs (docs/REPRODUCTION.md section 5),
# the smallest setting of the grid had the smallest gap: 2 snapshots each (40 iterations).
PUBLISHED_WMV = WmvSettings()
TUNED_WMV = WmvSettings(window=2, patience=2)
# The iteration with the best mean PSNR over the 100 PolyU runs (64x64 centre crops, 1200
# iterations, the run_BDN.py defaults; experiments/selector_study.py): on the CC crops no
# image-based rule trained on PolyU picked better (docs/ARCHIVE_2026.md, A2).
TUNED_FIXED = Selector(name="fixed", iteration=600)
# The best iteration grows with the image: `fixed:auto` and `--stop_iteration auto` scale
# TUNED_FIXED by (pixels / STOP_SIZE^2) ** STOP_EXPONENT, and WMV's default patience
# (`--patience auto`, `DEFAULT_WMV`) is TUNED_WMV's times (pixels / STOP_SIZE^2) **
# PATIENCE_EXPONENT, rounded. Both exponents are the grid values with the best mean picked PSNR
# on the PolyU runs of every size at once (bf16, seed 0: 20 crops at 64x64, 10 at 128x128, 20
# at 256x256: 10 from the four cameras, 6 more fitted in fp32 as section 8's check allows, and
# PolyU's 4 noisiest outside them; experiments/scale_study.py, docs/REPRODUCTION.md section 9,
# which gives how they moved as runs came in): 1923 iterations and 26 snapshots at 256x256. The
# objective is flat, so one crop can move them (leaving one of the 50 runs out gives 0.38-0.46
# and 0.54-0.92; 0.46 with the 44 runs before the fp32 crops, 0.38 with the first 2 of them);
# STOP_EXPONENT was 0.18 before that (fitted to PolyU's best iterations at 64 to 128 pixels),
# which stopped at the first plateau at 256 pixels.
STOP_SIZE = 64
STOP_EXPONENT = 0.42
PATIENCE_EXPONENT = 0.92
DEFAULT_WMV = WmvSettings(window=TUNED_WMV.window, patience=None)
AUTO = "auto"
AUTO_STOP = Selector(name="fixed")  # fixed:auto
RUN_ENDED_NOTE = "the run ends before this iteration: last snapshot"
NO_SNAPSHOTS = "there are no snapshots to select from"
BINS = np.arange(1, 11, dtype=np.float64)  # BIQAN's quality scores 1..10
# test_BIQAN.py's default selector (denoise.py's default rule is its online twin): it adapts to
# the run, within `fixed:auto`'s budget (it fires at that stop at the latest). On the PolyU
# tuning runs, each picked with exponents tuned leaving it out, WMV so stopped, WMV alone and
# `fixed:auto` pick equally well (mean picked PSNR within 0.1 dB of each other at every size, the
# stopped WMV 0.02 dB ahead over sizes; docs/REPRODUCTION.md section 9); the stop makes WMV's
# runs no longer than `fixed:auto`'s.
DEFAULT_SELECTOR = Selector(name="wmv")
# test_BIQAN.py's default when a trained BIQAN is given (the original's only selector).
BIQAN = Selector(name="biqan")


def snapshots_of(flag: str, iterations: int, interval: int) -> int:
    """A flag value in iterations -> snapshots of a run saved every `interval` iterations.

    ValueError when it is not a multiple of the interval; the message recalls that test_BIQAN's
    --wmv_window counted snapshots before, and what the value meant then.
    """
    if iterations % interval:
        raise ValueError(
            f"{flag} {iterations}: counts iterations now (it counted snapshots before), a "
            f"multiple of this run's snapshot interval {interval}; {iterations} snapshots = "
            f"{iterations * interval} iterations here"
        )
    return iterations // interval


def wmv_from_iterations(window: int | None, patience: int | None, interval: int) -> WmvSettings:
    """Window and patience in iterations (None: `DEFAULT_WMV`'s, the patience scaled to each
    image) -> settings in snapshots of a run saved every `interval` iterations; ValueError as
    `snapshots_of`, or for a window under two snapshots."""
    settings = WmvSettings(
        window=DEFAULT_WMV.window
        if window is None
        else snapshots_of("--wmv_window", window, interval),
        patience=None if patience is None else snapshots_of("--patience", patience, interval),
    )
    if settings.window < 2 or (settings.patience is not None and settings.patience < 1):
        raise ValueError(
            f"--wmv_window must be at least 2 snapshots ({2 * interval} iterations here) and "
            f"--patience at least 1 ({interval})"
        )
    return settings


@dataclasses.dataclass(frozen=True)
class ImageSelection:
    """Every selector's pick among one image's candidate snapshots.

    ``picks``: selector label -> candidate index; ``distributions`` (candidates, 10) when the
    biqan selector ran; ``wmv`` when the wmv selector ran; ``notes``: selector label -> a note
    on its pick (a fixed stop after the run's last snapshot); ``failures``: selector label ->
    why it could not pick (the others still did).
    """

    picks: dict[str, int]
    distributions: np.ndarray | None
    wmv: WmvResult | None
    notes: dict[str, str] = dataclasses.field(default_factory=dict)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)


def apply_selectors(
    selectors: Sequence[Selector],
    iterations: np.ndarray,
    score: Callable[[], np.ndarray] | None,
    load_snapshot: Callable[[int], np.ndarray],
    wmv_settings: WmvSettings,
    rank: Callable[[], np.ndarray] | None = None,
) -> ImageSelection:
    """Run ``selectors`` over the candidate snapshots of one image: each replays its rule of
    `method.RULES`, the one online early stopping runs.

    ``iterations`` (candidates,): their iteration numbers; ``score()`` returns the predicted
    distributions (candidates, 10) (needed by biqan); ``rank()`` the ranker's scores
    (candidates,) (needed by ranker); ``load_snapshot(index)`` returns the candidate's HxWxC
    float array (needed by wmv, fixed:auto and the rules that read pixels). A selector that
    cannot pick (a ValueError) is recorded in ``failures`` with its reason, and the others
    still run.
    """
    if not len(iterations):
        failures = {selector.label: NO_SNAPSHOTS for selector in selectors}
        return ImageSelection(picks={}, distributions=None, wmv=None, failures=failures)
    picks: dict[str, int] = {}
    notes: dict[str, str] = {}
    failures = {}
    distributions = wmv = None

    @functools.cache
    def image_size() -> tuple[int, int]:
        """(height, width) of the image, read once from its first snapshot."""
        height, width = load_snapshot(0).shape[:2]
        return height, width

    def patience() -> int:
        """WMV's patience here: the given one, or the tuned one scaled to the image's size."""
        return wmv_settings.patience or scaled_patience(*image_size())

    def wmv_stop_index() -> int | None:
        """The candidate at or after `fixed:auto`'s stop, where WMV fires at the latest (None
        when the run ends before it, as online)."""
        later = np.flatnonzero(np.asarray(iterations) >= scaled_stop(*image_size()))
        return int(later[0]) if later.size else None

    for selector in selectors:
        try:
            if selector.name == "wmv":
                wmv = windowed_moving_variance(
                    load_snapshot,
                    wmv_settings.window,
                    patience(),
                    count=len(iterations),
                    stop_index=wmv_stop_index(),
                )
                picks[selector.label] = wmv.pick_index
                continue
            scores = None
            if selector.name == "biqan":
                distributions = biqan_distributions(score, len(iterations), BINS.size)
                scores = distributions @ BINS
            elif selector.name == "ranker":
                scores = ranker_scores(rank, len(iterations))
            stop = fixed_stop(selector, iterations, image_size)
            rule = method.RULES[selector.name]
            options = method.RuleOptions(
                window=wmv_settings.window,
                patience=None if scores is not None or not rule.needs_pixels else patience(),
                stop_iteration=stop,
                score=None if scores is None else in_order(scores),
            )
            picks[selector.label] = replay_offline(rule(options), iterations, load_snapshot)
            if stop is not None and iterations[picks[selector.label]] < stop:
                notes[selector.label] = RUN_ENDED_NOTE
        except ValueError as error:
            failures[selector.label] = str(error)
    return ImageSelection(
        picks=picks, distributions=distributions, wmv=wmv, notes=notes, failures=failures
    )


def replay_offline(
    rule: method.StoppingRule, iterations: np.ndarray, load_snapshot: Callable[[int], np.ndarray]
) -> int:
    """Replay `rule` over the candidates (their pixels only when it reads them); the index of
    its pick. ValueError when it picks none."""
    inputs = (
        (int(iteration), load_snapshot(index) if rule.needs_pixels else None)
        for index, iteration in enumerate(iterations)
    )
    method.replay(rule, inputs)
    if rule.pick_iteration is None:
        raise ValueError("scores has no finite value" if rule.scored else NO_SNAPSHOTS)
    return int(np.flatnonzero(np.asarray(iterations) == rule.pick_iteration)[0])


def in_order(scores: np.ndarray) -> Callable[[object], float]:
    """A score function that returns `scores` (candidates,) one by one, in the order the
    candidates are replayed (the rule's snapshot argument unused)."""
    values = iter(scores)
    return lambda _snapshot: float(next(values))


def fixed_stop(
    selector: Selector, iterations: np.ndarray, image_size: Callable[[], tuple[int, int]]
) -> float | None:
    """The iteration a ``fixed`` selector stops at (None for other selectors): N, or the tuned
    stop scaled to the image's size (``image_size()``: height, width); ValueError for an N
    within the run that no snapshot was saved at (`select_fixed`)."""
    if selector.name != "fixed":
        return None
    if selector.iteration is None:
        return scaled_stop(*image_size())
    select_fixed(iterations, selector.iteration)
    return selector.iteration


def ranker_scores(rank: Callable[[], np.ndarray] | None, candidates: int) -> np.ndarray:
    """The ranker's scores (candidates,); ValueError without a ranker or for another shape."""
    if rank is None:
        raise ValueError("the ranker selector needs a snapshot ranker")
    ranks = np.asarray(rank(), dtype=np.float64)
    if ranks.shape != (candidates,):
        raise ValueError(f"expected {candidates} ranker scores, got {ranks.shape}")
    return ranks


def biqan_distributions(
    score: Callable[[], np.ndarray] | None, candidates: int, bins: int
) -> np.ndarray:
    """The score distributions (candidates, bins) that ``score()`` predicts; ValueError without
    a model or for another shape."""
    if score is None:
        raise ValueError("the biqan selector needs a trained BIQAN")
    distributions = np.asarray(score(), dtype=np.float64)
    if distributions.shape != (candidates, bins):
        raise ValueError(
            f"expected score distributions of shape ({candidates}, {bins}), "
            f"got {distributions.shape}"
        )
    return distributions
