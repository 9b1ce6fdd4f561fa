"""utils/biqan/evaluation.py: SRCC/PLCC against hand-computed values, gaps per selector."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from utils.biqan import evaluation as biqan_eval


def test_ranks_with_ties():
    np.testing.assert_array_equal(
        biqan_eval.average_ranks(np.array([10, 30, 20, 30])), [1, 3.5, 2, 3.5]
    )


def test_correlations_hand_computed():
    first = np.array([1.0, 2.0, 3.0, 4.0])
    assert biqan_eval.pearson(first, 2 * first + 1) == pytest.approx(1.0)
    assert biqan_eval.spearman(first, first**3) == pytest.approx(1.0)
    assert biqan_eval.spearman(first, -np.exp(first)) == pytest.approx(-1.0)
    # x = 1,2,3 and y = 1,3,2: centred (-1,0,1) and (-1,1,0): covariance 1, norms sqrt(2).
    assert biqan_eval.pearson(np.array([1.0, 2, 3]), np.array([1.0, 3, 2])) == pytest.approx(0.5)
    assert math.isnan(biqan_eval.pearson(first, np.ones(4)))
    with pytest.raises(ValueError, match="1-D"):
        biqan_eval.pearson(first, first[:3])


def test_correlation_report_per_image():
    images = ["a", "a", "a", "b", "b", "b"]
    predicted = np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0])
    true_psnr = np.array([30.0, 31.0, 32.0, 30.0, 31.0, 32.0])
    report = biqan_eval.correlation_report(images, predicted, true_psnr)
    assert report.per_image["a"] == pytest.approx((1.0, 1.0))
    assert report.per_image["b"] == pytest.approx((-1.0, -1.0))
    assert report.mean_within_image == pytest.approx((0.0, 0.0))
    assert report.srcc == pytest.approx(0.0)


def test_mean_gap_and_table(tmp_path: Path):
    rows = [
        {"selector": "biqan", "loss_db": 0.2},
        {"selector": "biqan", "loss_db": 0.4},
        {"selector": "wmv", "loss_db": 1.0},
        {"selector": "wmv", "loss_db": float("nan")},
    ]
    assert biqan_eval.mean_gap_by_selector(rows) == pytest.approx({"biqan": 0.3, "wmv": 1.0})
    biqan_eval.write_table(tmp_path / "t.csv", [{"a": 1}, {"a": 2, "b": 3}])
    with open(tmp_path / "t.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["a", "b"], ["1", ""], ["2", "3"]]


def test_an_exactly_constant_array_is_nan_even_when_its_mean_rounds():
    """Seven copies of 6.44 have a float mean that is not 6.44 (std about 1e-15): still constant."""
    constant = np.full(7, 6.44)
    assert np.std(constant) > 0
    assert np.isnan(biqan_eval.pearson(constant, np.arange(7.0)))
    assert np.isnan(biqan_eval.spearman(constant, np.arange(7.0)))
