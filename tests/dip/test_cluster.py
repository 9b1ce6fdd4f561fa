"""Batch-job support without a scheduler: array shards, stop signals, plain logs, summary.csv.

The same behaviour through a real SLURM (sbatch, scancel, requeue) is in tests/dip/test_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import run_BDN
from tests.conftest import ROOT, make_pair
from tests.hooks.signal_pause import PAUSE_ENVIRONMENT, SignalPause, pause_environment
from utils import cluster
from utils.dip import reconstruction
from utils.run_output import STATE_FILE

TINY = ["--input_depth", "4", "--channels", "8", "--num_scales", "3", "--gpu_id", "cpu"]


def array_environment(first: int, last: int, step: int, task: int) -> dict[str, str]:
    """The SLURM_ARRAY_* variables SLURM sets for `--array=first-last:step` (checked on SLURM 22.05)."""
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_STEP": str(step),
        "SLURM_ARRAY_TASK_COUNT": str(len(range(first, last + 1, step))),
    }


@pytest.mark.parametrize(
    "first, last, step", [(0, 3, 1), (1, 4, 1), (0, 30, 2), (5, 17, 4), (7, 7, 1)]
)
def test_array_tasks_are_the_shards_whatever_the_ids(first, last, step):
    ids = range(first, last + 1, step)
    shards = [cluster.array_shard(array_environment(first, last, step, task)) for task in ids]
    assert shards == [(len(ids), index) for index in range(len(ids))]


def test_outside_an_array_there_is_one_shard():
    assert cluster.array_shard({"SLURM_JOB_ID": "12"}) == (1, 0)


def test_an_id_list_that_is_not_a_range_is_refused():
    # --array=1,3,7: SLURM sets MIN 1, MAX 7, STEP 1, COUNT 3
    environ = array_environment(1, 7, 1, 3) | {"SLURM_ARRAY_TASK_COUNT": "3"}
    with pytest.raises(ValueError, match="--num_shards and --shard_index"):
        cluster.array_shard(environ)


def test_run_bdn_takes_the_shard_from_an_array_starting_at_one(tmp_path, monkeypatch, capsys):
    make_pair(tmp_path, "a")
    argv = ["--dataset_real_path", str(tmp_path / "real"), "--output_path", str(tmp_path / "o")]
    for name, value in array_environment(1, 4, 1, 4).items():
        monkeypatch.setenv(name, value)
    args = run_BDN.parse_args(argv)
    assert (args.num_shards, args.shard_index) == (4, 3)
    assert run_BDN.parse_args(argv + ["--shard_index", "0"]).shard_index == 0
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    with pytest.raises(SystemExit):
        run_BDN.parse_args(argv)
    assert "not an evenly stepped range" in capsys.readouterr().err


def test_tasks_finishing_together_leave_a_complete_summary(tmp_path, monkeypatch):
    """Task A reads the finished images, then task B finishes and writes its summary; A's
    write must not replace B's complete summary with its older view."""
    for stem in ("a", "b"):
        (tmp_path / stem).mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"image": "a", "iterations": 1}))
    original = reconstruction.summary_csv
    a_has_read, b_written = threading.Event(), threading.Event()

    def slow_summary(output_path: Path) -> str:
        text = original(output_path)
        if threading.current_thread().name == "A":
            a_has_read.set()
            b_written.wait(timeout=2)  # without a lock, B writes meanwhile
        return text

    monkeypatch.setattr(reconstruction, "summary_csv", slow_summary)
    task_a = threading.Thread(target=reconstruction.write_summary, args=(tmp_path,), name="A")
    task_a.start()
    assert a_has_read.wait(timeout=60), "task A never read the finished images"
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"image": "b", "iterations": 1}))
    reconstruction.write_summary(tmp_path)
    b_written.set()
    task_a.join()
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["a", "b"]


ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_command(output: Path, pairs: Path) -> list[str]:
    """run_BDN.py on `pairs` with a tiny network; no periodic state save (1000 > 200 iterations)."""
    return [
        sys.executable,
        str(ROOT / "run_BDN.py"),
        "--dataset_real_path",
        str(pairs / "real"),
        "--dataset_mean_path",
        str(pairs / "mean"),
        "--output_path",
        str(output),
        *TINY,
        "--num_iter",
        "200",
        "--save_iter",
        "10",
        "--checkpoint_every",
        "1000",
    ]


