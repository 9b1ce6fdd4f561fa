"""utils/selection.py: selector parsing and each selector on synthetic curves and snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from utils import selection


def scalar_snapshots(values: list[float]) -> list[np.ndarray]:
    """1x1x1 'images' holding one value each."""
    return [np.full((1, 1, 1), value) for value in values]


@pytest.mark.parametrize(
    "text, name, iteration",
    [
        ("biqan", "biqan", None),
        ("wmv", "wmv", None),
        ("last", "last", None),
        ("fixed:500", "fixed", 500),
        (" fixed:20 ", "fixed", 20),
    ],
)
def test_parse_selector(text, name, iteration):
    selector = selection.parse_selector(text)
    assert (selector.name, selector.iteration) == (name, iteration)
    assert selector.label == text.strip()


@pytest.mark.parametrize(
    "text, message",
    [
        ("best", "unknown selector"),
        ("fixed", "fixed:N"),
        ("fixed:abc", "fixed:N"),
        ("fixed:0", "at least 1"),
        ("last:3", "takes no argument"),
    ],
)
def test_parse_selector_errors(text, message):
    with pytest.raises(ValueError, match=message):
        selection.parse_selector(text)


def test_argmax_picks_the_peak_of_a_score_curve():
    iterations = np.arange(20, 2001, 20)
    scores = 6.0 - ((iterations - 700) / 500.0) ** 2
    assert iterations[selection.select_argmax(scores)] == 700
    assert selection.select_argmax(np.array([1.0, np.nan, 3.0, 3.0])) == 2
    with pytest.raises(ValueError, match="non-empty"):
        selection.select_argmax(np.array([]))
    with pytest.raises(ValueError, match="no finite"):
        selection.select_argmax(np.array([np.nan, np.nan]))


def test_last_and_fixed():
    iterations = np.array([180, 200, 220])
    assert selection.select_last(3) == 2
    assert selection.select_fixed(iterations, 200) == 1
    with pytest.raises(ValueError, match="from 180 to 220"):
        selection.select_fixed(iterations, 210)
    with pytest.raises(ValueError, match="from 180 to 220"):
        selection.select_fixed(iterations, 100)
    assert selection.select_fixed(iterations, 600) == 2  # the run ended before 600
    with pytest.raises(ValueError, match="no snapshots"):
        selection.select_last(0)


def test_wmv_hand_computed_case():
    # Window 2: the variance of values a, b is ((a - b) / 2)^2.
    # Windows end at 1..5: 0.25, 0.0625, 0.0025 (minimum, index 3), 0.25, 1.0.
    # Patience 2: no new minimum at indices 4 and 5, so the rule fires at 5 and picks 3.
    result = selection.windowed_moving_variance(
        scalar_snapshots([0, 1, 1.5, 1.6, 2.6, 4.6]), window=2, patience=2
    )
    np.testing.assert_allclose(result.variances, [np.nan, 0.25, 0.0625, 0.0025, 0.25, 1.0])
    assert (result.pick_index, result.fired, result.stop_index) == (3, True, 5)


def test_wmv_matches_a_direct_computation_on_images():
    rng = np.random.default_rng(0)
    base = rng.random((8, 8, 3))
    amplitudes = np.concatenate([np.linspace(0.3, 0.01, 12), np.linspace(0.02, 0.5, 12)])
    snapshots = [base + amplitude * rng.standard_normal(base.shape) for amplitude in amplitudes]
    result = selection.windowed_moving_variance(snapshots, window=4, patience=50)
    expected = [np.nan] * 3 + [
        np.mean(np.var(np.stack(snapshots[end - 3 : end + 1]), axis=0))
        for end in range(3, len(snapshots))
    ]
    np.testing.assert_allclose(result.variances, expected, rtol=1e-9)
    assert not result.fired and result.stop_index is None
    assert result.pick_index == int(np.nanargmin(expected))
    assert 10 <= result.pick_index <= 15


def test_wmv_that_never_fires_picks_the_minimum():
    values = np.cumsum(np.linspace(1.0, 0.1, 10))
    result = selection.windowed_moving_variance(
        scalar_snapshots(values.tolist()), window=3, patience=5
    )
    assert not result.fired and result.pick_index == 9


def test_wmv_loader_stops_loading_when_fired():
    values = [0, 1, 1.5, 1.6, 2.6, 4.6, 8.0, 9.0]
    loaded = []

    def load(index: int) -> np.ndarray:
        loaded.append(index)
        return np.full((1, 1, 1), values[index])

    result = selection.windowed_moving_variance(load, window=2, patience=2, count=len(values))
    assert result.pick_index == 3 and loaded == [0, 1, 2, 3, 4, 5]
    assert np.all(np.isnan(result.variances[6:]))


def test_wmv_errors():
    snapshots = scalar_snapshots([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="window must be at least 2"):
        selection.windowed_moving_variance(snapshots, window=1, patience=1)
    with pytest.raises(ValueError, match="patience"):
        selection.windowed_moving_variance(snapshots, window=2, patience=0)
    with pytest.raises(ValueError, match="at least 5 snapshots"):
        selection.windowed_moving_variance(snapshots, window=5, patience=1)
    with pytest.raises(ValueError, match="count is required"):
        selection.windowed_moving_variance(lambda index: snapshots[index], window=2, patience=1)
    with pytest.raises(ValueError, match="shape"):
        selection.windowed_moving_variance(
            [np.zeros((2, 2, 3)), np.zeros((2, 3, 3))], window=2, patience=1
        )


def sized_snapshots(values: list[float], side: int = selection.STOP_SIZE) -> list[np.ndarray]:
    """side x side x 1 images holding one value each (at 64 px `fixed:auto` stops at 600)."""
    return [np.full((side, side, 1), value) for value in values]


def test_apply_selectors_runs_each_selector():
    iterations = np.array([20, 40, 60, 80, 100, 120])
    distributions = np.eye(10)[[2, 3, 8, 5, 4, 3]]
    snapshots = sized_snapshots([0, 1, 1.5, 1.6, 2.6, 4.6])
    selectors = [selection.parse_selector(text) for text in ("biqan", "wmv", "last", "fixed:40")]
    chosen = selection.apply_selectors(
        selectors,
        iterations,
        lambda: distributions,
        snapshots.__getitem__,
        selection.WmvSettings(window=2, patience=2),
    )
    assert chosen.picks == {"biqan": 2, "wmv": 3, "last": 5, "fixed:40": 1}
    assert chosen.wmv.fired
    np.testing.assert_array_equal(chosen.distributions, distributions)
    without_model = selection.apply_selectors(
        selectors,
        iterations,
        None,
        snapshots.__getitem__,
        selection.WmvSettings(window=2, patience=2),
    )
    assert without_model.failures == {"biqan": "the biqan selector needs a trained BIQAN"}
    assert without_model.picks == {"wmv": 3, "last": 5, "fixed:40": 1}
    wrong_shape = selection.apply_selectors(
        selectors[:1],
        iterations,
        lambda: distributions[:3],
        snapshots.__getitem__,
        selection.WmvSettings(),
    )
    assert wrong_shape.picks == {} and "shape" in wrong_shape.failures["biqan"]


def test_a_selector_that_cannot_pick_leaves_the_others():
    selectors = [selection.parse_selector(text) for text in ("wmv", "last", "fixed:20")]
    chosen = selection.apply_selectors(
        selectors,
        np.array([20]),
        None,
        lambda index: np.zeros((4, 4, 3)),
        selection.WmvSettings(window=2, patience=2),
    )
    assert chosen.picks == {"last": 0, "fixed:20": 0}
    assert list(chosen.failures) == ["wmv"]
    assert "needs at least 2 snapshots" in chosen.failures["wmv"]


def test_wmv_from_iterations_converts_with_the_snapshot_interval():
    assert selection.wmv_from_iterations(100, 1000, 20) == selection.PUBLISHED_WMV
    assert selection.wmv_from_iterations(None, None, 10) == selection.DEFAULT_WMV
    assert selection.wmv_from_iterations(None, 30, 10) == selection.WmvSettings(2, 3)
    with pytest.raises(
        ValueError, match="--wmv_window 5: counts iterations now.* 5 snapshots = 100"
    ):
        selection.wmv_from_iterations(5, None, 20)
    with pytest.raises(ValueError, match="--patience 30: counts iterations"):
        selection.wmv_from_iterations(40, 30, 20)
    with pytest.raises(ValueError, match="at least 2 snapshots \\(40 iterations here\\)"):
        selection.wmv_from_iterations(20, 20, 20)


def test_test_biqan_default_wmv_is_denoise_default_in_iterations(tmp_path):
    import denoise
    import test_BIQAN
    from utils.dip import denoising

    args = test_BIQAN.parse_args(["--dataset_image_path", str(tmp_path), "--output_path", "out"])
    settings = test_BIQAN.wmv_in_snapshots(args, denoising.SAVE_ITER)
    defaults = denoise.build_parser().parse_args(["in.png", "-o", "out"])
    assert settings.window * denoising.SAVE_ITER == defaults.wmv_window
    assert settings.patience is None and defaults.patience is None  # both scaled to the image


def test_scaled_patience_grows_with_the_pixel_count():
    tuned = selection.TUNED_WMV.patience
    assert selection.scaled_patience(64, 64) == tuned
    assert selection.scaled_patience(32, 128, exponent=0.5) == tuned
    assert selection.scaled_patience(256, 256, exponent=0.5) == tuned * 4
    assert selection.scaled_patience(128, 128, exponent=0.25) == round(tuned * 2**0.5)
    assert selection.scaled_patience(8, 8, exponent=1.0) == 1  # at least one snapshot
    expected = round(tuned * 16**selection.PATIENCE_EXPONENT)
    assert selection.scaled_patience(256, 256) == max(1, expected)


def test_wmv_selector_scales_a_default_patience_to_the_snapshots_size(monkeypatch):
    """With the patience unset (auto), the offline wmv pick is the one of the patience scaled
    to the snapshots' size, which waits past a plateau that the 64x64 patience stops on."""
    monkeypatch.setattr(selection, "PATIENCE_EXPONENT", 0.5)
    variances = [4.0, 2.0, 1.0, 1.25, 1.5, 0.5, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]  # a plateau at 3
    snapshots = [np.zeros((256, 256, 1))]
    for variance in variances:  # two snapshots d apart have a window variance of d^2 / 4
        snapshots.append(snapshots[-1] + 2 * np.sqrt(variance))
    iterations = np.arange(1, len(snapshots) + 1) * 20
    wmv = [selection.DEFAULT_SELECTOR]

    def pick(settings: selection.WmvSettings) -> int:
        return selection.apply_selectors(
            wmv, iterations, None, snapshots.__getitem__, settings
        ).picks["wmv"]

    assert selection.scaled_patience(256, 256) == 8
    assert pick(selection.TUNED_WMV) == 3  # fires 2 snapshots after the plateau's minimum
    assert pick(selection.DEFAULT_WMV) == pick(selection.WmvSettings(window=2, patience=8)) == 7


