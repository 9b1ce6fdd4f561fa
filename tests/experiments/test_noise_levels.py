"""experiments/noise_levels.py: crops ordered by their no-reference noise level, the noisiest
copied out as a set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from experiments import noise_levels

SIGMAS = {"calm": 2.0, "loud": 20.0, "middle": 8.0}  # noise sigma, 8-bit units


def write_set(folder: Path) -> None:
    """A grey ramp with Gaussian noise of each SIGMAS sigma (real) and without (mean)."""
    clean = np.tile(np.linspace(60, 190, 48), (48, 1))[..., None].repeat(3, axis=2)
    for index, (stem, sigma) in enumerate(SIGMAS.items()):
        noisy = clean + np.random.default_rng(index).normal(0.0, sigma, clean.shape)
        for side, pixels in (("real", noisy), ("mean", clean)):
            (folder / side).mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
            image.save(folder / side / f"{stem}.png")


def test_levels_follow_the_noise_and_the_noisiest_are_copied(tmp_path):
    write_set(tmp_path / "set")
    levels = noise_levels.noise_levels(tmp_path / "set")
    assert [stem for _, stem in levels] == ["loud", "middle", "calm"]
    loud, middle = levels[0][0], levels[1][0]
    assert abs((loud - middle) - 20 * np.log10(20.0 / 8.0)) < 1.5  # dB follow sigma
    (tmp_path / "other" / "real").mkdir(parents=True)
    (tmp_path / "other" / "real" / "loud.png").write_bytes(b"")
    argv = ["--noisiest", "1", "--exclude", str(tmp_path / "other"), "--copy_to"]
    args = noise_levels.parse_args([str(tmp_path / "set"), *argv, str(tmp_path / "noisy")])
    assert noise_levels.main(args) == 0
    for side in ("real", "mean"):
        assert [path.name for path in (tmp_path / "noisy" / side).iterdir()] == ["middle.png"]


def test_a_folder_without_noisy_images_is_a_one_line_error(tmp_path, capsys):
    assert noise_levels.main(noise_levels.parse_args([str(tmp_path / "absent")])) == 1
    assert capsys.readouterr().err.strip().endswith("absent: no real/ folder of noisy images")
