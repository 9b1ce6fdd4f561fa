"""Sharing the CPU cores among the DIP commands running at once on one machine.

Torch gives a process one thread per core. Two commands on the same cores then run twice as
many threads as there are cores, and libgomp's threads, which spin at every barrier, stall each
other: two 2-thread fits started at once on this project's 2-core machine ran at 27% of their
speed alone each, where two 1-thread fits run at 63-65% (`python -m bench.bench_cpu
--contention 128`). So each command registers, while it runs, the cores it may use and its
number of worker processes, in a file of a machine-wide folder that it holds locked (a killed
command's file is recognised as stale and removed), and gives each worker its cores shared
among all the registered processes on the same cores: alone it gets them all.

Commands that start within the time it takes them to plan their work share evenly; one that
starts later takes its share of what the others registered and leaves them their threads (a
fit's thread count is fixed when it starts: it changes the rounding, and so the numbers).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from utils.dip.devices import available_cores, own_cores

LOGGER = logging.getLogger(__name__)
REGISTRY = Path(tempfile.gettempdir()) / "dip-core-users"
SETTLE_SECONDS = 1.0  # a registered command waits this long, so commands started together meet


def live_entries(registry: Path, skip: Path | None = None) -> list[dict]:
    """The registrations of running commands in `registry` (other than `skip`); a file whose
    lock can be taken belongs to a command that is gone, and is removed."""
    entries = []
    for path in sorted(registry.glob("*.json")) if registry.is_dir() else []:
        if path == skip:
            continue
        try:
            with open(path) as stream:
                try:
                    fcntl.flock(stream, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    entries.append(json.loads(stream.read()))
                    continue
            path.unlink(missing_ok=True)
        except (OSError, ValueError):
            continue
    return entries


class CoreShare:
    """This command's registration: `threads()` is what each of its workers should run."""

    def __init__(self, registry: Path, workers: int) -> None:
        self.registry = registry
        self.workers = workers
        self.cores = own_cores()
        self.path: Path | None = None
        self.stream = None

    def register(self) -> None:
        """Write and lock this command's file; without a writable registry, share nothing."""
        try:
            self.registry.mkdir(mode=0o1777, exist_ok=True)
            path = self.registry / f"{os.getpid()}-{uuid.uuid4().hex}.json"
            self.stream = open(path, "w")  # noqa: SIM115 (held until `release`)
            fcntl.flock(self.stream, fcntl.LOCK_EX)
            self.stream.write(json.dumps({"cores": sorted(self.cores), "workers": self.workers}))
            self.stream.flush()
            self.path = path
        except OSError as error:
            LOGGER.debug("no core registry (%s): not sharing cores", error)
            self.release()

    def release(self) -> None:
        """Remove and unlock this command's file (idempotent)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def threads(self, environ: Mapping[str, str] = os.environ) -> int:
        """Torch threads per worker: the available cores over every registered process on
        cores this command shares (its own workers included), at least one."""
        others = [
            entry
            for entry in live_entries(self.registry, self.path)
            if self.cores & set(entry.get("cores", []))
        ]
        processes = self.workers + sum(int(entry.get("workers", 1)) for entry in others)
        return max(1, available_cores(environ) // max(1, processes))

    def use_threads(self) -> int:
        """Set this process's torch threads to `threads()`; returns it."""
        threads = self.threads()
        torch.set_num_threads(threads)
        return threads


@contextlib.contextmanager
def sharing(
    workers: int, registry: Path = REGISTRY, settle: float = SETTLE_SECONDS
) -> Iterator[CoreShare]:
    """Register a command of `workers` CPU processes for the block, then wait `settle` seconds
    so that commands started together see each other (see the module's text). With no more
    cores than workers there is nothing to share: no registration, no wait."""
    share = CoreShare(registry, workers)
    if available_cores() > workers:
        share.register()
        time.sleep(settle if share.path is not None else 0)
    try:
        yield share
    finally:
        share.release()
