"""Online early stopping: the rules of `utils.method.RULES`, fed snapshot by snapshot.

A rule sees each saved snapshot once, in order (`push`), on the snapshot writer's thread, never
in the fit loop, and says when it fires and which snapshot is the pick. This module turns the
flags into `EarlyStopSettings` and builds one rule per image (`make_stoppers`); the rules that
rank a model's scores get them from the adapters here, which load their model lazily:

* biqan: a trained BIQAN's predicted quality (`biqan_scorer`), the views test_BIQAN scores;
* ranker: the snapshot ranker's score (`ranker_scorer`, models/snapshot_ranker.py), whose
  features need the noisy input.

Both never pick the first `selection.START_INDEX` snapshots (test_BIQAN's default
`--start_index`: the ranker is trained on the later ones). The fixed rule's stop, where the wmv
rule fires at the latest too, defaults to the tuned stop scaled to the image's size
(`selection.scaled_stop`, test_BIQAN's `fixed:auto`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils import method, selection

if TYPE_CHECKING:
    from models.snapshot_ranker import SnapshotRanker

RANKER_SKIP = selection.START_INDEX
Scorer = Callable[[np.ndarray], float]


def ranker_scorer(ranker: SnapshotRanker, noisy: np.ndarray) -> Callable[[np.ndarray], float]:
    """Snapshot -> the snapshot ranker's score, its features computed in snapshot order against
    `noisy`, the image's noisy input (H, W[, C]) in [0, 1]. One scorer per image."""
    from utils.snapshot_features import FeatureTracker

    features = FeatureTracker(noisy)
    return lambda snapshot: float(ranker.score(features.push(snapshot)[None])[0])


def early_stop_choices() -> tuple[str, ...]:
    """--early_stop's choices: none, then every rule offered online (at call time, so that a
    rule registered later is offered too)."""
    return ("none", *method.rule_names("online"))


@dataclasses.dataclass(frozen=True)
class EarlyStopSettings:
    """Which rule and its parameters: window and patience in snapshots (run_BDN's flags are in
    iterations; a patience of None is scaled to each image's size), the fixed rule's stop (the
    wmv rule's latest) in iterations (None: scaled to each image's size)."""

    rule: str = "none"
    window: int = 5
    patience: int | None = 50
    model_path: Path | None = None
    stop_iteration: int | None = None

    def __post_init__(self) -> None:
        rules = early_stop_choices()
        if self.rule not in rules:
            raise ValueError(
                f"early stopping rule must be one of {', '.join(rules)}, got {self.rule!r}"
            )
        if self.rule == "biqan" and self.model_path is None:
            raise ValueError(
                "early stopping with biqan needs a trained BIQAN (--pre_trained_model)"
            )


def from_iterations(
    rule: str,
    window: int,
    patience: int | None,
    save_iter: int,
    model_path: Path | None,
    stop_iteration: int | None = None,
) -> EarlyStopSettings:
    """Command-line values (window, patience and stop in iterations; a patience or stop of None
    is scaled to each image's size) -> settings.

    ValueError when they are not multiples of `save_iter` (window at least 2 snapshots, the
    patience and the stop at least one) or when biqan has no existing checkpoint.
    """
    patience_wrong = patience is not None and (patience % save_iter or patience < save_iter)
    if window % save_iter or window < 2 * save_iter or patience_wrong:
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
        None if patience is None else patience // save_iter,
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
        """Predicted mean quality in [1, 10] of one snapshot (H, W[, C]) in [0, 1]."""
        pixels = np.repeat(snapshot[..., None], 3, axis=2) if snapshot.ndim == 2 else snapshot
        views = biqan_data.evaluation_views(
            pixels, config.input_mode, config.image_size, crops_per_side
        )
        distributions = biqan.predict_distributions(model, biqan.preprocess_pixels(views)).mean(
            axis=0
        )
        return float(distributions @ np.arange(1, 11))

    return score


def model_scorers(settings: EarlyStopSettings, noisy: list[np.ndarray]) -> list[Scorer]:
    """One score function per image for the rules that rank a model's scores (biqan: one
    BIQAN for all images; ranker: features against each image's noisy input)."""
    if settings.rule == "ranker":
        from models import snapshot_ranker

        ranker = snapshot_ranker.load_ranker(settings.model_path or snapshot_ranker.DEFAULT_RANKER)
        return [ranker_scorer(ranker, image) for image in noisy]
    if settings.rule == "biqan":
        return [biqan_scorer(settings.model_path)] * len(noisy)
    raise ValueError(f"no model scores the snapshots of the {settings.rule!r} rule")


def latest_stop(settings: EarlyStopSettings, size: tuple[int, int]) -> float:
    """The fixed rule's stop (wmv's latest) for an image of `size` (height, width), an
    iteration: --stop_iteration, or auto's, scaled to the size (`selection.scaled_stop`)."""
    if settings.stop_iteration is not None:
        return settings.stop_iteration
    return selection.scaled_stop(*size)


def make_stoppers(
    settings: EarlyStopSettings, noisy: list[np.ndarray]
) -> list[method.StoppingRule] | None:
    """One rule per image of a fit group (`noisy`: their inputs, (H, W[, C]) in [0, 1]), or
    None without early stopping."""
    if settings.rule == "none":
        return None
    rule = method.RULES[settings.rule]
    scorers = model_scorers(settings, noisy) if rule.scored else [None] * len(noisy)
    return [
        rule(
            method.RuleOptions(
                window=settings.window,
                patience=settings.patience
                if settings.patience is not None
                else selection.scaled_patience(*image.shape[:2]),
                stop_iteration=latest_stop(settings, image.shape[:2]),
                score=score,
                skip=selection.START_INDEX if rule.scored else 0,
            )
        )
        for image, score in zip(noisy, scorers)
    ]
