"""Test hook: hold a fit at a given iteration until a stop signal arrives, so that the signal
tests (tests/dip/test_cluster.py, test_hostile.py, test_slurm.py) signal a fit at a known
iteration instead of racing it.

`pause_environment(iteration, folder)` gives the variables a test adds to a run's environment:
$DIP_TEST_PAUSE_FOR_SIGNAL ("ITERATION:FOLDER") and this folder first on $PYTHONPATH. Every
Python process of the run (the script, dispatch's spawned workers, a SLURM job) then imports
`sitecustomize` from here at start, which patches `utils.dip.snapshots.StopOnRequest` when that
module is imported: a fit that reaches ITERATION touches FOLDER/paused_<pid> and waits there for
the signal. Production code knows nothing of it.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

PAUSE_ENVIRONMENT = "DIP_TEST_PAUSE_FOR_SIGNAL"
PATCHED_MODULE = "utils.dip.snapshots"
HOOKS = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class SignalPause:
    """A fit that reaches `iteration` touches `folder`/paused_<pid> and waits there until its
    stop request is set (RuntimeError after `timeout` seconds)."""

    iteration: int
    folder: Path
    timeout: float = 300.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> SignalPause | None:
        """The pause that $DIP_TEST_PAUSE_FOR_SIGNAL ("ITERATION:FOLDER") asks for, or None."""
        value = environ.get(PAUSE_ENVIRONMENT)
        if not value:
            return None
        iteration, separator, folder = value.partition(":")
        if not (separator and folder and iteration.isdigit()):
            raise ValueError(f"{PAUSE_ENVIRONMENT}={value!r}: expected ITERATION:FOLDER")
        return cls(int(iteration), Path(folder))

    def wait(self, request) -> None:
        """Touch this process's marker, then wait until `request.requested` (a StopRequest)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"paused_{os.getpid()}").touch()
        deadline = time.monotonic() + self.timeout
        while not request.requested:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{PAUSE_ENVIRONMENT}: no stop signal within {self.timeout:.0f} s "
                    f"at iteration {self.iteration}"
                )
            time.sleep(0.01)


def pause_environment(iteration: int, folder: Path) -> dict[str, str]:
    """The variables that make every fit of a run pause at `iteration` (markers in `folder`)."""
    path = os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")]))
    return {PAUSE_ENVIRONMENT: f"{iteration}:{folder}", "PYTHONPATH": path}


def pause_stop_requests(module: ModuleType, pause: SignalPause) -> None:
    """Make `module.StopOnRequest` wait at `pause.iteration` for its stop request."""
    on_iteration = module.StopOnRequest.on_iteration

    def paused_on_iteration(self, fit, output, losses) -> None:
        if fit.iteration == pause.iteration:
            pause.wait(self.request)
        on_iteration(self, fit, output, losses)

    module.StopOnRequest.on_iteration = paused_on_iteration


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the submodule `name` as the normal path finder does and runs `patch` on it right
    after it executes (then leaves the import system as it was)."""

    def __init__(self, name: str, patch: Callable[[ModuleType], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def install(environ: Mapping[str, str] = os.environ) -> None:
    """Called by sitecustomize at interpreter start: patch the fit's stop callback on import
    when $DIP_TEST_PAUSE_FOR_SIGNAL asks for a pause; nothing otherwise."""
    pause = SignalPause.from_environment(environ)
    if pause is not None:
        patch = PatchOnImport(PATCHED_MODULE, lambda module: pause_stop_requests(module, pause))
        sys.meta_path.insert(0, patch)
