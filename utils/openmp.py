"""OpenMP's waiting policy for the CPU, set before torch (or Keras on torch) loads libgomp.

With OMP_WAIT_POLICY unset, libgomp's threads spin at every barrier for a while before they
sleep. When two commands share the cores, one command's spinning threads hold the cores that
the other command's threads are waiting for, and both crawl; waiting passively, each thread
gives its core up at once (the measurements: docs/REPRODUCTION.md, "The CPU fast path";
`python -m bench.bench_cpu --contention 128`).
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def wait_passively() -> None:
    """Set OMP_WAIT_POLICY to `WAIT_POLICY` unless it is set already. Call it before the first
    `import torch`: libgomp reads the variable once, when it is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
