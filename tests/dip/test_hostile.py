"""Hostile files and preemption (issue 23): crafted state files, names that climb out of the
output folder, signals after a stopping rule fired, inputs changed under a run, stale
temporary files. Each test is one guarantee of docs/RELIABILITY.md."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import pytest
import torch

import denoise
import generator_dataset
import run_BDN
import test_BIQAN
import train_BIQAN
from tests.conftest import ROOT, make_pair
from tests.hooks.signal_pause import pause_environment
from utils import cluster
from utils.dip import planning, reconstruction, run_guard

TINY = ["--input_depth", "4", "--channels", "8", "--skip_channels", "2", "--num_scales", "2"]
TINY += ["--num_iter", "4", "--save_iter", "2", "--gpu_id", "cpu", "--quiet"]


def tiny_pairs(folder: Path, *stems: str) -> Path:
    """32x32 colour pairs under `folder`/real and `folder`/mean."""
    for seed, stem in enumerate(stems, 1):
        make_pair(folder, stem, height=32, width=32, seed=seed)
    return folder


def run(folder: Path, output: Path, *extra: str) -> int:
    argv = ["--dataset_real_path", str(folder / "real"), "--dataset_mean_path"]
    argv += [str(folder / "mean"), "--output_path", str(output), *TINY, *extra]
    return run_BDN.main(run_BDN.parse_args(argv))


class RunsCode:
    """Unpickling this object creates a file: what a crafted state.pt could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_state_file_runs_no_code_and_says_what_to_do(tmp_path, caplog):
    pairs = tiny_pairs(tmp_path, "a", "b")
    output = tmp_path / "out"
    assert run(pairs, output) == 0
    (output / "a" / "summary.json").unlink()
    marker = tmp_path / "code_ran"
    torch.save({"fit": {"iteration": 2}, "payload": RunsCode(marker)}, output / "a" / "state.pt")
    assert run(pairs, output) == 1
    assert not marker.exists()
    lines = [line for line in caplog.text.splitlines() if "a/state.pt" in line]
    assert lines and "delete it to refit a from the start" in lines[0]
    assert "Traceback" not in caplog.text


def test_a_state_file_of_another_layout_or_network_is_one_line(tmp_path, caplog):
    pairs = tiny_pairs(tmp_path, "a", "b")
    output = tmp_path / "out"
    assert run(pairs, output, "--checkpoint_every", "2") == 0
    net = torch.load(output / "a" / "net.pt", weights_only=True)
    for stem in ("a", "b"):
        (output / stem / "summary.json").unlink()
    tensor = torch.zeros(1)
    fit = {"iteration": 2, "net": net["state_dict"], "optimizer": {}, "base_input": tensor}
    fit |= {"generator": torch.zeros(8, dtype=torch.uint8), "last_psnr": tensor}
    fit |= {"last_good": [tensor], "average": None}
    torch.save({"fit": fit, "rows": [], "elapsed": 0.0}, output / "a" / "state.pt")
    torch.save({"fit": {"iteration": 2}, "rows": "x"}, output / "b" / "state.pt")
    assert run(pairs, output) == 1
    assert "b/state.pt: damaged resume state" in caplog.text
    assert "a/state.pt: saved for another network or image size" in caplog.text
    assert "Traceback" not in caplog.text


# Names that would climb out of the output folder.

BAD_NAMES = ("...png", "..png", ".hidden.png")


def test_names_that_climb_out_of_the_output_folder_are_refused_one_line_each(tmp_path, caplog):
    make_pair(tmp_path, "a", height=32, width=32, with_clean=False)
    for name in BAD_NAMES:
        (tmp_path / "real" / name).write_bytes((tmp_path / "real" / "a.png").read_bytes())
    parent = tmp_path / "parent"
    parent.mkdir()
    argv = ["--dataset_real_path", str(tmp_path / "real"), "--output_path", str(parent / "run")]
    assert run_BDN.main(run_BDN.parse_args(argv + TINY)) == 1
    assert sorted(path.name for path in parent.iterdir()) == ["run"]
    for name in BAD_NAMES:
        lines = [line for line in caplog.text.splitlines() if f"real/{name}: a name" in line]
        assert len(lines) == 1, name
    assert (parent / "run" / "a" / "summary.json").exists()
    assert sorted(path.name for path in (parent / "run").iterdir() if path.is_dir()) == ["a"]