def test_the_pause_hook_is_off_unless_asked_for_and_checks_its_value(tmp_path):
    assert SignalPause.from_environment({}) is None
    environ = pause_environment(45, tmp_path)
    assert SignalPause.from_environment(environ) == SignalPause(45, tmp_path)
    with pytest.raises(ValueError, match="ITERATION:FOLDER"):
        SignalPause.from_environment({PAUSE_ENVIRONMENT: "45"})


def test_a_paused_fit_waits_for_the_signal_and_gives_up_after_its_timeout(tmp_path):
    signalled = cluster.StopRequest(signal_number=signal.SIGTERM)
    SignalPause(45, tmp_path).wait(signalled)  # the signal already came: no wait
    assert (tmp_path / f"paused_{os.getpid()}").exists()
    with pytest.raises(RuntimeError, match="no stop signal within 0 s at iteration 45"):
        SignalPause(45, tmp_path, timeout=0.05).wait(cluster.StopRequest())


def test_the_hook_reaches_a_new_interpreter_only_through_its_environment(tmp_path):
    probe = "import utils.dip.snapshots as s; print(s.StopOnRequest.on_iteration.__name__)"
    command = [sys.executable, "-c", probe]
    plain = subprocess.run(command, env=ENVIRONMENT, cwd=ROOT, capture_output=True, text=True)
    environment = ENVIRONMENT | pause_environment(45, tmp_path)
    hooked = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True)
    assert (plain.stdout.strip(), hooked.stdout.strip()) == ("on_iteration", "paused_on_iteration")


# the fits wait at this iteration for the signal (tests/hooks/signal_pause.py): not a snapshot iteration
# (save_iter 10), so a resume from the last snapshot could not pass for one from the signal
PAUSE_AT = 45
PAUSE_TIMEOUT = 120


def wait_for_paused_fits(markers: Path, fits: int, process: subprocess.Popen) -> None:
    """Wait until `fits` fits of `process` wait at PAUSE_AT (their markers in `markers`)."""
    deadline = time.time() + PAUSE_TIMEOUT
    while len(list(markers.glob("paused_*"))) < fits:
        if process.poll() is not None:
            code = process.returncode
            raise AssertionError(f"the run ended ({code}) before {fits} fit(s) paused")
        if time.time() > deadline:
            raise AssertionError(f"{fits} fit(s) not at iteration {PAUSE_AT} in {PAUSE_TIMEOUT} s")
        time.sleep(0.01)


