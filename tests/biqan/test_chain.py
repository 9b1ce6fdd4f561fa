"""End to end: run_BDN -> generator_dataset -> train_BIQAN -> test_BIQAN, on both Keras backends.

A real run_BDN run (three 64x64 images: colour and grayscale with references, one blind;
40 iterations, a snapshot every 4; a small DIP network to keep it fast) feeds the three BIQAN
scripts, each run as a command in a subprocess with KERAS_BACKEND set, since the backend is
fixed when Keras is imported. Bad inputs are checked
in-process through each script's main().
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import generator_dataset  # noqa: E402
import run_BDN  # noqa: E402
import test_BIQAN  # noqa: E402
import train_BIQAN  # noqa: E402
from tests.biqan.helpers import write_fake_image_folder  # noqa: E402
from tests.conftest import ROOT as REPOSITORY
from utils import image_io, run_output  # noqa: E402
from utils.biqan import labels  # noqa: E402
from utils.biqan import report as biqan_report

START = 2
SNAPSHOTS = 10
REFERENCED = ("a", "b")
IMAGES = ("a", "b", "c")
SELECTORS = ("biqan", "wmv", "last", "fixed:20")


def noisy_pair(seed: int, grayscale: bool) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 64x64 clean image and a noisy copy, floats in [0, 1]."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:64, 0:64] / 64.0
    channels = 1 if grayscale else 3
    clean = np.stack(
        [
            0.5
            + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * columns + rng.uniform(0.5, 2) * rows))
            for _ in range(channels)
        ],
        axis=-1,
    )
    clean = clean[..., 0] if grayscale else clean
    return clean, np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A real run_BDN output: a (colour) and b (grayscale) with references, c blind."""
    root = tmp_path_factory.mktemp("chain")
    for seed, (stem, grayscale) in enumerate((("a", False), ("b", True), ("c", False))):
        clean, noisy = noisy_pair(seed, grayscale)
        image_io.write_png(root / "real" / f"{stem}.png", noisy)
        if stem in REFERENCED:
            image_io.write_png(root / "mean" / f"{stem}.png", clean)
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(root / "real"),
            "--dataset_mean_path",
            str(root / "mean"),
            "--output_path",
            str(root / "run"),
            "--num_iter",
            str(4 * SNAPSHOTS),
            "--save_iter",
            "4",
            "--channels",
            "16",
            "--num_scales",
            "3",
            "--input_depth",
            "8",
            "--gpu_id",
            "cpu",
            "--quiet",
        ]
    )
    # One thread: tiny convolutions gain nothing from more, and a busy shared CPU makes
    # spinning OpenMP threads many times slower. The pytest process's setting is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_BDN.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def run_script(script: str, arguments: list[str], backend: str) -> subprocess.CompletedProcess:
    """Run a top-level script under a Keras backend; fail with its output when it fails."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, script, *arguments],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, f"{script} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


BACKENDS = [
    "torch",
    pytest.param(
        "tensorflow",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("tensorflow") is None,
            reason="tensorflow is not installed (pip install -r requirements-tf.txt)",
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_four_steps_chain(run_folder: Path, tmp_path: Path, backend: str):
    label_file = tmp_path / "labels.txt"
    generated = run_script(
        "generator_dataset.py",
        [
            "--dataset_path",
            str(run_folder),
            "--output_path",
            str(label_file),
            "--start_position",
            str(START),
        ],
        backend,
    )
    assert "skipped c: no clean reference" in generated.stdout
    image_ids, distributions = labels.read_labels(label_file)
    expected_ids = [
        f"{stem}/{iteration:05d}.png"
        for stem in REFERENCED
        for iteration in range(4 * START + 4, 4 * SNAPSHOTS + 1, 4)
    ]
    assert image_ids == expected_ids
    table = read_csv(tmp_path / "labels_psnr.csv")
    assert [row["image_id"] for row in table] == expected_ids
    true_psnr = np.concatenate(
        [run_output.read_metrics(run_folder / stem).true_psnr[START:] for stem in REFERENCED]
    )
    np.testing.assert_allclose([float(row["psnr"]) for row in table], true_psnr, atol=1e-4)
    expected = [labels.score_distribution(labels.psnr_to_mean_score(psnr)) for psnr in true_psnr]
    np.testing.assert_allclose(distributions, expected, atol=1e-4)

    checkpoints, results = tmp_path / "checkpoint", tmp_path / "train"
    trained = run_script(
        "train_BIQAN.py",
        [
            "--dataset_image_path",
            str(run_folder),
            "--dataset_file_path",
            str(label_file),
            "--output_checkpoint",
            str(checkpoints),
            "--output_path",
            str(results),
            "--classification_model",
            "mobilenet",
            "--alpha",
            "0.25",
            "--image_size",
            "64",
            "--weights",
            "none",
            "--epochs",
            "1",
            "--batchsize",
            "8",
            "--validation_fraction",
            "0.5",
            "--workers",
            "2",
        ],
        backend,
    )
    assert "validation SRCC" in trained.stdout
    weights = sorted(path.name for path in checkpoints.glob("*.weights.h5"))
    assert weights and all(
        re.fullmatch(r"weights\.\d{3}-\d+\.\d{3}\.weights\.h5", name) for name in weights
    )
    assert (checkpoints / "biqan.json").is_file()
    for name in ("first_stage.png", "second_stage.png"):
        assert (results / name).stat().st_size > 0
    history = read_csv(results / "history.csv")
    assert [(row["stage"], row["epoch"]) for row in history] == [("1", "1"), ("2", "2")]
    assert all(np.isfinite(float(row["val_loss"])) for row in history)
    correlations = read_csv(results / "validation_correlation.csv")
    assert correlations[0]["image"] == "all snapshots"
    assert correlations[-1]["image"] == "mean within image"
    validation_scores = read_csv(results / "validation_scores.csv")
    assert validation_scores and {row["image_id"].split("/")[0] for row in validation_scores} < set(
        REFERENCED
    )

    output = tmp_path / "test"
    tested = run_script(
        "test_BIQAN.py",
        [
            "--dataset_image_path",
            str(run_folder),
            "--pre_trained_model",
            str(checkpoints),
            "--output_path",
            str(output),
            "--start_index",
            str(START),
            "--selector",
            *SELECTORS,
            "--wmv_window",
            "8",
            "--patience",
            "12",
            "--workers",
            "2",
        ],
        backend,
    )
    assert "Mean gap to the true best" in tested.stdout
    rows = read_csv(output / "selection.csv")
    assert [(row["image"], row["selector"]) for row in rows] == [
        (stem, selector) for stem in IMAGES for selector in SELECTORS
    ]
    for row in rows:
        metrics = run_output.read_metrics(run_folder / row["image"])
        candidates = metrics.iteration[START:]
        picked = int(row["picked_iteration"])
        assert picked in candidates
        file_name = biqan_report.pick_file_name(row["image"], row["selector"])
        assert (output / file_name).read_bytes() == run_output.snapshot_path(
            metrics.folder, picked
        ).read_bytes()
        if row["selector"] == "last":
            assert picked == candidates[-1]
        if row["selector"] == "fixed:20":
            assert picked == 20
        if row["selector"] == "biqan":
            # the pick is the best of the scores written beside it (ties: 4 decimals)
            scores = {
                int(line["iteration"]): float(line["predicted_mean"])
                for line in read_csv(output / f"{row['image']}_scores.csv")
            }
            assert list(scores) == list(candidates)
            assert scores[picked] == max(scores.values())
        if row["image"] not in REFERENCED:
            assert row["picked_psnr"] == row["best_psnr"] == row["loss_db"] == ""
            continue
        psnr = metrics.true_psnr[START:]
        assert float(row["best_psnr"]) == pytest.approx(psnr.max(), abs=1e-3)
        assert int(row["best_iteration"]) == candidates[int(np.argmax(psnr))]
        assert float(row["picked_psnr"]) == pytest.approx(psnr[candidates == picked][0], abs=1e-3)
        assert float(row["loss_db"]) == pytest.approx(
            float(row["best_psnr"]) - float(row["picked_psnr"]), abs=2e-4
        )
    for stem in IMAGES:
        for suffix in ("_BIQAN.png", "_scores.png", "_wmv_variance.png"):
            assert (output / f"{stem}{suffix}").stat().st_size > 0
        scores = read_csv(output / f"{stem}_scores.csv")
        assert len(scores) == SNAPSHOTS - START
        assert (output / f"{stem}_Compare.png").exists() == (stem in REFERENCED)
    report = (output / "Denoised_PSNR.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in report[:3]] == list(IMAGES)
    assert "no reference" in report[2]
    assert report[-2].startswith("Mean picked PSNR (gain over the noisy input): biqan ")
    assert report[-1].startswith("Mean gap to the true best: biqan ")
    assert all(selector in report[-1] for selector in SELECTORS)


def test_generator_reports_bad_run_folders(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        generator_dataset.main(
            generator_dataset.parse_args(
                ["--dataset_path", str(empty), "--output_path", str(tmp_path / "l.txt")]
            )
        )
        == 2
    )
    assert "no finished run_BDN image folders" in capsys.readouterr().err
    write_fake_image_folder(tmp_path / "run", "a", [20, 40], [30.0, 31.0], size=8)
    (tmp_path / "run" / "b").mkdir()
    broken = write_fake_image_folder(tmp_path / "run", "c", [20, 40], [30.0, 31.0], size=8)
    (broken / "metrics.csv").write_text("iteration,loss\n20,0.1\n")
    assert (
        generator_dataset.main(
            generator_dataset.parse_args(
                [
                    "--dataset_path",
                    str(tmp_path / "run"),
                    "--output_path",
                    str(tmp_path / "l.txt"),
                    "--start_position",
                    "0",
                ]
            )
        )
        == 2
    )
    captured = capsys.readouterr()
    assert "b: no metrics.csv: not a run_BDN image folder" in captured.out
    assert f"error: {broken / 'metrics.csv'}: header must be" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "script, argv, message",
    [
        (test_BIQAN, ["--selector", "best"], "unknown selector"),
        (test_BIQAN, ["--selector", "biqan"], "needs --pre_trained_model"),
        (test_BIQAN, ["--selector", "wmv", "--wmv_window", "1"], "--wmv_window"),
        (train_BIQAN, ["--classification_model", "vgg"], "invalid choice"),
        (train_BIQAN, ["--weights", "nowhere.h5"], "not 'imagenet', 'none' or an existing file"),
        (train_BIQAN, ["--gpu_id", "first"], "--gpu_id"),
        (generator_dataset, ["--max_psnr", "5"], "--max_psnr must be greater"),
    ],
)
def test_invalid_flags_are_argparse_errors(tmp_path: Path, capsys, script, argv, message):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("")
    common = {
        test_BIQAN: ["--dataset_image_path", str(tmp_path), "--output_path", str(tmp_path)],
        train_BIQAN: [
            "--dataset_image_path",
            str(tmp_path),
            "--dataset_file_path",
            str(labels_file),
            "--output_checkpoint",
            str(tmp_path / "c"),
            "--output_path",
            str(tmp_path / "o"),
        ],
        generator_dataset: [
            "--dataset_path",
            str(tmp_path),
            "--output_path",
            str(tmp_path / "l.txt"),
        ],
    }[script]
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(common + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def fake_run_with_labels(tmp_path: Path) -> tuple[Path, Path]:
    """A fake run of three 40x40 images with labels written by generator_dataset."""
    run = tmp_path / "run"
    for seed, stem in enumerate("abc"):
        write_fake_image_folder(run, stem, [20, 40, 60], [30.0, 31.0, 30.5], seed=seed)
    label_file = tmp_path / "labels.txt"
    assert (
        generator_dataset.main(
            generator_dataset.parse_args(
                [
                    "--dataset_path",
                    str(run),
                    "--output_path",
                    str(label_file),
                    "--start_position",
                    "0",
                ]
            )
        )
        == 0
    )
    return run, label_file


def train_arguments(run: Path, label_file: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--dataset_image_path",
        str(run),
        "--dataset_file_path",
        str(label_file),
        "--output_checkpoint",
        str(tmp_path / "checkpoint"),
        "--output_path",
        str(tmp_path / "out"),
        "--alpha",
        "0.25",
        "--image_size",
        "32",
        "--epochs",
        "1",
        "--validation_fraction",
        "0.34",
        "--workers",
        "1",
        *extra,
    ]


def test_train_reports_a_broken_label_row(tmp_path: Path, capsys):
    run, label_file = fake_run_with_labels(tmp_path)
    lines = label_file.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:-2])
    label_file.write_text("\n".join(lines) + "\n")
    code = train_BIQAN.main(
        train_BIQAN.parse_args(train_arguments(run, label_file, tmp_path, "--weights", "none"))
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert (
        error == f"error: {label_file}:4: expected 15 space-separated fields (index, image "
        f"id, 10 counts, 2 tags, challenge id), got 13"
    )


def test_train_stops_clearly_when_imagenet_cannot_be_downloaded(
    tmp_path: Path, capsys, monkeypatch
):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    # keras.applications fetch their weights through this function; make it fail as offline.
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    run, label_file = fake_run_with_labels(tmp_path)
    code = train_BIQAN.main(train_BIQAN.parse_args(train_arguments(run, label_file, tmp_path)))
    assert code == 2
    error = capsys.readouterr().err
    assert "could not download the ImageNet weights of mobilenet" in error
    assert "--weights none" in error
    assert not (tmp_path / "checkpoint").exists()


def test_test_biqan_refuses_a_checkpoint_of_another_architecture(tmp_path: Path, capsys):
    from models import biqan

    run, _ = fake_run_with_labels(tmp_path)
    model = biqan.build_biqan(
        biqan.BiqanConfig(architecture="mobilenet_v2", alpha=0.25, image_size=32)
    )
    weights = tmp_path / "weights.001-0.100.weights.h5"
    model.save_weights(str(weights))
    biqan.save_config(
        tmp_path, biqan.BiqanConfig(architecture="mobilenet", alpha=0.25, image_size=32)
    )
    code = test_BIQAN.main(
        test_BIQAN.parse_args(
            [
                "--dataset_image_path",
                str(run),
                "--pre_trained_model",
                str(weights),
                "--output_path",
                str(tmp_path / "out"),
                "--start_index",
                "0",
                "--selector",
                "biqan",
            ]
        )
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {weights}: does not fit the mobilenet (alpha 0.25")
    assert len(error.splitlines()) == 1


def test_test_biqan_without_a_model_and_too_few_snapshots(tmp_path: Path, capsys):
    run, _ = fake_run_with_labels(tmp_path)
    code = test_BIQAN.main(
        test_BIQAN.parse_args(
            [
                "--dataset_image_path",
                str(run),
                "--output_path",
                str(tmp_path / "out"),
                "--start_index",
                "3",
                "--selector",
                "last",
            ]
        )
    )
    assert code == 2
    assert "none left after --start_index 3" in capsys.readouterr().err
    code = test_BIQAN.main(
        test_BIQAN.parse_args(
            [
                "--dataset_image_path",
                str(run),
                "--output_path",
                str(tmp_path / "out"),
                "--start_index",
                "0",
                "--selector",
                "last",
                "fixed:40",
            ]
        )
    )
    assert code == 0
    rows = read_csv(tmp_path / "out" / "selection.csv")
    assert [row["picked_iteration"] for row in rows] == ["60", "40"] * 3


def test_train_names_a_damaged_snapshot_and_writes_no_biqan_json(tmp_path: Path, capsys):
    run, label_file = fake_run_with_labels(tmp_path)
    damaged = run / "b" / "00040.png"
    damaged.write_bytes(damaged.read_bytes()[:40])
    code = train_BIQAN.main(
        train_BIQAN.parse_args(train_arguments(run, label_file, tmp_path, "--weights", "none"))
    )
    assert code == 2
    error = capsys.readouterr().err
    assert f"{damaged}: not a readable image" in error and "Traceback" not in error
    assert not (tmp_path / "checkpoint" / "biqan.json").exists()
