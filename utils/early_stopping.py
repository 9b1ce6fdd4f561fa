"""Online early stopping: decide, snapshot by snapshot, when an image's fit is done.

A stopper sees each saved snapshot once, in order (`push`), on the snapshot writer's thread,
never in the fit loop. It says when its rule fires and which snapshot is the pick:

* `WmvStopper`: the windowed-moving-variance rule (Wang et al., "Early Stopping for Deep Image
  Prior"), the same computation as test_BIQAN's offline `wmv` selector
  (`selection.WmvTracker`), so the online pick equals the offline one on the same run.
* `BestScoreStopper` with a trained BIQAN's scores (`biqan_scorer`): the rule fires when the
  score has not improved for `patience` snapshots; the pick is the best-scored snapshot.
* `FixedStopper`: stops at the first snapshot at or after a given iteration and picks it
  (test_BIQAN's `fixed:N`); by default that iteration is the tuned stop scaled to the image's
  size (`selection.scaled_stop`, test_BIQAN's `fixed:auto`).
* The same with the snapshot ranker's scores (`ranker_scorer`, models/snapshot_ranker.py),
  whose features need the noisy input; the first `RANKER_SKIP` snapshots are never picked
  (test_BIQAN's default `--start_index`: the ranker is trained on the later ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from utils import selection

EARLY_STOP_RULES = ("none", "wmv", "fixed", "biqan", "ranker")
RANKER_SKIP = selection.START_INDEX


class Stopper(Protocol):
    """Sees snapshots in order; `fired` after its rule fires; `pick_iteration` is its choice so far."""

    fired: bool
    pick_iteration: int | None

    def push(self, iteration: int, snapshot: np.ndarray) -> None: ...


class WmvStopper:
    """Windowed moving variance over snapshots; window and patience counted in snapshots."""

    def __init__(self, window: int, patience: int) -> None:
        self.tracker = selection.WmvTracker(window, patience)
        self.iterations: list[int] = []
        self.fired = False
        self.pick_iteration: int | None = None

    def push(self, iteration: int, snapshot: np.ndarray) -> None:
        self.iterations.append(iteration)
        self.tracker.push(snapshot)
        if self.tracker.best_index >= 0:
            self.pick_iteration = self.iterations[self.tracker.best_index]
        self.fired = self.tracker.fired


class FixedStopper:
    """Fires at the first snapshot at or after `stop_iteration` and picks it; before that (and
    when the run ends first) the pick is the latest snapshot, as test_BIQAN's `fixed:N` and
    `fixed:auto` on the saved ones."""

    def __init__(self, stop_iteration: float) -> None:
        if stop_iteration < 1:
            raise ValueError(f"the stop iteration must be at least 1, got {stop_iteration}")
        self.stop_iteration = stop_iteration
        self.fired = False
        self.pick_iteration: int | None = None

    def push(self, iteration: int, snapshot: np.ndarray) -> None:
        if self.fired:
            return
        self.pick_iteration = iteration
        self.fired = iteration >= self.stop_iteration


class BestScoreStopper:
    """Best score so far among snapshots `skip` and later; fires after `patience` snapshots
    without a new best. `score` maps a (H, W, C) float snapshot in [0, 1] to a number (every
    snapshot is scored, also the skipped ones, so that stateful scorers see them all).
    """

    def __init__(self, score: Callable[[np.ndarray], float], patience: int, skip: int = 0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1 snapshot, got {patience}")
        self.score = score
        self.patience = patience
        self.skip = skip
        self.best_score = -np.inf
        self.waited = 0
        self.fired = False
        self.pick_iteration: int | None = None
        self.scores: list[float] = []

    def push(self, iteration: int, snapshot: np.ndarray) -> None:
        value = float(self.score(snapshot))
        self.scores.append(value)
        if len(self.scores) <= self.skip:
            return
        if value > self.best_score:
            self.best_score, self.pick_iteration, self.waited = value, iteration, 0
        else:
            self.waited += 1
            self.fired = self.waited >= self.patience


def replay(stopper: Stopper, inputs: Iterable[tuple[int, object]]) -> int | None:
    """Push (iteration, input) pairs into `stopper` in order until it fires; returns the
    iteration it fired at, or None. `inputs` may be lazy: nothing after the firing is read."""
    for iteration, value in inputs:
        stopper.push(iteration, value)
        if stopper.fired:
            return iteration
    return None


def ranker_scorer(ranker, noisy: np.ndarray) -> Callable[[np.ndarray], float]:
    """Snapshot -> the snapshot ranker's score, its features computed in snapshot order against
    `noisy`, the image's noisy input (H, W[, C]) in [0, 1]. One scorer per image."""
    from utils.snapshot_features import FeatureTracker

    features = FeatureTracker(noisy)
    return lambda snapshot: float(ranker.score(features.push(snapshot)[None])[0])