def signal_mid_fit(command: list[str], markers: Path, signal_number: int, fits: int = 1) -> int:
    """Run `command` with its fits pausing at iteration PAUSE_AT; once `fits` of them wait
    there, send `signal_number` to the process; its exit code."""
    environment = ENVIRONMENT | pause_environment(PAUSE_AT, markers)
    process = subprocess.Popen(command, env=environment, cwd=ROOT)
    try:
        wait_for_paused_fits(markers, fits, process)
        process.send_signal(signal_number)
        return process.wait(timeout=PAUSE_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()


def saved_iteration(folder: Path) -> int:
    """The iteration of the fit state saved in `folder`."""
    return torch.load(folder / STATE_FILE, weights_only=True)["fit"]["iteration"]


def run_files(output: Path) -> dict[str, object]:
    """Snapshots, metrics and per-image summaries (without timings), by relative path."""
    files: dict[str, object] = {}
    for path in sorted(output.rglob("*")):
        name = str(path.relative_to(output))
        if path.suffix in (".png", ".csv") and "_psnr" not in path.name:
            if path.name != "summary.csv":
                files[name] = path.read_bytes()
        elif path.name == "summary.json":
            summary = json.loads(path.read_text())
            del summary["seconds"], summary["iterations_per_second"]
            files[name] = summary
    return files


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path, str]:
    """(input folder, output of an uninterrupted run, its log written to a file)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    make_pair(folder, "a", seed=1)
    make_pair(folder, "b", seed=2)
    log = folder / "job.log"
    with open(log, "w") as stream:
        subprocess.run(
            run_command(folder / "whole", folder),
            check=True,
            env=ENVIRONMENT,
            cwd=ROOT,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    return folder, folder / "whole", log.read_text()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_the_state_then_a_rerun_ends_as_an_uninterrupted_run(
    uninterrupted, tmp_path, signal_number
):
    pairs, whole, _ = uninterrupted
    stopped = tmp_path / "stopped"
    code = signal_mid_fit(run_command(stopped, pairs), tmp_path / "paused", signal_number)
    assert code == cluster.REQUEUE_EXIT_CODE
    state = torch.load(stopped / "a" / STATE_FILE, weights_only=True)
    # no periodic save before iteration 1000: this state is the one saved at the signal
    assert state["fit"]["iteration"] == PAUSE_AT
    assert state["rows"][-1]["iteration"] == PAUSE_AT // 10 * 10
    assert not (stopped / "a" / "summary.json").exists()
    subprocess.run(run_command(stopped, pairs), check=True, env=ENVIRONMENT, cwd=ROOT)
    assert run_files(stopped) == run_files(whole)
    assert not (stopped / "a" / STATE_FILE).exists()


def test_sigterm_to_a_run_with_workers_saves_every_fit_then_resumes(uninterrupted, tmp_path):
    pairs, whole, _ = uninterrupted
    stopped = tmp_path / "stopped"
    command = run_command(stopped, pairs) + ["--workers", "2"]
    # one fit per worker, both waiting at PAUSE_AT when the parent gets the signal
    code = signal_mid_fit(command, tmp_path / "paused", signal.SIGTERM, fits=2)
    assert code == cluster.REQUEUE_EXIT_CODE
    for folder in (stopped / "a", stopped / "b"):
        assert saved_iteration(folder) == PAUSE_AT, folder
        assert not (folder / "summary.json").exists(), folder
    subprocess.run(command, check=True, env=ENVIRONMENT, cwd=ROOT)
    assert run_files(stopped) == run_files(whole)


def test_a_log_file_gets_plain_lines_not_progress_bars(uninterrupted):
    _, _, log = uninterrupted
    assert "\r" not in log and "it/s" not in log
    assert "a: iteration 20, loss" in log  # about a tenth of the 200 iterations
    assert "b: 200 iterations in" in log


def test_denoise_saves_its_state_on_sigterm_and_resumes(tmp_path):
    make_pair(tmp_path, "a", seed=1, with_clean=False)
    command = [
        sys.executable,
        str(ROOT / "denoise.py"),
        str(tmp_path / "real"),
        "--early_stop",
        "none",
        "--num_iter",
        "60",
        "--save_iter",
        "10",
        "--gpu_id",
        "cpu",
    ]
    subprocess.run(command + ["-o", str(tmp_path / "whole")], check=True, env=ENVIRONMENT, cwd=ROOT)
    stopped = tmp_path / "stopped"
    work = stopped / "snapshots" / "a"
    code = signal_mid_fit(command + ["-o", str(stopped)], tmp_path / "paused", signal.SIGTERM)
    assert code == cluster.REQUEUE_EXIT_CODE
    assert saved_iteration(work) == PAUSE_AT and not (stopped / "a.png").exists()
    subprocess.run(command + ["-o", str(stopped)], check=True, env=ENVIRONMENT, cwd=ROOT)
    assert (stopped / "a.png").read_bytes() == (tmp_path / "whole" / "a.png").read_bytes()
    assert not (stopped / "snapshots").exists()
