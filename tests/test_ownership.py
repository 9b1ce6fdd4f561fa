"""utils.ownership: the list of the files the tools wrote, kept whole when processes share a folder."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from utils import ownership

PROCESSES, CLAIMS = 6, 25


def claim_many(folder: Path, worker: int, start) -> None:
    """Claim CLAIMS names of one worker in `folder`, one at a time, once every worker is ready."""
    start.wait()
    for index in range(CLAIMS):
        ownership.claim(folder, [f"w{worker}_{index}.png"])


def test_concurrent_claims_lose_no_name(tmp_path):
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    workers = [
        context.Process(target=claim_many, args=(tmp_path, worker, start))
        for worker in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    expected = {f"w{w}_{i}.png" for w in range(PROCESSES) for i in range(CLAIMS)}
    assert ownership.written_names(tmp_path) == expected


def test_a_refused_claim_leaves_nothing(tmp_path):
    (tmp_path / "mine.png").write_bytes(b"mine")
    folder = tmp_path / "new"
    try:
        ownership.claim(tmp_path, ["mine.png"])
    except ValueError as error:
        assert "mine.png: exists and was not written by this tool" in str(error)
    else:
        raise AssertionError("the user's file was claimed")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine.png"]
    ownership.claim(folder, ["a.png"])
    assert ownership.written_names(folder) == {"a.png"}
