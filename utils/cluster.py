"""Batch jobs: SLURM array shards, stopping on SIGTERM/SIGUSR1, plain log lines.

A SLURM array task is one shard of a folder: its position among the array's ids, not its id,
is the shard index (`--array=1-4` and `--array=0-30:2` have ids that are not 0..N-1).
On SIGTERM (preemption, time limit, `scancel`) or SIGUSR1 (`sbatch --signal=USR1@120`) the fit
stops at the next iteration, saves its state and the script exits with `REQUEUE_EXIT_CODE`.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Mapping

# sysexits.h EX_TEMPFAIL ("temporary failure, try again"): the state is saved, rerun to resume.
# The example sbatch scripts requeue the job on it; a site may set RequeueExit=75 instead.
REQUEUE_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Interrupted(Exception):
    """A fit stopped on a signal after saving its state."""


@dataclasses.dataclass
class StopRequest:
    """Set by a stop signal once `install()` ran; the fit loop reads `requested` every iteration."""

    signal_number: int | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signal_number is not None

    @property
    def signal_name(self) -> str:
        """The name of the signal that arrived (`SIGTERM`, ...), '' before one."""
        return "" if self.signal_number is None else signal.Signals(self.signal_number).name

    def handle(self, signal_number: int, frame: object) -> None:
        """Signal handler: record the signal (the fit loop does the rest)."""
        self.signal_number = signal_number

    def install(self) -> None:
        """Handle STOP_SIGNALS in this process (call from the main thread)."""
        for signal_number in STOP_SIGNALS:
            signal.signal(signal_number, self.handle)


def array_shard(environ: Mapping[str, str]) -> tuple[int, int]:
    """(num_shards, shard_index) of this SLURM array task from its environment; (1, 0) outside
    an array. Ids min, min+step, ..., max are shards 0..count-1; ValueError for an id list that
    is not such a range (`--array=1,3,7`), which needs explicit --num_shards/--shard_index."""
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return 1, 0
    try:
        task_id = int(environ["SLURM_ARRAY_TASK_ID"])
        count = int(environ.get("SLURM_ARRAY_TASK_COUNT", 1))
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", 1))
    except ValueError:
        raise ValueError("SLURM_ARRAY_TASK_* variables are not integers") from None
    last = int(environ.get("SLURM_ARRAY_TASK_MAX", first + (count - 1) * step))
    if step < 1 or count < 1 or (last - first) != (count - 1) * step or (task_id - first) % step:
        raise ValueError(
            f"SLURM array ids {first}-{last}:{step} ({count} tasks, this one {task_id}) are not "
            "an evenly stepped range; pass --num_shards and --shard_index"
        )
    return count, (task_id - first) // step


def is_terminal() -> bool:
    """Whether progress goes to a terminal (else: a log file, plain lines only)."""
    return sys.stderr.isatty()


def log_interval(num_iter: int, save_iter: int) -> int:
    """Iterations between progress lines in a log file: about a tenth of the fit, in snapshots."""
    return max(save_iter, round(num_iter / 10 / save_iter) * save_iter)
