"""End-to-end tests of step 1 on tiny images (CPU, a small network, a few dozen iterations)."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import run_BDN
from models.skip import SkipNet
from tests.conftest import ROOT, make_pair
from utils import image_io, metrics
from utils.dip import networks, planning, reconstruction

FAST = [
    "--input_depth",
    "8",
    "--channels",
    "16",
    "--num_iter",
    "40",
    "--save_iter",
    "10",
    "--gpu_id",
    "cpu",
    "--quiet",
]


def run(folder: Path, output: Path, *extra: str, clean: bool = True) -> int:
    argv = [
        "--dataset_real_path",
        str(folder / "real"),
        "--output_path",
        str(output),
        *FAST,
        *extra,
    ]
    if clean:
        argv += ["--dataset_mean_path", str(folder / "mean")]
    return run_BDN.main(run_BDN.parse_args(argv))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_snapshots_metrics_and_summary(pairs, tmp_path):
    output = tmp_path / "out"
    assert run(pairs, output) == 0
    for stem in ("a", "b"):
        folder = output / stem
        assert sorted(p.name for p in folder.glob("*.png")) == [
            f"{i:05d}.png" for i in (10, 20, 30, 40)
        ]
        rows = read_csv(folder / "metrics.csv")
        assert list(rows[0]) == [
            "iteration",
            "loss",
            "psnr_noisy",
            "psnr_raw",
            "ssim_raw",
            "psnr_avg",
            "ssim_avg",
        ]
        assert [int(r["iteration"]) for r in rows] == [10, 20, 30, 40]
        clean = image_io.read_image(pairs / "mean" / f"{stem}.png").pixels
        noisy = image_io.read_image(pairs / "real" / f"{stem}.png").pixels
        for row in rows:  # every row describes its saved snapshot
            snapshot = image_io.read_image(folder / f"{int(row['iteration']):05d}.png").pixels
            assert metrics.psnr(snapshot, clean) == pytest.approx(float(row["psnr_avg"]), abs=1e-4)
            assert metrics.ssim(snapshot, clean) == pytest.approx(float(row["ssim_avg"]), abs=1e-4)
            assert metrics.psnr(snapshot, noisy) == pytest.approx(
                float(row["psnr_noisy"]), abs=1e-4
            )
        # 40 iterations from a grey start: the averaged output still climbs towards the image
        assert [float(r["psnr_avg"]) for r in rows] == sorted(float(r["psnr_avg"]) for r in rows)
        assert (output / f"{stem}_psnr.png").stat().st_size > 0
        assert (folder / "net.pt").exists() and not (folder / "state.pt").exists()
    summary = read_csv(output / "summary.csv")
    assert [r["image"] for r in summary] == ["a", "b"]
    best = max(read_csv(output / "a" / "metrics.csv"), key=lambda r: float(r["psnr_avg"]))
    assert summary[0]["best_iteration"] == best["iteration"]
    record = json.loads((output / "args.json").read_text())
    assert (
        record["fit"]["num_iter"] == 40
        and record["network"]["channels_down"] == 16
        and "torch" in record["versions"]
    )


def test_pairing_by_stem_and_blind_images(tmp_path):
    make_pair(tmp_path, "z_first", seed=3)
    make_pair(tmp_path, "a_blind", seed=4, with_clean=False)
    make_pair(tmp_path, "m_jpeg", seed=5, suffix=".JPG")
    # a reference whose list position would pair it with the wrong noisy image
    make_pair(tmp_path / "decoy", "b_unrelated", seed=6)
    (tmp_path / "decoy" / "mean" / "b_unrelated.png").rename(tmp_path / "mean" / "b_unrelated.png")
    jobs = planning.plan_jobs(tmp_path / "real", tmp_path / "mean")
    assert [(j.stem, j.clean.name if j.clean else None) for j in jobs] == [
        ("a_blind", None),
        ("m_jpeg", "m_jpeg.png"),
        ("z_first", "z_first.png"),
    ]
    output = tmp_path / "out"
    assert run(tmp_path, output) == 0
    blind = read_csv(output / "a_blind" / "metrics.csv")
    assert all(
        r["psnr_avg"] == "" and r["ssim_raw"] == "" and float(r["psnr_noisy"]) > 0 for r in blind
    )
    assert all(r["psnr_avg"] != "" for r in read_csv(output / "z_first" / "metrics.csv"))


def test_fully_blind_run(pairs, tmp_path):
    assert run(pairs, tmp_path / "out", clean=False) == 0
    summary = read_csv(tmp_path / "out" / "summary.csv")
    assert all(r["reference"] == "False" and r["best_psnr"] == "" for r in summary)


def log_messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_summary_and_closing_log_state_the_noisy_input_psnr(pairs, tmp_path, caplog):
    (pairs / "mean" / "b.png").unlink()
    output = tmp_path / "out"
    wmv = ["--early_stop", "wmv", "--wmv_window", "20", "--patience", "10"]
    with caplog.at_level(logging.INFO):
        assert run(pairs, output, *wmv) == 0
    summary = {row["image"]: row for row in read_csv(output / "summary.csv")}
    noisy = image_io.read_image(pairs / "real" / "a.png").pixels
    clean = image_io.read_image(pairs / "mean" / "a.png").pixels
    noisy_psnr = float(summary["a"]["noisy_psnr"])
    assert noisy_psnr == pytest.approx(metrics.psnr(noisy, clean), abs=1e-3)
    assert summary["b"]["noisy_psnr"] == ""
    picked, best = float(summary["a"]["picked_psnr"]), float(summary["a"]["best_psnr"])
    last_a, last_b = log_messages(caplog)[-2:]
    assert last_a == (
        f"a: noisy input {noisy_psnr:.2f} dB, picked {picked:.2f} dB ({picked - noisy_psnr:+.2f}), "
        f"best {best:.2f} dB ({best - noisy_psnr:+.2f}) -> {output / 'a' / 'denoised.png'} "
        f"(PSNR curves: {output / 'a_psnr.png'})"
    )
    assert last_b.startswith(f"b: no reference -> {output / 'b' / 'denoised.png'} ")
    assert (output / "a" / "denoised.png").is_file() and (output / "a_psnr.png").is_file()


def test_closing_log_without_early_stop_gives_means_and_the_last_snapshot(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert run(pairs, output) == 0
    summary = read_csv(output / "summary.csv")
    noisy = np.mean([float(row["noisy_psnr"]) for row in summary])
    best = np.mean([float(row["best_psnr"]) for row in summary])
    mean_line, line_a, _ = log_messages(caplog)[-3:]
    assert mean_line == (
        f"mean of 2 images with a reference: noisy input {noisy:.2f} dB, "
        f"best {best:.2f} dB ({best - noisy:+.2f})"
    )
    assert f"-> {output / 'a' / '00040.png'} (PSNR curves: {output / 'a_psnr.png'})" in line_a


def test_closing_log_of_an_image_without_metrics_names_its_folder(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    summary = {"image": "x", "picked_iteration": None, "picked_psnr": None, "best_psnr": None}
    (folder / "summary.json").write_text(json.dumps(summary | {"noisy_psnr": None}))
    assert reconstruction.closing_lines(tmp_path, ["x", "absent"]) == [
        f"x: no reference -> {folder} (PSNR curves: {tmp_path / 'x_psnr.png'})"
    ]


@pytest.mark.parametrize("shape", [(50, 70, 3), (40, 33)])
def test_output_keeps_the_input_size(tmp_path, shape):
    make_pair(
        tmp_path,
        "odd",
        height=shape[0],
        width=shape[1],
        channels=shape[2] if len(shape) == 3 else 1,
    )
    assert run(tmp_path, tmp_path / "out") == 0
    snapshot = image_io.read_image(tmp_path / "out" / "odd" / "00040.png")
    assert snapshot.pixels.shape == shape


def test_sixteen_bit_input_gives_sixteen_bit_snapshots(tmp_path):
    make_pair(tmp_path, "deep", seed=7)
    image = image_io.read_image(tmp_path / "real" / "deep.png")
    image_io.write_png(tmp_path / "real" / "deep.png", image.pixels, bit_depth=16)
    assert run(tmp_path, tmp_path / "out") == 0
    assert image_io.read_image(tmp_path / "out" / "deep" / "00010.png").bit_depth == 16


def test_saved_network_reproduces_its_output(pairs, tmp_path):
    output = tmp_path / "out"
    assert run(pairs, output, "--num_iter", "20") == 0
    saved = torch.load(output / "a" / "net.pt", weights_only=True)
    assert saved["config"]["channels_down"] == 16 and saved["iterations"] == 20
    net = networks.load_network(output / "a" / "net.pt", torch.device("cpu"))
    probe = torch.rand(1, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = SkipNet(net.config)
    reference.load_state_dict(saved["state_dict"])
    assert torch.equal(net(probe), reference(probe))
    # a network fitted on one size transfers to another size
    assert net(torch.rand(1, 8, 96, 128)).shape == (1, 3, 96, 128)


def test_init_from_file_starts_from_that_network(pairs, tmp_path):
    assert run(pairs, tmp_path / "first", "--num_iter", "20") == 0
    network_file = tmp_path / "first" / "a" / "net.pt"
    settings = run_BDN.settings(
        run_BDN.parse_args(
            [
                "--dataset_real_path",
                str(pairs / "real"),
                "--output_path",
                str(tmp_path / "x"),
                *FAST,
                "--init_from",
                str(network_file),
            ]
        )
    )
    image = planning.prepare(planning.ImageJob(pairs / "real" / "b.png", None), 32)
    state, label = networks.initial_state(image, settings, None)
    saved = torch.load(network_file, weights_only=True)["state_dict"]
    assert label == str(network_file)
    assert all(torch.equal(value, saved[key]) for key, value in state.items())
    assert (
        run(pairs, tmp_path / "second", "--init_from", str(network_file), "--num_iter", "20") == 0
    )
    assert read_csv(tmp_path / "second" / "summary.csv")[0]["init"] == str(network_file)


def test_previous_init_chains_images(pairs, tmp_path, monkeypatch):
    started_from = {}
    original = networks.initial_state

    def spy(image, settings, previous):
        state, label = original(image, settings, previous)
        started_from[image.job.stem] = {k: v.clone() for k, v in state.items()}
        return state, label

    monkeypatch.setattr(networks, "initial_state", spy)
    assert run(pairs, tmp_path / "out", "--init_from", "previous", "--num_iter", "20") == 0
    final_a = torch.load(tmp_path / "out" / "a" / "net.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(started_from["b"][k], final_a[k]) for k in final_a)
    assert not all(torch.equal(started_from["a"][k], final_a[k]) for k in final_a)
    assert [r["init"] for r in read_csv(tmp_path / "out" / "summary.csv")] == [
        "scratch",
        "previous",
    ]


def test_bad_inputs_are_reported_and_the_rest_is_done(tmp_path, caplog):
    make_pair(tmp_path, "good", seed=1)
    make_pair(tmp_path, "wrongref", seed=2)
    image_io.write_png(tmp_path / "mean" / "wrongref.png", np.zeros((48, 64, 3), np.float32))
    make_pair(tmp_path, "tiny", height=10, width=10)
    (tmp_path / "real" / "empty.png").write_bytes(b"")
    (tmp_path / "real" / "text.jpg").write_text("this is not an image")
    output = tmp_path / "out"
    output.mkdir()
    assert run(tmp_path, output) == 1
    errors = caplog.text
    for name, reason in [
        ("empty.png", "empty file"),
        ("text.jpg", "not a readable image"),
        ("tiny.png", "too small"),
        ("wrongref.png", "reference is 48x64x3"),
    ]:
        line = next(line for line in errors.splitlines() if name in line and reason in line)
        assert "Traceback" not in line
    assert "Traceback" not in errors
    assert [r["image"] for r in read_csv(output / "summary.csv")] == ["good"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_iter", "-5"], "num_iter must be positive"),
        (["--save_iter", "100"], "save_iter must be in"),
        (["--gpu_id", "x"], "invalid GPU id"),
        (["--init_from", "missing.pt"], "--init_from"),
        (["--show_iter", "15"], "--show_iter"),
    ],
)
def test_invalid_flags_fail_before_work(pairs, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run_BDN.parse_args(
            [
                "--dataset_real_path",
                str(pairs / "real"),
                "--output_path",
                str(tmp_path / "o"),
                *FAST,
                *flags,
            ]
        )
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_folder_is_a_flag_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_BDN.parse_args(
            ["--dataset_real_path", str(tmp_path / "none"), "--output_path", str(tmp_path / "o")]
        )
    assert "no such folder" in capsys.readouterr().err


def test_rerun_with_other_settings_is_refused(pairs, tmp_path):
    assert run(pairs, tmp_path / "out", "--num_iter", "20") == 0
    assert run(pairs, tmp_path / "out", "--num_iter", "30") == 2


def test_gpu_id_falls_back_to_cpu_without_cuda(pairs, tmp_path, caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the fallback cannot be observed")
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(pairs / "real"),
            "--output_path",
            str(tmp_path / "o"),
            *FAST[:-3],
            "--gpu_id",
            "0",
            "--quiet",
        ]
    )
    assert args.device == torch.device("cpu")
    assert "CUDA is not available" in caplog.text


def snapshot_files(output: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(output)): p.read_bytes()
        for p in sorted(output.rglob("*"))
        if p.suffix in (".png", ".csv") and "_psnr" not in p.name and p.name != "summary.csv"
    }


def test_interrupted_run_resumes_to_identical_files(pairs, tmp_path):
    command = [
        sys.executable,
        str(ROOT / "run_BDN.py"),
        "--dataset_real_path",
        str(pairs / "real"),
        "--dataset_mean_path",
        str(pairs / "mean"),
        *FAST[:4],
        "--num_iter",
        "60",
        "--save_iter",
        "10",
        "--checkpoint_every",
        "20",
        "--gpu_id",
        "cpu",
        "--quiet",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        command + ["--output_path", str(tmp_path / "whole")], check=True, env=environment, cwd=ROOT
    )
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        command + ["--output_path", str(interrupted)], env=environment, cwd=ROOT
    )
    deadline = time.time() + 120
    while not (interrupted / "b" / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (interrupted / "b" / "state.pt").exists(), (
        "the run never reached a checkpoint of image b"
    )
    assert not (interrupted / "b" / "summary.json").exists()
    subprocess.run(
        command + ["--output_path", str(interrupted)], check=True, env=environment, cwd=ROOT
    )
    assert snapshot_files(interrupted) == snapshot_files(tmp_path / "whole")
    assert not list(interrupted.rglob("*.tmp"))
