"""experiments/before_after.py: noisy | denoised | clean figure of one image of a run."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

import run_BDN
from tests.conftest import ROOT, make_pair
from utils import image_io, metrics

SCRIPT = ROOT / "experiments" / "before_after.py"
TINY = ["--input_depth", "8", "--channels", "16", "--num_iter", "40", "--save_iter", "10"]


def load_script():
    spec = importlib.util.spec_from_file_location("before_after", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


before_after = load_script()


def run(folder: Path, *extra: str) -> tuple[Path, Path]:
    """(pairs folder, run folder) of a tiny run_BDN.py run on two pairs, a and b."""
    make_pair(folder, "a", seed=1)
    make_pair(folder, "b", seed=2)
    argv = [
        "--dataset_real_path",
        str(folder / "real"),
        "--dataset_mean_path",
        str(folder / "mean"),
    ]
    argv += ["--output_path", str(folder / "out"), *TINY, "--gpu_id", "cpu", "--quiet", *extra]
    assert run_BDN.main(run_BDN.parse_args(argv)) == 0
    return folder, folder / "out"


@pytest.fixture(scope="module")
def wmv_run(tmp_path_factory) -> tuple[Path, Path]:
    return run(
        tmp_path_factory.mktemp("wmv"),
        "--early_stop",
        "wmv",
        "--wmv_window",
        "20",
        "--patience",
        "10",
    )


def test_figure_shows_noisy_pick_and_clean_with_their_psnr(wmv_run, tmp_path):
    pairs, output = wmv_run
    paths, summary = before_after.sources(output, "a")
    assert paths == [
        pairs / "real" / "a.png",
        output / "a" / "denoised.png",
        pairs / "mean" / "a.png",
    ]
    titles = [title for _, title in before_after.panels(paths, summary)]
    noisy, denoised, clean = (image_io.read_image(path).pixels for path in paths)
    assert titles == [
        f"noisy input: {metrics.psnr(noisy, clean):.2f} dB",
        f"denoised (pick, iteration {summary['picked_iteration']}): "
        f"{metrics.psnr(denoised, clean):.2f} dB",
        "clean reference",
    ]
    figure = tmp_path / "figure.png"
    args = argparse.Namespace(run=output, image="a", output=figure)
    assert before_after.main(args) == 0
    assert image_io.read_image(figure).pixels.shape[1] > 3 * 64


def test_without_early_stop_the_last_snapshot_is_shown(tmp_path):
    _, output = run(tmp_path)
    paths, summary = before_after.sources(output, "b")
    assert paths[1] == output / "b" / "00040.png"
    assert "last snapshot, iteration 40" in before_after.panels(paths, summary)[1][1]


@pytest.mark.parametrize(
    "image, figure, message",
    [
        ("nope", "figure.png", "nope/summary.json: not found"),
        ("a", "figure.jpg", "figure.jpg: the figure is written as PNG"),
        ("a", "real/a.png", "real/a.png: is an image the figure reads"),
    ],
)
def test_bad_requests_are_one_line_errors(wmv_run, capsys, image, figure, message):
    pairs, output = wmv_run
    before = (pairs / "real" / "a.png").read_bytes()
    args = argparse.Namespace(run=output, image=image, output=pairs / figure)
    assert before_after.main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert (pairs / "real" / "a.png").read_bytes() == before
