"""Shared fixtures: tiny synthetic noisy/clean folders, a CPU device, real-data location."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import image_io

ROOT = Path(__file__).resolve().parents[1]  # the repository


def unpack_commit(commit: str, folder: Path, *paths: str) -> Path:
    """`paths` (default: everything) of the repository at `commit`, unpacked into `folder`
    with `git archive`; the test is skipped without git or without that commit."""
    if shutil.which("git") is None:
        pytest.skip("git not found")
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    if known.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone's history")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, *paths], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def reference_code_fixture(commit: str):
    """A module-scoped fixture: the code of `commit`, unpacked once for the test module (the
    byte-identical tests run the scripts before and after a change)."""

    @pytest.fixture(scope="module")
    def reference_code(tmp_path_factory) -> Path:
        return unpack_commit(commit, tmp_path_factory.mktemp("reference_code"))

    return reference_code


SHARED_DATA = ROOT.parent / "shared" / "data"


def run_scripts(code: Path, work: Path, commands: list[list[str]]) -> None:
    """Run `commands` (a script name, then its flags) with the scripts of the code in `code`,
    in the new working folder `work`, one thread each; a failing one fails the test."""
    work.mkdir(parents=True)
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "KERAS_BACKEND": "torch",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    environment.pop("PYTHONPATH", None)
    for command in commands:
        result = subprocess.run(
            [sys.executable, str(code / command[0]), *command[1:]],
            cwd=work,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{code / command[0]} failed:\n{result.stderr[-3000:]}"


def same_bytes(before: Path, after: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The files matching `patterns` under `before`, relative to it, after checking that
    `after` holds the same files with the same bytes."""
    files = sorted(
        path.relative_to(before) for pattern in patterns for path in before.glob(pattern)
    )
    assert files == sorted(
        path.relative_to(after) for pattern in patterns for path in after.glob(pattern)
    )
    differing = [
        str(path) for path in files if not filecmp.cmp(before / path, after / path, shallow=False)
    ]
    assert differing == []
    return files


def run_bdn_process(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """run_BDN.py in a fresh process (one thread, no bytecode written), its output captured."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "run_BDN.py"), *argv],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **kwargs,
    )


# The tests fit tiny networks: one thread is as fast and avoids oversubscribing a busy machine
# (the scripts take their thread count from OMP_NUM_THREADS, `devices.available_cores`).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# The commands the tests start keep the allocator they are given: with LD_PRELOAD set (empty
# where unset), run_BDN.py and denoise.py do not start again with tcmalloc (utils/dip/allocator.py,
# tested on its own), so the suite runs the same with it installed or not.
os.environ.setdefault("LD_PRELOAD", "")


def smooth_image(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """A smooth random image in [0, 1], HWC (HW when channels == 1)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    layers = [
        0.5
        + 0.4
        * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform()))
        for _ in range(channels)
    ]
    image = np.stack(layers, axis=-1)
    return image[..., 0] if channels == 1 else image


def make_pair(
    folder: Path,
    stem: str,
    height: int = 64,
    width: int = 64,
    channels: int = 3,
    seed: int = 0,
    suffix: str = ".png",
    with_clean: bool = True,
) -> None:
    """Write `folder/real/<stem><suffix>` (noisy) and, optionally, `folder/mean/<stem>.png` (clean)."""
    clean = smooth_image(height, width, channels, seed)
    noisy = np.clip(clean + np.random.default_rng(seed + 100).normal(0, 0.08, clean.shape), 0, 1)
    if with_clean:
        image_io.write_png(folder / "mean" / f"{stem}.png", clean)
    (folder / "real").mkdir(parents=True, exist_ok=True)
    if suffix.lower() == ".png":
        image_io.write_png(folder / "real" / f"{stem}{suffix}", noisy)
    else:
        import cv2

        array = image_io.quantize(noisy, 8)
        if array.ndim == 3:
            array = array[..., ::-1]
        cv2.imwrite(str(folder / "real" / f"{stem}{suffix}"), array)


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """Two 64x64 colour pairs, a and b."""
    make_pair(tmp_path, "a", seed=1)
    make_pair(tmp_path, "b", seed=2)
    return tmp_path


@pytest.fixture
def device() -> torch.device:
    """The device tests run on: CPU (GPU-only tests use the `gpu` marker)."""
    return torch.device("cpu")


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device("cuda", 0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-noise data not found at {SHARED_DATA}")
    return SHARED_DATA
