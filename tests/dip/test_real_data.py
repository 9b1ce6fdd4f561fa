"""Checks on the real noisy/clean pairs of ../shared/data (skipped where the folder is absent)."""

from __future__ import annotations

import numpy as np
import pytest

import run_BDN
from utils import image_io, metrics
from utils.dip import planning

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("dataset, low, high", [("CC", 29.6, 37.0), ("PolyU", 31.1, 41.0)])
def test_real_pairs_pair_by_stem_with_published_noise_levels(shared_data, dataset, low, high):
    jobs = planning.plan_jobs(shared_data / dataset / "real", shared_data / dataset / "mean")
    assert jobs and all(job.clean is not None and job.clean.stem == job.stem for job in jobs)
    for job in jobs[:5]:
        image = planning.prepare(job, 32)
        assert image.noisy.pixels.shape == (512, 512, 3) and image.padded.shape == (512, 512, 3)
        assert (
            low - 0.05 <= metrics.psnr(image.noisy.pixels, image.clean.pixels) <= high + 0.05
        )  # ranges given to 0.1 dB


def test_short_run_on_a_real_crop(shared_data, tmp_path):
    job = planning.plan_jobs(shared_data / "CC" / "real", shared_data / "CC" / "mean")[0]
    for folder, path in (("real", job.noisy), ("mean", job.clean)):
        pixels = image_io.read_image(path).pixels[224:288, 224:288]
        image_io.write_png(tmp_path / folder / f"{job.stem}.png", pixels)
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(tmp_path / "real"),
            "--dataset_mean_path",
            str(tmp_path / "mean"),
            "--output_path",
            str(tmp_path / "out"),
            "--num_iter",
            "20",
            "--save_iter",
            "10",
            "--channels",
            "16",
            "--input_depth",
            "8",
            "--gpu_id",
            "cpu",
            "--quiet",
        ]
    )
    assert run_BDN.main(args) == 0
    rows = np.genfromtxt(tmp_path / "out" / job.stem / "metrics.csv", delimiter=",", names=True)
    assert np.all(np.isfinite(rows["psnr_avg"]))
