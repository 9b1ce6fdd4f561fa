"""utils/biqan/labels.py: PSNR -> exact 10-bin distribution, vote counts, AVA rows round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from utils.biqan import labels


def test_psnr_mapping_end_points_and_inverse():
    assert labels.psnr_to_mean_score(8.0) == pytest.approx(2.5)
    assert labels.psnr_to_mean_score(45.0) == pytest.approx(7.5)
    assert labels.psnr_to_mean_score(26.5) == pytest.approx(5.0)
    assert labels.psnr_to_mean_score(30.0, min_psnr=20.0, max_psnr=40.0) == pytest.approx(5.0)
    psnr = np.array([8.0, 21.3, 37.83, 50.0])
    np.testing.assert_allclose(labels.mean_score_to_psnr(labels.psnr_to_mean_score(psnr)), psnr)
    with pytest.raises(ValueError, match="max_psnr"):
        labels.psnr_to_mean_score(30.0, min_psnr=45.0, max_psnr=8.0)


def test_distribution_is_exact_gaussian_bin_mass():
    distribution = labels.score_distribution(5.5)
    assert distribution.shape == (10,)
    assert distribution.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(distribution, distribution[::-1], atol=1e-15)
    # Bin 5 holds the N(5.5, 1) mass of [4.5, 5.5) = Phi(0) - Phi(-1), renormalised by the
    # mass of [0.5, 10.5) = Phi(5) - Phi(-5).
    phi = lambda value: 0.5 * (1 + math.erf(value / math.sqrt(2)))  # noqa: E731
    expected = (phi(0) - phi(-1)) / (phi(5) - phi(-5))
    assert distribution[4] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.341345, abs=1e-6)
    assert labels.distribution_mean(distribution) == pytest.approx(5.5, abs=1e-12)


@pytest.mark.parametrize("psnr", [8.0, 20.0, 33.4, 45.0])
def test_distribution_matches_the_original_sampling(psnr):
    """The exact masses equal what the original's 10,000 random draws estimate."""
    mean_score = labels.psnr_to_mean_score(psnr)
    draws = np.rint(np.random.default_rng(0).normal(mean_score, 1.0, 400_000))
    draws = draws[(draws >= 1) & (draws <= 10)]
    sampled = np.bincount(draws.astype(int), minlength=11)[1:] / len(draws)
    exact = labels.score_distribution(mean_score)
    np.testing.assert_allclose(exact, sampled, atol=3e-3)
    assert abs(int(np.argmax(exact)) + 1 - mean_score) <= 0.5
    np.testing.assert_array_equal(exact, labels.score_distribution(mean_score))


def test_distribution_rejects_bad_input():
    with pytest.raises(ValueError, match="std"):
        labels.score_distribution(5.0, std=0.0)
    with pytest.raises(ValueError, match="finite"):
        labels.score_distribution(float("nan"))


def test_votes_sum_exactly_and_round_trip():
    distribution = labels.score_distribution(labels.psnr_to_mean_score(37.83))
    counts = labels.distribution_to_votes(distribution, 10000)
    assert counts.sum() == 10000 and counts.dtype == np.int64
    assert np.all(np.abs(counts - distribution * 10000) < 1)
    np.testing.assert_allclose(labels.votes_to_distribution(counts), distribution, atol=1e-4)
    assert labels.distribution_to_votes(distribution, 7).sum() == 7
    with pytest.raises(ValueError, match="shape"):
        labels.distribution_to_votes(np.ones(9) / 9, 100)


def test_mean_and_std_of_distributions():
    one_hot = np.eye(10)[[0, 6]]
    np.testing.assert_allclose(labels.distribution_mean(one_hot), [1.0, 7.0])
    np.testing.assert_allclose(labels.distribution_std(one_hot), [0.0, 0.0])
    uniform = np.full(10, 0.1)
    assert labels.distribution_mean(uniform) == pytest.approx(5.5)
    assert labels.distribution_std(uniform) == pytest.approx(math.sqrt(8.25))


def make_rows() -> list[labels.AvaRow]:
    rows = []
    for index, (image_id, psnr) in enumerate(
        [("img1/00180.png", 30.1), ("img2/00200.png", 36.4)], 1
    ):
        distribution = labels.score_distribution(labels.psnr_to_mean_score(psnr))
        rows.append(
            labels.AvaRow(
                index=index,
                image_id=image_id,
                votes=tuple(labels.distribution_to_votes(distribution, 10000).tolist()),
            )
        )
    return rows


def test_ava_file_round_trip(tmp_path: Path):
    rows = make_rows()
    path = tmp_path / "labels.txt"
    labels.write_ava_file(path, rows)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    fields = lines[0].split(" ")
    assert len(fields) == 15 and fields[0] == "1" and fields[1] == "img1/00180.png"
    assert fields[12:] == ["0", "0", "0"]
    assert labels.read_ava_file(path) == rows
    image_ids, distributions = labels.read_labels(path)
    assert image_ids == ["img1/00180.png", "img2/00200.png"]
    np.testing.assert_allclose(
        labels.distribution_mean(distributions),
        labels.psnr_to_mean_score(np.array([30.1, 36.4])),
        atol=1e-3,
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ("1 img1/00180.png 1 2 3", "expected 15"),
        ("1 img1/00180.png 1 2 3 4 5 6 7 8 9 x 0 0 0", "integers"),
        ("1 img1/00180.png 1 2 3 4 5 6 7 8 9 -1 0 0 0", "non-negative"),
        ("1 img1/00180.png 0 0 0 0 0 0 0 0 0 0 0 0 0", "positive sum"),
    ],
)
def test_broken_row_names_file_and_line(tmp_path: Path, line, message):
    path = tmp_path / "labels.txt"
    good = labels.format_ava_row(make_rows()[0])
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(ValueError, match=message) as error:
        labels.read_ava_file(path)
    assert f"{path}:2" in str(error.value)


def test_missing_and_empty_label_files(tmp_path: Path):
    with pytest.raises(ValueError, match="not found"):
        labels.read_ava_file(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        labels.read_ava_file(tmp_path / "empty.txt")


def test_image_id_with_space_is_rejected():
    row = labels.AvaRow(index=1, image_id="my image/00020.png", votes=(1,) * 10)
    with pytest.raises(ValueError, match="whitespace"):
        labels.format_ava_row(row)
