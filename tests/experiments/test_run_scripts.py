"""experiments/runs_setup.sh: `pending_crops` and `pending_stems`, the crops a run script still
has to fit, so that a new machine (an empty devdata/) fits only what results/ lacks;
`native_precision`, the refusal of bf16 runs on a CPU without bf16 instructions."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

RUNS_SETUP = Path(__file__).resolve().parents[2] / "experiments" / "runs_setup.sh"
STEMS = ("a", "b", "c", "d")


def pending(folder: Path, *args: str, shard: str = "", function: str = "pending_crops") -> str:
    """What `FUNCTION ARGS` (runs_setup.sh's) prints, run in `folder` (SHARD set when `shard` is
    given)."""
    env = {"PATH": os.environ["PATH"]} | ({"SHARD": shard} if shard else {})
    command = f'. "{RUNS_SETUP}"; {function} "$@"'
    done = subprocess.run(
        ["bash", "-c", command, "bash", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def stems(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.iterdir())


@pytest.fixture
def crops(tmp_path: Path) -> Path:
    """tmp_path/crops/{real,mean} with the pairs STEMS (PNG noisy, JPEG clean)."""
    for stem in STEMS:
        for side, suffix in (("real", ".png"), ("mean", ".jpg")):
            (tmp_path / "crops" / side).mkdir(parents=True, exist_ok=True)
            (tmp_path / "crops" / side / f"{stem}{suffix}").write_bytes(stem.encode())
    (tmp_path / "results").mkdir()
    return tmp_path


def add_rows(folder: Path, *names: str) -> None:
    for stem in names:
        (folder / "results" / f"{stem}.csv").write_text("iteration\n")


def test_only_crops_without_rows_are_pending(crops):
    add_rows(crops, "a", "c")
    assert pending(crops, "crops", "results", "todo") == "todo"
    assert stems(crops / "todo" / "real") == ["b", "d"]
    assert stems(crops / "todo" / "mean") == ["b", "d"]
    assert (crops / "todo" / "mean" / "b.jpg").read_bytes() == b"b"


def test_nothing_is_pending_once_every_crop_has_rows(crops):
    add_rows(crops, *STEMS)
    assert pending(crops, "crops", "results", "todo") == ""
    assert not (crops / "todo").exists()  # asking makes no folder


def test_a_named_crop_is_pending_with_its_rows(crops):
    add_rows(crops, *STEMS)
    assert pending(crops, "crops", "results", "source", "c") == "source"
    assert stems(crops / "source" / "real") == ["c"]


def test_named_crops_are_pending_with_their_rows(crops):
    add_rows(crops, *STEMS)
    assert pending(crops, "crops", "results", "pair", "d b") == "pair"
    assert stems(crops / "pair" / "real") == ["b", "d"]


def test_pending_stems_are_the_crops_without_rows_in_name_order(crops):
    add_rows(crops, "b")
    assert pending(crops, "crops", "results", function="pending_stems").split() == ["a", "c", "d"]
    add_rows(crops, "a", "c", "d")
    assert pending(crops, "crops", "results", function="pending_stems") == ""


def test_pending_stems_have_rows_in_none_of_the_results_folders(crops):
    """polyu256's crops: rows in bf16 or in fp32 both count as fitted."""
    add_rows(crops, "b")
    (crops / "other").mkdir()
    (crops / "other" / "c.csv").write_text("iteration\n")
    found = pending(crops, "crops", "results", "other", function="pending_stems")
    assert found.split() == ["a", "d"]


def test_shards_count_over_every_crop(crops):
    add_rows(crops, "b")
    assert pending(crops, "crops", "results", "shard", shard="2 1") == "shard"
    assert stems(crops / "shard" / "real") == ["d"]  # b and d are shard 1 of 2; b has rows


def test_every_fit_and_training_of_scale_runs_goes_to_gpu_id():
    """scale_runs.sh's run_BDN.py, transfer and BIQAN commands take their device from GPU_ID
    (default cpu), so that `GPU_ID=0 experiments/scale_runs.sh` runs the study on a GPU."""
    script = (RUNS_SETUP.parent / "scale_runs.sh").read_text().replace("\\\n", " ")
    commands = [
        line
        for line in script.splitlines()
        if any(
            tool in line for tool in ('run_BDN.py"', "experiments.transfer run", "biqan_scale -")
        )
    ]
    assert len(commands) == 4
    assert all('--gpu_id "${GPU_ID:-cpu}"' in line for line in commands)


