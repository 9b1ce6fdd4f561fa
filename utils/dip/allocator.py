"""tcmalloc for the DIP commands: glibc's malloc maps every block over 32 MB afresh from the
kernel and gives it back when it is freed, so a fit of 256 px or more faults in and zeroes new
pages for its activations at every iteration; with tcmalloc preloaded the same fit runs 1.3-2.8x
faster, its numbers the same bit for bit (docs/PERFORMANCE.md, "Memory: preload tcmalloc")."""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping, Sequence

LIBRARY = "tcmalloc_minimal"  # Debian and Ubuntu: libtcmalloc-minimal4


def restart_command(
    environment: Mapping[str, str], platform: str, library: str | None, argv: Sequence[str]
) -> list[str] | None:
    """The command line that starts this process again with `library` preloaded, or None where
    it should go on as it is: not Linux, no such library, or LD_PRELOAD already set (by the
    user, who may set it empty to keep glibc's malloc, or by the restart itself).

    `argv`: the interpreter's whole command line (`sys.orig_argv`: interpreter, its options,
    the script and its flags)."""
    if platform != "linux" or library is None or "LD_PRELOAD" in environment:
        return None
    return [sys.executable, *argv[1:]]


def preload_tcmalloc() -> None:
    """Replace this process (same PID, so signals still reach it) by the same command with
    tcmalloc preloaded, where `restart_command` says so; call it first, before any output."""
    library = ctypes.util.find_library(LIBRARY) if sys.platform == "linux" else None
    command = restart_command(os.environ, sys.platform, library, sys.orig_argv)
    if command is not None:
        os.execve(sys.executable, command, {**os.environ, "LD_PRELOAD": library})