def test_fixed_auto_scales_the_tuned_stop_with_the_pixel_count():
    tuned = selection.TUNED_FIXED.iteration
    assert selection.scaled_stop(64, 64) == pytest.approx(tuned)
    assert selection.scaled_stop(128, 128) == pytest.approx(tuned * 4**selection.STOP_EXPONENT)
    assert selection.scaled_stop(32, 128) == pytest.approx(tuned)
    with pytest.raises(ValueError, match="positive"):
        selection.scaled_stop(0, 64)
    auto = selection.parse_selector("fixed:auto")
    assert auto.iteration is None and auto.label == "fixed:auto"
    assert selection.parse_selector("fixed:500").label == "fixed:500"
    with pytest.raises(ValueError, match="fixed:auto"):
        selection.parse_selector("fixed:soon")


def test_fixed_auto_picks_the_first_snapshot_at_or_after_the_scaled_stop():
    iterations = np.arange(20, 2001, 20)
    expected = int(np.ceil(selection.scaled_stop(96, 96) / 20) * 20)
    chosen = selection.apply_selectors(
        [selection.parse_selector("fixed:auto")],
        iterations,
        None,
        lambda index: np.zeros((96, 96, 3)),
        selection.TUNED_WMV,
    )
    assert iterations[chosen.picks["fixed:auto"]] == expected
    assert selection.select_at_or_after(iterations[:5], 5000) == 4


