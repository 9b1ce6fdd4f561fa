"""Snapshot selectors: which saved DIP snapshot of an image to output.

* ``biqan``: the snapshot with the highest predicted quality (argmax of the score curve).
* ``ranker``: the snapshot with the highest score of the snapshot ranker
  (models/snapshot_ranker.py), which scores no-reference features of the snapshot and its
  residual against the noisy input (utils/snapshot_features.py).
* ``wmv``: the training-free windowed-moving-variance early-stopping rule of Wang et al.
  ("Early Stopping for Deep Image Prior"): the variance of the last ``window`` snapshots is
  tracked; after ``patience`` snapshots without a new variance minimum the rule fires, and the
  pick is the snapshot at the variance minimum (the newest snapshot of that window).
* ``last``: the last snapshot.
* ``fixed:N``: the snapshot saved at iteration N; ``fixed:auto``: the first snapshot at or
  after the tuned stop scaled to the image's size (`scaled_stop`).

Selectors return an index into the candidate list; the caller maps it to an iteration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

SELECTOR_NAMES = ("biqan", "ranker", "wmv", "last", "fixed")
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
    if name not in SELECTOR_NAMES:
        raise ValueError(
            f"unknown selector {text!r}; choose from {', '.join(SELECTOR_NAMES[:-1])}, fixed:N, "
            "fixed:auto"
        )
    if name != "fixed":
        if separator:
            raise ValueError(f"selector {name!r} takes no argument, got {text!r}")
        return Selector(name=name)
    try:
        iteration = parse_stop(argument)
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


def parse_stop(text: str) -> int | None:
    """``auto`` -> None (the stop scaled to each image's size), else the iteration as an int;
    ValueError otherwise."""
    return None if text.strip() == AUTO else int(text)


def scaled_stop(height: int, width: int, exponent: float | None = None) -> float:
    """The tuned stop for a height x width image: `TUNED_FIXED` (tuned on 64x64 crops) times
    (pixels / 64^2) ** `exponent` (default `STOP_EXPONENT`); an iteration number, not rounded
    to a snapshot."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    pixels = height * width / STOP_SIZE**2
    return TUNED_FIXED.iteration * pixels ** (STOP_EXPONENT if exponent is None else exponent)


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
        raise ValueError("there are no snapshots to select from")
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


class WmvTracker:
    """The ES-WMV rule fed one snapshot at a time (offline selector and online stopping share it).

    The variance of a window is the mean over its ``window`` snapshots of the per-pixel mean
    squared deviation from the window mean. After ``push``: ``variances`` (one per snapshot,
    NaN before the first full window), ``best_index`` (snapshot at the variance minimum, -1
    before the first full window) and ``fired`` (``patience`` snapshots without a new minimum).
    """

    def __init__(self, window: int, patience: int) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 snapshots, got {window}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1 snapshot, got {patience}")
        self.window = window
        self.patience = patience
        self.history: list[np.ndarray] = []
        self.running_sum: np.ndarray | None = None
        self.running_squares: np.ndarray | None = None
        self.variances: list[float] = []
        self.best_variance = np.inf
        self.best_index = -1
        self.waited = 0
        self.fired = False

    def push(self, snapshot: np.ndarray) -> None:
        """Add the next snapshot (an array of the same shape as the earlier ones)."""
        snapshot = np.asarray(snapshot, dtype=np.float64)
        index = len(self.variances)
        if self.running_sum is None:
            self.running_sum, self.running_squares = (
                np.zeros_like(snapshot),
                np.zeros_like(snapshot),
            )
        elif snapshot.shape != self.running_sum.shape:
            raise ValueError(
                f"snapshot {index} has shape {snapshot.shape}, the earlier ones "
                f"{self.running_sum.shape}"
            )
        self.history.append(snapshot)
        self.running_sum += snapshot
        self.running_squares += snapshot**2
        if len(self.history) > self.window:
            dropped = self.history.pop(0)
            self.running_sum -= dropped
            self.running_squares -= dropped**2
        if len(self.history) < self.window:
            self.variances.append(np.nan)
            return
        window_mean = self.running_sum / self.window
        variance = float(
            np.maximum(self.running_squares / self.window - window_mean**2, 0.0).mean()
        )
        self.variances.append(variance)
        self.best_variance, self.best_index, self.waited, self.fired = patience_step(
            variance,
            index,
            self.best_variance,
            self.best_index,
            self.waited,
            self.patience,
            self.fired,
        )


def patience_step(
    value: float,
    index: int,
    best_value: float,
    best_index: int,
    waited: int,
    patience: int,
    fired: bool = False,
) -> tuple[float, int, int, bool]:
    """WMV's patience after the value of snapshot `index`: (best value, its index, snapshots
    waited since, fired: `patience` snapshots without a new minimum; a new minimum leaves
    `fired` as it was)."""
    if value < best_value:
        return value, index, 0, fired
    return best_value, best_index, waited + 1, waited + 1 >= patience


def wmv_replay(variances: np.ndarray, patience: int) -> tuple[int, int | None]:
    """The WMV rule over window variances computed before ((snapshots,), NaN until the first
    full window): (the pick, at the minimum up to where the rule fired; where it fired, or
    None), the decisions `WmvTracker` takes."""
    best_value, best_index, waited = np.inf, -1, 0
    for index, value in enumerate(np.asarray(variances, dtype=np.float64)):
        if np.isnan(value):
            continue
        best_value, best_index, waited, fired = patience_step(
            value, index, best_value, best_index, waited, patience
        )
        if fired:
            return best_index, index
    return best_index, None


def windowed_moving_variance(
    snapshots: Sequence[np.ndarray] | Callable[[int], np.ndarray],
    window: int,
    patience: int,
    count: int | None = None,
) -> WmvResult:
    """Run the ES-WMV rule (`WmvTracker`) over snapshots given as HxWxC float arrays or a loader.

    ``snapshots`` is a sequence of equally shaped float arrays (any range, e.g. [0, 1]) or a
    callable ``index -> array`` together with ``count``. Loading stops when the rule fires.
    """
    tracker = WmvTracker(window, patience)
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
    variances = np.full(count, np.nan)
    for index in range(count):
        tracker.push(load(index))
        variances[index] = tracker.variances[-1]
        if tracker.fired:
            return WmvResult(
                pick_index=tracker.best_index, variances=variances, fired=True, stop_index=index
            )
    return WmvResult(
        pick_index=tracker.best_index, variances=variances, fired=False, stop_index=None
    )


@dataclasses.dataclass(frozen=True)
class WmvSettings:
    """Window and patience of the windowed-moving-variance rule, in snapshots."""

    window: int = 5
    patience: int = 50


# The published rule (100 and 1000 iterations at a snapshot every 20) never fires within
# 1200 iterations on the 64x64 crops; tuned on the PolyU runs (docs/REPRODUCTION.md section 5),
# the smallest setting of the grid had the smallest gap: 2 snapshots each (40 iterations).
PUBLISHED_WMV = WmvSettings()
TUNED_WMV = WmvSettings(window=2, patience=2)
# The iteration with the best mean PSNR over the 100 PolyU runs (64x64 centre crops, 1200
# iterations, the run_BDN.py defaults; experiments/selector_study.py): on the CC crops no
# image-based rule trained on PolyU picks better (docs/REPRODUCTION.md section 6).
TUNED_FIXED = Selector(name="fixed", iteration=600)
# The best iteration grows with the image: `fixed:auto` and `--stop_iteration auto` scale
# TUNED_FIXED by (pixels / STOP_SIZE^2) ** STOP_EXPONENT, the exponent fitted to the best
# iterations of the same PolyU crops at 64 and at 96 and 128 pixels (experiments/size_study.py,
# docs/REPRODUCTION.md section 6).
STOP_SIZE = 64
STOP_EXPONENT = 0.18
AUTO = "auto"
AUTO_STOP = Selector(name="fixed")  # fixed:auto
RUN_ENDED_NOTE = "the run ends before this iteration: last snapshot"
# test_BIQAN.py's default selector (denoise.py's default rule is its online twin): on the CC
# crops at 96 and 128 pixels it picks better than fixed:auto tuned on PolyU, whose best
# iteration grows more slowly with the size than CC's (docs/REPRODUCTION.md section 6).
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
    """Window and patience in iterations (None: `TUNED_WMV`) -> settings in snapshots of a run
    saved every `interval` iterations; ValueError as `snapshots_of`, or for a window under two
    snapshots."""
    settings = WmvSettings(
        window=TUNED_WMV.window
        if window is None
        else snapshots_of("--wmv_window", window, interval),
        patience=TUNED_WMV.patience
        if patience is None
        else snapshots_of("--patience", patience, interval),
    )
    if settings.window < 2 or settings.patience < 1:
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
    """Run ``selectors`` over the candidate snapshots of one image.

    ``iterations`` (candidates,): their iteration numbers; ``score()`` returns the predicted
    distributions (candidates, 10) (needed by biqan); ``rank()`` the ranker's scores
    (candidates,) (needed by ranker); ``load_snapshot(index)`` returns the candidate's HxWxC
    float array (needed by wmv and fixed:auto). A selector that cannot pick (a ValueError) is
    recorded in ``failures`` with its reason, and the others still run.
    """
    bins = np.arange(1, 11, dtype=np.float64)
    picks: dict[str, int] = {}
    notes: dict[str, str] = {}
    failures: dict[str, str] = {}
    distributions = wmv = None
    for selector in selectors:
        try:
            if selector.name == "biqan":
                distributions = biqan_distributions(score, len(iterations), len(bins))
                picks[selector.label] = select_argmax(distributions @ bins)
            elif selector.name == "ranker":
                if rank is None:
                    raise ValueError("the ranker selector needs a snapshot ranker")
                ranks = np.asarray(rank(), dtype=np.float64)
                if ranks.shape != (len(iterations),):
                    raise ValueError(f"expected {len(iterations)} ranker scores, got {ranks.shape}")
                picks[selector.label] = select_argmax(ranks)
            elif selector.name == "wmv":
                wmv = windowed_moving_variance(
                    load_snapshot, wmv_settings.window, wmv_settings.patience, count=len(iterations)
                )
                picks[selector.label] = wmv.pick_index
            elif selector.name == "last":
                picks[selector.label] = select_last(len(iterations))
            else:
                if selector.iteration is None:
                    stop = scaled_stop(*load_snapshot(0).shape[:2])
                    picks[selector.label] = select_at_or_after(iterations, stop)
                else:
                    stop = selector.iteration
                    picks[selector.label] = select_fixed(iterations, stop)
                if iterations[picks[selector.label]] < stop:
                    notes[selector.label] = RUN_ENDED_NOTE
        except ValueError as error:
            failures[selector.label] = str(error)
    return ImageSelection(
        picks=picks, distributions=distributions, wmv=wmv, notes=notes, failures=failures
    )


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
