"""Batch jobs through a real single-node SLURM (tests/cluster/slurm_up.sh): arrays whose ids
are not shard indices, preemption and requeue, tasks rewriting summary.csv together, and the
example scripts of examples/slurm/ (adapted to the CPU: no --gres, one CPU per task).

Skipped, with the reason, when SLURM is not installed or does not come up.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.dip.test_cluster import PAUSE_AT, run_files
from tests.hooks.signal_pause import pause_environment
from utils import cluster

pytestmark = pytest.mark.slurm

SLURM_UP = ROOT / "tests" / "cluster" / "slurm_up.sh"
CONF = Path(os.environ.get("SLURM_TEST_DIR", "/tmp/slurm-test")) / "slurm.conf"
SAMPLE = ROOT / "dataset" / "sample"
TINY_FLAGS = "--input_depth 4 --channels 8 --num_scales 3 --gpu_id cpu --save_iter 10"
ARRAY_FLAGS = f"{TINY_FLAGS} --num_iter 40 --show_iter 20"
PREEMPT_FLAGS = f"{TINY_FLAGS} --num_iter 200 --checkpoint_every 1000"
JOB_TIMEOUT = 600


def node_responds(environment: dict[str, str]) -> bool:
    result = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%T"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and bool(
        {"idle", "mixed", "allocated"} & set(result.stdout.split())
    )


@pytest.fixture(scope="module")
def slurm():
    """Environment for SLURM clients; brings the test cluster up when it is installed but down."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    environment |= {"SLURM_CONF": str(CONF), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    if shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed (tests/cluster/slurm_up.sh installs it, as root)")
    started = False
    if not (CONF.exists() and node_responds(environment)):
        if os.geteuid() != 0 or shutil.which("slurmctld") is None:
            pytest.skip(f"no SLURM test cluster at {CONF}; start one with {SLURM_UP} as root")
        result = subprocess.run(
            [str(SLURM_UP)], env=environment, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            pytest.skip(f"SLURM did not come up: {(result.stderr or result.stdout).strip()}")
        started = True
    yield environment
    if started:
        subprocess.run([str(SLURM_UP), "down"], env=environment, check=False)


def cpu_script(source: Path, folder: Path) -> Path:
    """A copy of an example sbatch script without its GPU request."""
    text = source.read_text().replace(" --gres=gpu:1", "")
    path = folder / source.name
    path.write_text(text)
    return path


def sbatch(environment: dict[str, str], script: Path, *options: str) -> str:
    """Submit from the repository root; the job id."""
    result = subprocess.run(
        ["sbatch", "--parsable", "--chdir", str(ROOT), "--cpus-per-task=1", *options, str(script)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().split(";")[0]


def job_records(environment: dict[str, str], job: str) -> list[dict[str, str]]:
    """`scontrol show job` of a job (one record per array task) as key=value dictionaries."""
    text = subprocess.run(
        ["scontrol", "-o", "show", "job", job],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line]


def wait_until(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def wait_for_job(environment: dict[str, str], job: str) -> list[dict[str, str]]:
    """Wait until every task of `job` ended; their records."""
    wait_until(
        lambda: all(record["JobState"] in ENDED for record in job_records(environment, job)),
        f"job {job}",
    )
    return job_records(environment, job)


def summary_without_timings(output: Path) -> list[dict]:
    with open(output / "summary.csv", newline="") as stream:
        return [
            {k: v for k, v in row.items() if k not in ("seconds", "iterations_per_second")}
            for row in csv.DictReader(stream)
        ]


def run_locally(environment: dict[str, str], real: Path, mean: Path, output: Path, flags: str):
    """The same run as one process, outside SLURM."""
    subprocess.run(
        [sys.executable, "run_BDN.py", "--dataset_real_path", str(real)]
        + ["--dataset_mean_path", str(mean), "--output_path", str(output), *flags.split()],
        env=environment,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def single_process_run(slurm, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("single") / "run"
    run_locally(slurm, SAMPLE / "real", SAMPLE / "mean", output, ARRAY_FLAGS)
    return output


@pytest.mark.parametrize("array", ["0-3", "1-4", "0-30:10%2"])
def test_array_does_every_image_once_whatever_the_ids(slurm, single_process_run, tmp_path, array):
    run = tmp_path / "run"
    environment = slurm | {
        "REAL": str(SAMPLE / "real"),
        "MEAN": str(SAMPLE / "mean"),
        "RUN": str(run),
        "FLAGS": ARRAY_FLAGS,
    }
    script = cpu_script(ROOT / "examples" / "slurm" / "step1_dip.sbatch", tmp_path)
    job = sbatch(environment, script, f"--array={array}", f"--output={tmp_path}/task_%a.out")
    records = wait_for_job(environment, job)
    assert [(r["JobState"], r["ExitCode"]) for r in records] == [("COMPLETED", "0:0")] * 4
    logs = "".join(path.read_text() for path in tmp_path.glob("task_*.out"))
    for stem in ("astronaut", "camera", "chelsea", "coffee"):
        assert logs.count(f"{stem}: 40 iterations in") == 1, logs
        assert f"{stem}: iteration 20, loss" in logs
    assert "\r" not in logs
    assert summary_without_timings(run) == summary_without_timings(single_process_run)
    assert run_files(run) == run_files(single_process_run)


def requeued(environment: dict[str, str], job: str) -> bool:
    """Whether SLURM put the one-task `job` back in the queue after its first attempt: Restarts=1
    and PENDING, no longer COMPLETING (slurmctld clears that flag and sets the requeue's begin
    time, about two minutes ahead, in one step); AssertionError if the job ended instead."""
    (record,) = job_records(environment, job)
    if record["JobState"] in ENDED:
        state = f"{record['JobState']} {record['ExitCode']}"
        raise AssertionError(f"job {job} ended {state} without a requeue")
    return record.get("Restarts") == "1" and record["JobState"] == "PENDING"


def start_requeued_job(environment: dict[str, str], job: str) -> None:
    """Start a requeued job one second from now instead of after SLURM's two-minute delay.

    Not `StartTime=now`: the requeue revoked the first attempt's job credential at its second,
    and slurmd refuses a launch whose credential is from that same second or earlier ("Job
    credential revoked"; the job then ends FAILED 1:0 without running). The job reads pending
    only after the requeue, so `now+1` on slurmctld's clock is a later second than it."""
    subprocess.run(
        ["scontrol", "update", f"JobId={job}", "StartTime=now+1"], env=environment, check=True
    )


@pytest.mark.parametrize("signal_name", ["TERM", "USR1"])
def test_preempted_task_is_requeued_and_resumes_from_the_signal(slurm, tmp_path, signal_name):
    real, mean = tmp_path / "real", tmp_path / "mean"
    for folder, source in ((real, SAMPLE / "real"), (mean, SAMPLE / "mean")):
        folder.mkdir()
        shutil.copy(source / "astronaut.png", folder)
    run, log, paused = tmp_path / "run", tmp_path / "job.out", tmp_path / "paused"
    environment = slurm | {"REAL": str(real), "MEAN": str(mean), "RUN": str(run)}
    # the fit waits at iteration PAUSE_AT for the signal (the resumed fit starts after it)
    hook = pause_environment(PAUSE_AT, paused) | {"FLAGS": PREEMPT_FLAGS}
    script = cpu_script(ROOT / "examples" / "slurm" / "step1_dip.sbatch", tmp_path)
    job = sbatch(environment | hook, script, "--array=0-0", f"--output={log}")
    wait_until(lambda: any(paused.glob("paused_*")), f"the fit waiting at iteration {PAUSE_AT}")
    subprocess.run(["scancel", f"--signal={signal_name}", job], env=environment, check=True)
    wait_until(lambda: requeued(environment, job), f"job {job} requeued", 120)
    start_requeued_job(environment, job)
    records = wait_for_job(environment, job)
    text = log.read_text()
    assert [(r["JobState"], r["ExitCode"]) for r in records] == [("COMPLETED", "0:0")], text
    assert f"stopped by SIG{signal_name} at iteration {PAUSE_AT} of 200" in text
    assert f"exit code {cluster.REQUEUE_EXIT_CODE}" in text
    # no periodic save before iteration 1000: the run went on from the state saved at the signal
    assert f"astronaut: resuming at iteration {PAUSE_AT}" in text
    assert "astronaut: 200 iterations in" in text
    uninterrupted = tmp_path / "uninterrupted"
    run_locally(slurm, real, mean, uninterrupted, PREEMPT_FLAGS)
    assert run_files(run) == run_files(uninterrupted)
    assert summary_without_timings(run) == summary_without_timings(uninterrupted)


RACE = """
import json, sys, time
from pathlib import Path
from utils import image_io
from utils.dip import reconstruction
folder, task, tasks, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for round_index in range(rounds):
    output = folder / str(round_index)
    (output / f"ready_{task}").touch()
    deadline = time.time() + 600  # a busy machine may start the other task late
    while len(list(output.glob("ready_*"))) < tasks:  # start together
        if time.time() > deadline:
            sys.exit(f"round {round_index}: the other tasks never came")
        time.sleep(0.0005)
    summary = json.dumps({"image": f"task{task}", "iterations": 1})
    image_io.write_text(output / f"task{task}" / "summary.json", summary)  # as fit_group does
    reconstruction.write_summary(output)
"""


def test_tasks_finishing_together_leave_a_complete_summary(slurm, tmp_path):
    """Array tasks finish an image at the same moment, many times over, in a folder of earlier
    finished images, and each rebuilds summary.csv: the last one written lists every image."""
    tasks, rounds, earlier = 2, 40, 200
    for round_index in range(rounds):
        for image in range(earlier):
            folder = tmp_path / "runs" / str(round_index) / f"earlier{image:03d}"
            folder.mkdir(parents=True)
            (folder / "summary.json").write_text(json.dumps({"image": folder.name}))
    (tmp_path / "race.py").write_text(RACE)
    script = tmp_path / "race.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f'exec "$PYTHON" {tmp_path / "race.py"} {tmp_path / "runs"} '
        f'"$SLURM_ARRAY_TASK_ID" {tasks} {rounds}\n'
    )
    environment = slurm | {"PYTHONPATH": str(ROOT)}
    job = sbatch(environment, script, f"--array=0-{tasks - 1}", f"--output={tmp_path}/race_%a.out")
    records = wait_for_job(environment, job)
    assert [(r["JobState"], r["ExitCode"]) for r in records] == [("COMPLETED", "0:0")] * tasks
    expected = [f"earlier{image:03d}" for image in range(earlier)]
    expected += [f"task{task}" for task in range(tasks)]
    for round_index in range(rounds):
        lines = (tmp_path / "runs" / str(round_index) / "summary.csv").read_text().splitlines()
        assert [line.split(",")[0] for line in lines[1:]] == expected, f"round {round_index}"


def test_submit_runs_steps_2_to_4_after_the_whole_array(slurm, tmp_path):
    """examples/slurm/submit.sh on the sample: the step 1 array, then steps 2-4 (afterok)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for source in (ROOT / "examples" / "slurm").iterdir():
        text = source.read_text().replace(" --gres=gpu:1", "")
        (scripts / source.name).write_text(
            re.sub(r"--cpus-per-task=\d+", "--cpus-per-task=1", text)
        )
    run, results = tmp_path / "run", tmp_path / "results"
    environment = slurm | {
        "REAL": str(SAMPLE / "real"),
        "MEAN": str(SAMPLE / "mean"),
        "RUN": str(run),
        "FLAGS": f"{TINY_FLAGS} --num_iter 60",
        "CHECKPOINT": str(tmp_path / "checkpoint"),
        "RESULTS": str(results),
        "LABEL_FLAGS": "--start_position 2",
        "TRAIN_FLAGS": "--alpha 0.25 --image_size 32 --weights none --epochs 1 --batchsize 8 "
        "--validation_fraction 0.25 --workers 1 --gpu_id cpu",
        "TEST_FLAGS": "--start_index 2 --selector biqan last --workers 1 --gpu_id cpu",
        "SBATCH_OUTPUT": f"{tmp_path}/%x_%j.out",
    }
    submitted = subprocess.run(
        ["bash", str(scripts / "submit.sh"), "--array=1-2"],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    array, selection = re.findall(r"job (\d+)", submitted)[:2]
    array_records = wait_for_job(environment, array)
    assert [(r["JobState"], r["ExitCode"]) for r in array_records] == [("COMPLETED", "0:0")] * 2
    (record,) = wait_for_job(environment, selection)
    logs = "".join(path.read_text() for path in tmp_path.glob("*.out"))
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), logs
    assert record["StartTime"] >= max(r["EndTime"] for r in array_records)
    with open(results / "selection" / "selection.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    images = ("astronaut", "camera", "chelsea", "coffee")
    assert sorted((row["image"], row["selector"]) for row in rows) == [
        (image, selector) for image in images for selector in ("biqan", "last")
    ]