@dataclasses.dataclass(frozen=True)
class EarlyStopSettings:
    """Which rule and its parameters: window and patience in snapshots (run_BDN's flags are in
    iterations), the fixed rule's stop in iterations (None: scaled to each image's size)."""

    rule: str = "none"
    window: int = 5
    patience: int = 50
    model_path: Path | None = None
    stop_iteration: int | None = None

    def __post_init__(self) -> None:
        if self.rule not in EARLY_STOP_RULES:
            raise ValueError(
                f"early stopping rule must be one of {', '.join(EARLY_STOP_RULES)}, got {self.rule!r}"
            )
        if self.rule == "biqan" and self.model_path is None:
            raise ValueError(
                "early stopping with biqan needs a trained BIQAN (--pre_trained_model)"
            )


def from_iterations(
    rule: str,
    window: int,
    patience: int,
    save_iter: int,
    model_path: Path | None,
    stop_iteration: int | None = None,
) -> EarlyStopSettings:
    """Command-line values (window, patience and stop in iterations; a stop of None is scaled
    to each image's size) -> settings.

    ValueError when they are not multiples of `save_iter` (window at least 2 snapshots, the stop
    at least one) or when biqan has no existing checkpoint.
    """
    if window % save_iter or patience % save_iter or window < 2 * save_iter or patience < save_iter:
        raise ValueError(
            "--wmv_window (at least 2 snapshots) and --patience must be multiples of --save_iter"
        )
    if (
        rule == "fixed"
        and stop_iteration is not None
        and (stop_iteration % save_iter or stop_iteration < save_iter)
    ):
        raise ValueError(
            f"--stop_iteration {stop_iteration}: must be a positive multiple of --save_iter "
            f"({save_iter}), the snapshot it picks"
        )
    if rule == "ranker":
        from models.snapshot_ranker import DEFAULT_RANKER, missing_ranker

        ranker = Path(model_path or DEFAULT_RANKER)
        if not ranker.exists():
            raise ValueError(
                f"--early_stop ranker: {missing_ranker(ranker)}, or give one with "
                "--pre_trained_model"
            )
    if rule == "biqan" and (model_path is None or not Path(model_path).exists()):
        raise ValueError(
            "--early_stop biqan needs --pre_trained_model, an existing BIQAN checkpoint file or folder"
        )
    return EarlyStopSettings(
        rule,
        window // save_iter,
        patience // save_iter,
        model_path if rule in ("biqan", "ranker") else None,
        stop_iteration,
    )


def biqan_scorer(model_path: Path, crops_per_side: int = 3) -> Callable[[np.ndarray], float]:
    """Load a trained BIQAN once; return snapshot (H, W, C) float [0, 1] -> predicted mean quality.

    The views and preprocessing are test_BIQAN's (`biqan_data.evaluation_views`, averaged
    distributions), so online scores equal offline ones.
    """
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    from models import biqan
    from utils.biqan import data as biqan_data

    model, config, _ = biqan.load_biqan(model_path)

    def score(snapshot: np.ndarray) -> float:
        pixels = np.repeat(snapshot[..., None], 3, axis=2) if snapshot.ndim == 2 else snapshot
        views = biqan_data.evaluation_views(
            pixels, config.input_mode, config.image_size, crops_per_side
        )
        distributions = biqan.predict_distributions(model, biqan.preprocess_pixels(views)).mean(
            axis=0
        )
        return float(distributions @ np.arange(1, 11))

    return score


def make_stoppers(settings: EarlyStopSettings, noisy: list[np.ndarray]) -> list[Stopper] | None:
    """One stopper per image of a fit group (`noisy`: their inputs, (H, W[, C]) in [0, 1]), or
    None without early stopping."""
    if settings.rule == "none":
        return None
    if settings.rule == "wmv":
        return [WmvStopper(settings.window, settings.patience) for _ in noisy]
    if settings.rule == "fixed":
        return [
            FixedStopper(
                settings.stop_iteration
                if settings.stop_iteration is not None
                else selection.scaled_stop(*image.shape[:2])
            )
            for image in noisy
        ]
    if settings.rule == "ranker":
        from models import snapshot_ranker

        ranker = snapshot_ranker.load_ranker(settings.model_path or snapshot_ranker.DEFAULT_RANKER)
        return [
            BestScoreStopper(ranker_scorer(ranker, image), settings.patience, RANKER_SKIP)
            for image in noisy
        ]
    score = biqan_scorer(settings.model_path)
    return [BestScoreStopper(score, settings.patience, selection.START_INDEX) for _ in noisy]