@pytest.mark.parametrize(
    ("instructions", "precision", "gpu_id", "refused"),
    [
        ("", "bf16", "", True),
        ("", "bf16", "cpu", True),
        ("avx512_bf16", "bf16", "", False),
        ("", "fp32", "", False),
        ("", "bf16", "0", False),  # a GPU: its own bf16, not the CPU's
    ],
)
def test_bf16_runs_need_a_cpu_with_bf16_instructions(
    tmp_path, instructions, precision, gpu_id, refused
):
    python = tmp_path / "python"  # stands in for PY: prints what bf16_instructions() would
    python.write_text(f"#!/bin/sh\necho '{instructions}'\n")
    python.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PY": str(python)} | ({"GPU_ID": gpu_id} if gpu_id else {})
    done = subprocess.run(
        ["bash", "-c", f'. "{RUNS_SETUP}"; native_precision "$1" "$2"', "bash", precision, "use X"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (done.returncode != 0) == refused
    assert ("no bf16 instructions" in done.stderr) == refused
    assert done.stderr.rstrip().endswith(", or use X") == refused  # the caller's alternative


@pytest.mark.parametrize(
    ("precision", "pooling_status", "error"),
    [
        ("bf16", 0, "polyu256 fits in fp32"),
        ("", 1, "section 8's check has not passed"),
    ],
)
def test_the_polyu256_list_starts_only_in_fp32_once_the_check_passed(
    tmp_path, precision, pooling_status, error
):
    """scale_runs.sh polyu256 (fp32 stand-ins for bf16 tuning crops) refuses before any fit:
    in another precision, or while `precision_study pooling` says the check has not passed."""
    python = tmp_path / "python"  # stands in for PY: the pooling verdict's exit status
    python.write_text(f"#!/bin/sh\necho verdict\nexit {pooling_status}\n")
    python.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PY": str(python), "CODE": str(tmp_path)}
    env |= {"PRECISION": precision} if precision else {}
    done = subprocess.run(
        ["bash", str(RUNS_SETUP.parent / "scale_runs.sh"), "polyu256"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {error}")
    assert done.stdout.strip() == ("verdict" if pooling_status else "")


def scripts_copy(repository: Path) -> Path:
    """scale_runs.sh and runs_setup.sh copied into repository/experiments (the repository they
    work in), and a stand-in for PY there that writes down each command it is given to
    repository/calls and its OMP_NUM_THREADS to repository/threads (and exits 0); returns the
    stand-in."""
    (repository / "experiments").mkdir()
    for script in ("scale_runs.sh", "runs_setup.sh"):
        source = RUNS_SETUP.parent / script
        (repository / "experiments" / script).write_bytes(source.read_bytes())
    python = repository / "python"
    python.write_text(
        f'#!/bin/sh\necho "$*" >> "{repository / "calls"}"\n'
        f'echo "$OMP_NUM_THREADS" >> "{repository / "threads"}"\n'
    )
    python.chmod(0o755)
    return python


def run_list(repository: Path, name: str) -> list[str]:
    """The commands that `PRECISION=fp32 scale_runs.sh NAME` gives PY, run in its copy."""
    env = {"PATH": os.environ["PATH"], "PY": str(scripts_copy(repository))}
    subprocess.run(
        ["bash", str(repository / "experiments" / "scale_runs.sh"), name],
        env=env | {"CODE": "code", "PRECISION": "fp32"},
        capture_output=True,
        check=True,
    )
    return (repository / "calls").read_text().splitlines()


def fitted_stems(repository: Path, commands: list[str]) -> list[list[str]]:
    """The crops of each run_BDN.py command among `commands`, in their order."""
    fits = [command.split() for command in commands if command.startswith("code/run_BDN.py")]
    return [stems(repository / fit[fit.index("--dataset_real_path") + 1]) for fit in fits]


def make_crops(folder: Path, names: list[str]) -> None:
    """Empty noisy/clean files `folder`/{real,mean}/<name>.{png,jpg} (the scripts copy them)."""
    for name in names:
        for side, suffix in (("real", ".png"), ("mean", ".jpg")):
            (folder / side).mkdir(parents=True, exist_ok=True)
            (folder / side / f"{name}{suffix}").write_bytes(b"")


def test_the_fp32_list_runs_polyu256_then_cc512_on_two_threads(tmp_path):
    """`scale_runs.sh fp32`, a CPU without bf16 start to end: the PolyU30 crops at 256 px, two
    one-thread processes a pair, BIQAN at 256 px on them (both kinds of labels, in fp32), then
    each CC image at 512 px alone on two threads."""
    make_crops(tmp_path / "devdata" / "crops256" / "PolyU", ["s00", "s01", "s02", "s03"])
    (tmp_path / "devdata" / "crops256" / "CC").mkdir()
    make_crops(tmp_path / "devdata" / "crops512" / "CC", ["a", "b"])
    commands = run_list(tmp_path, "fp32")
    assert fitted_stems(tmp_path, commands) == [["s00", "s03"], ["s00", "s03"], ["a"], ["b"]]
    threads = (tmp_path / "threads").read_text().split()
    fits = [
        (command.split(), count)
        for command, count in zip(commands, threads)
        if command.startswith("code/run_BDN.py")
    ]
    assert [count for _, count in fits] == ["1", "1", "2", "2"]
    assert [fit[fit.index("--num_iter") + 1] for fit, _ in fits] == ["3000"] * 2 + ["5000"] * 2
    trainings = [command for command in commands if "biqan_scale" in command]
    assert len(trainings) == 2
    assert all(
        "--precision fp32" in command and "--min_images 20" in command for command in trainings
    )
    stages = [  # the fits' output folders devdata/scale/<size>px/..., and the trainings
        "biqan" if "biqan_scale" in command else command.split("--output_path ")[1].split("/")[2]
        for command in commands
        if "biqan_scale" in command or command.startswith("code/run_BDN.py")
    ]
    assert [stage for stage, _ in itertools.groupby(stages)] == ["256px", "biqan", "512px"]


def test_polyu256_resumes_the_crops_with_saved_state_first(tmp_path):
    """`scale_runs.sh polyu256`: PolyU30's crops without rows, two processes a pair, each pair
    collected; first the crops a stopped run saved state for, the furthest on first, then every
    5th of the others."""
    polyu = tmp_path / "devdata" / "crops256" / "PolyU"
    make_crops(polyu, [f"s{index:02d}" for index in range(24)])  # PolyU30: s00, s03, ..., s21
    (tmp_path / "devdata" / "crops256" / "CC").mkdir()
    rows = tmp_path / "results" / "scale" / "256px" / "bf16" / "PolyU30_s0"
    rows.mkdir(parents=True)
    (rows / "s00.csv").write_text("iteration\n")
    for stem, iteration in (("s12", 100), ("s06", 700), ("s21", 400)):  # stopped there
        stopped = tmp_path / "devdata" / "scale" / "256px" / "fp32" / "PolyU30_s0" / stem
        stopped.mkdir(parents=True)
        (stopped / "state.pt").write_bytes(b"")
        (stopped / "metrics.csv").write_text(f"iteration,loss\n{iteration - 20},1\n{iteration},1\n")
    commands = run_list(tmp_path, "polyu256")
    pairs = [["s06", "s21"], ["s03", "s12"], ["s09", "s18"], ["s15"]]
    assert fitted_stems(tmp_path, commands) == [pair for pair in pairs for _ in range(2)]
    collects = [index for index, command in enumerate(commands) if " collect " in command]
    assert len(collects) == 4


@pytest.mark.parametrize(
    ("size", "iterations", "checkpoint_every"), [("256", "3000", None), ("512", "5000", "100")]
)
def test_the_cc_lists_fit_each_pending_image_alone_and_collect_it(
    tmp_path, crops, size, iterations, checkpoint_every
):
    """`PRECISION=fp32 scale_runs.sh cc<SIZE>`, run on a copy of the scripts (whose folder is
    the repository it works in): one run_BDN.py per CC image without rows, in name order, each
    followed by its collect; at 512 px LARGE_ITERATIONS and the state saved every 100."""
    (tmp_path / "devdata" / f"crops{size}").mkdir(parents=True)
    (crops / "crops").rename(tmp_path / "devdata" / f"crops{size}" / "CC")
    rows = tmp_path / "results" / "scale" / f"{size}px" / "fp32" / "CC_s0"
    rows.mkdir(parents=True)
    (rows / "b.csv").write_text("iteration\n")
    commands = run_list(tmp_path, f"cc{size}")
    assert fitted_stems(tmp_path, commands) == [["a"], ["c"], ["d"]]
    fits = [command.split() for command in commands if command.startswith("code/run_BDN.py")]
    for fit in fits:
        assert fit[fit.index("--num_iter") + 1] == iterations
        assert fit[fit.index("--precision") + 1] == "fp32"
        saved = fit[fit.index("--checkpoint_every") + 1] if "--checkpoint_every" in fit else None
        assert saved == checkpoint_every
    collects = [index for index, command in enumerate(commands) if " collect " in command]
    assert len(collects) == 3
    assert all(commands[index - 1].startswith("code/run_BDN.py") for index in collects)


@pytest.mark.parametrize("installed", [True, False])
def test_runs_setup_preloads_tcmalloc_where_it_is_installed(tmp_path, installed):
    """The fits of the run scripts get tcmalloc (results/bench/cpu_2026-12-07_allocator.md)
    where ldconfig knows it, and the C library's malloc otherwise."""
    tools = tmp_path / "bin"  # an ldconfig that lists tcmalloc, or nothing
    tools.mkdir()
    listing = "\tlibtcmalloc_minimal.so.4 (libc6,x86-64) => /lib/tc.so.4\\n" if installed else ""
    (tools / "ldconfig").write_text(f"#!/bin/sh\nprintf '\\tlibc.so.6 => /lib/c.so\\n{listing}'\n")
    (tools / "ldconfig").chmod(0o755)
    env = {"PATH": f"{tools}:{os.environ['PATH']}", "CODE": "code", "PY": "python"}
    done = subprocess.run(
        ["bash", "-c", f'. "{RUNS_SETUP}"; runs_setup; echo "$LD_PRELOAD"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == ("/lib/tc.so.4" if installed else "")