def test_denoise_never_writes_or_deletes_through_a_dot_name(tmp_path, caplog):
    make_pair(tmp_path, "a", height=32, width=32, with_clean=False)
    (tmp_path / "real" / "...png").write_bytes((tmp_path / "real" / "a.png").read_bytes())
    output = tmp_path / "out"
    output.mkdir()
    mine = {"00002.png": b"user", "metrics.csv": b"user", "net.pt": b"user", "notes": b"x"}
    for name, data in mine.items():
        (output / name).write_bytes(data)
    argv = [str(tmp_path / "real"), "-o", str(output), "--num_iter", "4", "--save_iter", "2"]
    argv += ["--early_stop", "none", "--gpu_id", "cpu", "--quiet"]
    assert denoise.main(denoise.parse_args(argv)) == 1
    for name, data in mine.items():
        assert (output / name).read_bytes() == data, name
    assert (output / "a.png").exists() and not (output / "...png").exists()
    assert "...png: a name whose stem" in caplog.text


def test_remove_run_never_follows_a_linked_image_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "metrics.csv").write_text("user")
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "a").symlink_to(elsewhere)
    run_guard.remove_run(run_folder, ["a", ".."])
    assert (elsewhere / "metrics.csv").read_text() == "user"


def small_bdn_run(pairs: Path, output: Path) -> int:
    """run_BDN.py, 4 iterations of a tiny network, in this process."""
    argv = ["--dataset_real_path", str(pairs / "real"), "--output_path", str(output), *TINY]
    return run_BDN.main(run_BDN.parse_args(argv))


def test_a_linked_image_lock_fails_that_image_only_and_opens_nothing_elsewhere(tmp_path, caplog):
    make_pair(tmp_path, "a", height=32, width=32, seed=1)
    make_pair(tmp_path, "b", height=32, width=32, seed=2)
    output, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (output / "a").mkdir(parents=True)
    (output / "args.json").write_text("{}")  # a run folder that has no results yet
    (output / "a" / run_guard.IMAGE_LOCK).symlink_to(elsewhere)  # a dangling link
    assert small_bdn_run(tmp_path, output) == 1
    assert not elsewhere.exists()
    assert "a.png: " in caplog.text and "a link, not a lock file this tool made" in caplog.text
    assert (output / "b" / "summary.json").exists() and not (output / "a" / "summary.json").exists()


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_run_lock_that_is_not_ours_stops_the_run_in_one_line(tmp_path, caplog, kind):
    make_pair(tmp_path, "a", height=32, width=32, seed=1)
    output, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    output.mkdir()
    (output / "args.json").write_text("{}")
    lock = output / run_guard.RUN_LOCK
    lock.symlink_to(elsewhere) if kind == "link" else os.mkfifo(lock)
    assert small_bdn_run(tmp_path, output) == 2  # a FIFO would block an open without O_NONBLOCK
    assert not elsewhere.exists()
    assert f"{lock}" in caplog.text and "not a lock file this tool made" in caplog.text


# A signal is an interruption until the run's planned end, whatever a stopping rule said.

WMV = ["--num_iter", "60", "--early_stop", "wmv", "--wmv_window", "4", "--patience", "2"]


def bdn_command(pairs: Path, output: Path) -> list[str]:
    """run_BDN.py on 32x32 blind images with a wmv rule that fires at iteration 8 (then the
    fit ends at 10, one snapshot later)."""
    argv = ["--dataset_real_path", str(pairs / "real"), "--output_path", str(output)]
    return [sys.executable, str(ROOT / "run_BDN.py"), *argv, *TINY, *WMV]


