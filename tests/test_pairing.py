"""Pairing noisy images with references by name, including the original datasets' suffixes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import run_BDN
from tests.conftest import make_pair
from utils import pairing
from utils.dip import planning


def paths(*names: str) -> list[Path]:
    return [Path(name) for name in names]


def test_original_suffixes_pair():
    noisy = paths("5dmark3_iso3200_1_real.png", "b_noisy.png", "c_REAL.JPG", "d.png", "e.png")
    references = paths(
        "5dmark3_iso3200_1_mean.png", "b_clean.png", "c_mean.JPG", "d_gt.bmp", "e.png"
    )
    assert pairing.pair_references(noisy, references) == references


def test_exact_stem_wins_and_suffix_alone_is_not_stripped():
    noisy = paths("x_real.png", "_real.png")
    references = paths("x_real.png", "x_mean.png", "_mean.png")
    assert pairing.pair_references(noisy, references) == [Path("x_real.png"), None]


def test_noisy_suffix_does_not_pair_with_reference_of_noisy_suffix():
    assert pairing.pair_references(paths("x_real.png"), paths("x_noisy.png")) == [None]


def test_two_equally_good_references_are_an_error():
    with pytest.raises(ValueError, match="x_real.png: several references pair with it"):
        pairing.pair_references(paths("x_real.png"), paths("x_mean.png", "x_gt.png"))


def test_report_names_unpaired_files():
    noisy = paths("a_real.png", "b_real.png")
    references = paths("a_mean.png", "z_mean.png")
    report = pairing.unpaired_report(
        Path("mean"), noisy, references, pairing.pair_references(noisy, references)
    )
    assert report == (
        "mean: no reference for 1 noisy image(s), run blind: b_real.png; "
        "1 reference(s) pair with no noisy image: z_mean.png"
    )
    assert "\n" not in report


def test_report_is_none_when_all_pair_and_lists_are_shortened():
    assert (
        pairing.unpaired_report(Path("m"), paths("a.png"), paths("a.png"), paths("a.png")) is None
    )
    many = paths(*[f"n{index:02d}.png" for index in range(12)])
    assert pairing.name_list(many).endswith("n09.png, ... (12 in all)")


def test_plan_jobs_pairs_original_names_and_warns_about_the_rest(tmp_path, caplog):
    make_pair(tmp_path, "scene_real")
    make_pair(tmp_path, "lonely_real", with_clean=False)
    (tmp_path / "mean" / "scene_real.png").rename(tmp_path / "mean" / "scene_mean.png")
    with caplog.at_level(logging.WARNING):
        jobs = planning.plan_jobs(tmp_path / "real", tmp_path / "mean")
    assert [(job.stem, job.clean.name if job.clean else None) for job in jobs] == [
        ("lonely_real", None),
        ("scene_real", "scene_mean.png"),
    ]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "run blind: lonely_real.png" in warnings[0]


def test_reference_folder_pairing_nothing_stops_before_work(tmp_path, caplog):
    make_pair(tmp_path, "a")
    (tmp_path / "mean" / "a.png").rename(tmp_path / "mean" / "other.png")
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(tmp_path / "real"),
            "--dataset_mean_path",
            str(tmp_path / "mean"),
            "--output_path",
            str(tmp_path / "out"),
            "--gpu_id",
            "cpu",
        ]
    )
    with caplog.at_level(logging.ERROR):
        assert run_BDN.main(args) == 2
    assert "no reference pairs with any noisy image" in caplog.text
    assert not (tmp_path / "out").exists()