def test_size_scaled_rules_read_the_image_size_once():
    """wmv with the scaled patience and fixed:auto both need the image's size: the first
    snapshot is loaded for it once, not once per rule."""
    iterations = np.arange(20, 401, 20)
    loads = []

    def load_snapshot(index: int) -> np.ndarray:
        loads.append(index)
        return np.full((96, 96, 3), float(index))

    selectors = [selection.DEFAULT_SELECTOR, selection.parse_selector("fixed:auto")]
    chosen = selection.apply_selectors(
        selectors, iterations, None, load_snapshot, selection.DEFAULT_WMV
    )
    assert set(chosen.picks) == {"wmv", "fixed:auto"}
    assert loads.count(0) == 2  # the size, then the wmv curve (fixed:auto reads no pixels)


def test_no_candidates_fail_every_selector_with_one_reason():
    selectors = [selection.parse_selector(text) for text in ("wmv", "fixed:auto", "last")]
    chosen = selection.apply_selectors(
        selectors, np.array([], dtype=int), None, lambda index: 1 / 0, selection.DEFAULT_WMV
    )
    assert chosen.picks == {}
    assert chosen.failures == dict.fromkeys(["wmv", "fixed:auto", "last"], selection.NO_SNAPSHOTS)


def test_wmv_fires_at_fixed_auto_s_stop_at_the_latest():
    """WMV looks at no snapshot after `fixed:auto`'s stop: with the variance still falling
    there, its pick is the stop's snapshot, where `fixed:auto` stops too."""
    iterations = np.arange(20, 1220, 20)  # 60 snapshots, past the 64 px stop (600)
    snapshots = sized_snapshots(list(np.sqrt(np.arange(60.0))), side=selection.STOP_SIZE)
    selectors = [selection.parse_selector(text) for text in ("wmv", "fixed:auto")]
    chosen = selection.apply_selectors(
        selectors, iterations, None, snapshots.__getitem__, selection.WmvSettings(2, 50)
    )
    assert iterations[chosen.picks["wmv"]] == iterations[chosen.picks["fixed:auto"]] == 600
    assert chosen.wmv.fired and np.isnan(chosen.wmv.variances[30:]).all()  # none loaded after
