"""utils/dip/dispatch.py: the work of a folder shared by worker processes, as one process does it."""

from __future__ import annotations

import multiprocessing
import signal

import torch

from models.skip import SkipConfig
from tests.conftest import make_pair
from utils import run_output
from utils.dip import dispatch, planning, reconstruction
from utils.method import FitSettings

NETWORK = SkipConfig(input_depth=4, channels_down=8, channels_up=8, channels_skip=2, num_scales=2)


def settings(output, batch_images=1) -> planning.RunSettings:
    return planning.RunSettings(
        output_path=output,
        network=NETWORK,
        fit=FitSettings(num_iter=6, save_iter=3),
        seed=0,
        init_from="scratch",
        checkpoint_every=100,
        device=torch.device("cpu"),
        quiet=True,
        batch_images=batch_images,
    )


def metrics_of(folder):
    return {path.parent.name: path.read_text() for path in sorted(folder.glob("*/metrics.csv"))}


def test_two_workers_give_the_files_of_one_process(tmp_path):
    for index, stem in enumerate("abc"):
        make_pair(tmp_path, stem, height=32, width=32, seed=index)
    jobs = planning.plan_jobs(tmp_path / "real", tmp_path / "mean")
    assert reconstruction.reconstruct_folder(jobs, settings(tmp_path / "one")) == []
    failures = dispatch.reconstruct_parallel(
        jobs, settings(tmp_path / "two"), [torch.device("cpu"), torch.device("cpu")], threads=1
    )
    assert failures == []
    assert metrics_of(tmp_path / "two") == metrics_of(tmp_path / "one")
    assert len(metrics_of(tmp_path / "two")) == 3
    summary = (tmp_path / "two" / run_output.SUMMARY_TABLE_FILE).read_text().splitlines()
    assert summary[0].split(",") == list(run_output.SUMMARY_COLUMNS) and len(summary) == 4


def test_a_failing_group_is_reported_not_hung(tmp_path):
    handlers = {name: signal.getsignal(name) for name in (signal.SIGTERM, signal.SIGUSR1)}
    job = planning.ImageJob(tmp_path / "real" / "gone.png", None)
    jobs, results = multiprocessing.Queue(), multiprocessing.Queue()
    jobs.put([job])
    jobs.put(None)
    try:
        dispatch.worker(settings(tmp_path / "out"), 1, jobs, results)  # in this process
    finally:
        for name, handler in handlers.items():
            signal.signal(name, handler)
    summaries, failures = results.get(timeout=10)
    assert summaries == [] and len(failures) == 1
    assert failures[0][0] == str(job.noisy) and str(job.noisy) in failures[0][1]
    assert not (tmp_path / "out" / "gone").exists()