def network_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_a_signal_after_the_rule_fired_resumes_to_the_uninterrupted_end(tmp_path):
    make_pair(tmp_path, "a", height=32, width=32, seed=1, with_clean=False)
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    subprocess.run(bdn_command(tmp_path, whole), check=True, env=environment, cwd=ROOT)
    summary = json.loads((whole / "a" / "summary.json").read_text())
    assert (summary["stop_iteration"], summary["iterations"]) == (8, 10)
    markers = tmp_path / "paused"
    paused = environment | pause_environment(9, markers)  # after the firing, before the end
    process = subprocess.Popen(bdn_command(tmp_path, stopped), env=paused, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not list(markers.glob("paused_*")) and process.poll() is None:
            assert time.time() < deadline, "the fit did not pause"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == cluster.REQUEUE_EXIT_CODE
    finally:
        if process.poll() is None:
            process.kill()
    assert not (stopped / "a" / "summary.json").exists()
    subprocess.run(bdn_command(tmp_path, stopped), check=True, env=environment, cwd=ROOT)
    resumed = json.loads((stopped / "a" / "summary.json").read_text())
    for timing in ("seconds", "iterations_per_second"):
        del resumed[timing], summary[timing]
    assert resumed == summary
    for name in ("metrics.csv", "denoised.png"):
        assert (stopped / "a" / name).read_bytes() == (whole / "a" / name).read_bytes()
    expected, got = (
        network_tensors(whole / "a" / "net.pt"),
        network_tensors(stopped / "a" / "net.pt"),
    )
    assert all(torch.equal(expected[key], got[key]) for key in expected)


# Steps 2 to 4 and denoise.py overwrite only files they wrote (utils.ownership).


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished step-1 run of two 32x32 pairs, four snapshots each."""
    folder = tiny_pairs(tmp_path_factory.mktemp("finished"), "a", "b")
    assert run(folder, folder / "run", "--num_iter", "8") == 0
    return folder / "run"


def test_step2_never_overwrites_a_file_it_did_not_write(finished_run, tmp_path, capsys):
    metrics = finished_run / "a" / "metrics.csv"
    before = metrics.read_bytes()
    argv = ["--dataset_path", str(finished_run), "--start_position", "0", "--output_path"]
    assert generator_dataset.main(generator_dataset.parse_args([*argv, str(metrics)])) == 2
    assert metrics.read_bytes() == before
    assert "metrics.csv: exists and was not written by this tool" in capsys.readouterr().err
    labels_file = tmp_path / "labels.txt"
    assert generator_dataset.main(generator_dataset.parse_args([*argv, str(labels_file)])) == 0
    assert generator_dataset.main(generator_dataset.parse_args([*argv, str(labels_file)])) == 0
    (tmp_path / "mine.txt").write_text("mine")
    mine = str(tmp_path / "mine.txt")
    assert generator_dataset.main(generator_dataset.parse_args([*argv, mine])) == 2
    assert (tmp_path / "mine.txt").read_text() == "mine"


def test_step4_never_overwrites_a_file_it_did_not_write(finished_run, tmp_path, capsys):
    output = tmp_path / "picks"
    output.mkdir()
    (output / "selection.csv").write_text("mine")
    argv = ["--dataset_image_path", str(finished_run), "--output_path", str(output)]
    argv += ["--start_index", "0", "--selector", "last", "wmv", "--gpu_id", "cpu"]
    argv += ["--wmv_window", "4", "--patience", "2"]
    assert test_BIQAN.main(test_BIQAN.parse_args(argv)) == 2
    assert (output / "selection.csv").read_text() == "mine"
    assert sorted(path.name for path in output.iterdir()) == ["selection.csv"]
    assert "selection.csv: exists and was not written by this tool" in capsys.readouterr().err
    (output / "selection.csv").unlink()
    assert test_BIQAN.main(test_BIQAN.parse_args(argv)) == 0
    assert test_BIQAN.main(test_BIQAN.parse_args(argv)) == 0  # its own files: replaced
    assert (output / "a_last.png").exists() and (output / "a_wmv_variance.png").exists()
    assert (output / "a_Compare.png").exists() and not list(output.glob(".*.tmp"))


def test_denoise_never_overwrites_a_result_it_did_not_write(tmp_path, caplog):
    make_pair(tmp_path, "a", height=32, width=32, with_clean=False)
    output = tmp_path / "out"
    output.mkdir()
    (output / "a.png").write_bytes(b"my own picture")
    argv = [str(tmp_path / "real"), "-o", str(output), "--num_iter", "4", "--save_iter", "2"]
    argv += ["--early_stop", "none", "--gpu_id", "cpu", "--quiet"]
    assert denoise.main(denoise.parse_args(argv)) == 2
    assert (output / "a.png").read_bytes() == b"my own picture"
    assert "a.png: exists and was not written by this tool" in caplog.text
    (output / "a.png").unlink()
    assert denoise.main(denoise.parse_args(argv)) == 0
    assert denoise.main(denoise.parse_args(argv)) == 0


# Inputs and records.


def test_the_recorded_hash_is_that_of_the_fitted_bytes(tmp_path, monkeypatch):
    pairs = tiny_pairs(tmp_path, "a")
    fitted = (pairs / "real" / "a.png").read_bytes()
    prepare = planning.prepare

    def prepare_then_replace(job, *args):
        image = prepare(job, *args)
        make_pair(tmp_path / "other", "a", height=32, width=32, seed=9)
        shutil.copy(tmp_path / "other" / "real" / "a.png", job.noisy)  # replaced mid-run
        return image

    monkeypatch.setattr(planning, "prepare", prepare_then_replace)
    assert run(pairs, tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "a" / "input.json").read_text())
    assert record["noisy_sha256"] == hashlib.sha256(fitted).hexdigest()


def test_a_second_run_with_other_inputs_is_refused_while_the_first_writes(tmp_path):
    pairs = tiny_pairs(tmp_path, "a")
    output = tmp_path / "out"
    args = run_BDN.parse_args(
        ["--dataset_real_path", str(pairs / "real"), "--output_path", str(output), *TINY]
    )
    record = reconstruction.run_record(run_BDN.settings(args), pairs / "real", None)
    other = dict(record, dataset_real_path=str(tmp_path / "elsewhere"))
    with reconstruction.start_folder(output, record, []):
        with pytest.raises(ValueError, match="another run with other input folders"):
            reconstruction.start_folder(output, other, [])
        relative = dict(record, dataset_real_path=os.path.relpath(pairs / "real"))
        reconstruction.start_folder(output, relative, []).close()  # the same folder


def test_a_resume_with_other_batch_images_is_refused(tmp_path, caplog):
    pairs = tiny_pairs(tmp_path, "a", "b")
    output = tmp_path / "out"
    assert run(pairs, output) == 0
    (output / "a" / "summary.json").unlink()
    (output / "a" / "state.pt").write_bytes(b"interrupted")
    assert run(pairs, output, "--batch_images", "2") == 2
    assert "resume with --batch_images 1" in caplog.text
    assert (output / "a" / "state.pt").read_bytes() == b"interrupted"


def test_temporary_files_of_a_killed_write_are_removed_and_only_those(tmp_path):
    pairs = tiny_pairs(tmp_path, "a")
    output = tmp_path / "out"
    assert run(pairs, output) == 0
    stale = [
        output / f".args.json.{uuid.uuid4().hex}.tmp",
        output / "a" / f".metrics.csv.{uuid.uuid4().hex}.tmp",
    ]
    kept = [output / "a" / ".notes.tmp", output / "a" / "x.tmp", output / ".a.1234.tmp"]
    for path in stale + kept:
        path.write_text("x")
    assert run(pairs, output) == 0
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)


# Nonsense sizes and numbers: one line each, before anything is allocated.


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` RGB pixels, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_a_huge_image_header_is_one_line_and_the_rest_is_done(tmp_path, caplog):
    pairs = tiny_pairs(tmp_path, "a")
    (pairs / "real" / "huge.png").write_bytes(png_header(100_000, 100_000))
    argv = ["--dataset_real_path", str(pairs / "real"), "--output_path", str(tmp_path / "out")]
    assert run_BDN.main(run_BDN.parse_args(argv + TINY)) == 1
    assert "huge.png: its header declares more than" in caplog.text
    assert (tmp_path / "out" / "a" / "summary.json").exists()


def test_a_fit_larger_than_the_device_is_refused_before_allocation(tmp_path, caplog):
    pairs = tiny_pairs(tmp_path, "a")
    argv = ["--dataset_real_path", str(pairs / "real"), "--output_path", str(tmp_path / "out")]
    argv += [*TINY, "--num_scales", "16"]
    assert run_BDN.main(run_BDN.parse_args(argv)) == 1
    assert "a.png: fitting it at 131072x131072 pixels" in caplog.text
    assert "more than the device's" in caplog.text


@pytest.mark.parametrize(
    "flag, value",
    [("--max_psnr", "inf"), ("--min_psnr", "nan"), ("--votes", str(10**20))],
)
def test_step2_nonsense_numbers_are_flag_errors(tmp_path, capsys, flag, value):
    argv = ["--dataset_path", str(tmp_path), "--output_path", str(tmp_path / "l.txt")]
    with pytest.raises(SystemExit):
        generator_dataset.parse_args([*argv, flag, value])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag[2:] in error and "Traceback" not in error


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--lr", "inf", "--lr must be a finite number"),
        ("--alpha", "inf", "--alpha must be a finite number"),
        ("--image_size", "100000", "GiB per batch"),
    ],
)
def test_step3_nonsense_numbers_are_flag_errors(tmp_path, capsys, flag, value, says):
    (tmp_path / "labels.txt").write_text("")
    argv = ["--dataset_image_path", str(tmp_path), "--dataset_file_path"]
    argv += [str(tmp_path / "labels.txt"), "--output_checkpoint", str(tmp_path / "c")]
    argv += ["--output_path", str(tmp_path / "o"), flag, value]
    with pytest.raises(SystemExit):
        train_BIQAN.parse_args(argv)
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("output", ["/etc/passwd/labels.txt", "/proc/dip_labels/labels.txt"])
def test_step2_and_step4_outputs_that_cannot_be_written_are_one_line(finished_run, capsys, output):
    argv = ["--dataset_path", str(finished_run), "--start_position", "0", "--output_path", output]
    assert generator_dataset.main(generator_dataset.parse_args(argv)) == 2
    assert "cannot write there" in capsys.readouterr().err
    argv = ["--dataset_image_path", str(finished_run), "--output_path", str(Path(output).parent)]
    argv += ["--start_index", "0", "--selector", "last", "--gpu_id", "cpu"]
    assert test_BIQAN.main(test_BIQAN.parse_args(argv)) == 2
    assert "cannot write there" in capsys.readouterr().err
