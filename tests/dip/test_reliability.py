"""Bad input, interruptions and concurrent runs: what run_BDN.py, denoise.py and step 2 guarantee.

Each test is one guarantee of docs/RELIABILITY.md: a tool deletes or overwrites only files it
made, every bad input is one line naming the file (the other images are still done, and the
exit code says something failed), and a run folder's record describes every result in it.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import denoise
import generator_dataset
import run_BDN
from models.skip import SkipConfig, SkipNet
from tests.conftest import ROOT, make_pair, run_bdn_process, smooth_image
from utils import cli, image_io
from utils.dip import networks, reconstruction, run_guard, snapshots

FAST = [
    "--input_depth",
    "8",
    "--channels",
    "16",
    "--num_iter",
    "20",
    "--save_iter",
    "10",
    "--gpu_id",
    "cpu",
    "--quiet",
]
DENOISE_FAST = ["--num_iter", "20", "--save_iter", "10", "--early_stop", "none"]
DENOISE_FAST += ["--gpu_id", "cpu", "--quiet"]


def bdn_argv(folder: Path, output: Path, *extra: str, clean: bool = True) -> list[str]:
    argv = ["--dataset_real_path", str(folder / "real"), "--output_path", str(output), *FAST]
    if clean:
        argv += ["--dataset_mean_path", str(folder / "mean")]
    return argv + list(extra)


def run(folder: Path, output: Path, *extra: str, clean: bool = True) -> int:
    return run_BDN.main(run_BDN.parse_args(bdn_argv(folder, output, *extra, clean=clean)))


def save_tiny_network(path: Path, channels: int, output_channels: int = 3) -> None:
    config = SkipConfig(
        input_depth=8,
        channels_down=channels,
        channels_up=channels,
        output_channels=output_channels,
    )
    net = SkipNet(config)
    networks.save_network(path, config, net.state_dict(), "test", 0)


# Ownership: a tool deletes or overwrites only what it made.


def test_denoise_refuses_a_work_folder_it_did_not_make(tmp_path, caplog):
    output = tmp_path / "O"
    make_pair(tmp_path, "x", seed=1, with_clean=False)
    (output / "snapshots").mkdir(parents=True)
    shutil.copy(tmp_path / "real" / "x.png", output / "snapshots" / "x.png")
    args = denoise.parse_args([str(output / "snapshots"), "-o", str(output), *DENOISE_FAST])
    assert denoise.main(args) == 2
    assert (output / "snapshots" / "x.png").read_bytes() == (tmp_path / "real/x.png").read_bytes()
    assert "not a run folder" in caplog.text


def test_denoise_cleanup_keeps_files_it_did_not_write(tmp_path):
    make_pair(tmp_path, "a", seed=1, with_clean=False)
    output = tmp_path / "O"
    argv = [str(tmp_path / "real"), "-o", str(output), *DENOISE_FAST]
    assert denoise.main(denoise.parse_args([*argv, "--keep_snapshots"])) == 0
    (output / "snapshots" / "a" / "notes.txt").write_text("mine")
    (output / "snapshots" / "mine").mkdir()
    assert denoise.main(denoise.parse_args(argv)) == 0
    assert (output / "snapshots" / "a" / "notes.txt").read_text() == "mine"
    assert (output / "snapshots" / "mine").is_dir()
    assert not (output / "snapshots" / "a" / "metrics.csv").exists()
    assert sorted(path.name for path in (output / "snapshots" / "a").iterdir()) == ["notes.txt"]


def test_run_bdn_refuses_a_folder_that_is_not_a_run(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    output.mkdir()
    (output / "summary.csv").write_text("my own table")
    assert run(pairs, output) == 2
    assert (output / "summary.csv").read_text() == "my own table"
    assert "not a run folder" in caplog.text


def test_remove_run_deletes_only_the_files_a_run_writes(tmp_path):
    folder = tmp_path / "run" / "a"
    folder.mkdir(parents=True)
    for name in ("00010.png", "metrics.csv", "net.pt", "summary.json", "keep.png", ".lock"):
        (folder / name).write_text("x")
    (tmp_path / "run" / "args.json").write_text("{}")
    run_guard.remove_run(tmp_path / "run", ["a"])
    assert sorted(path.name for path in folder.iterdir()) == ["keep.png"]
    assert (tmp_path / "run" / "args.json").exists()  # the folder is not empty: still a run


# The record describes every result: inputs and settings.


def test_rerun_with_other_pixels_under_the_same_names_is_refused(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    assert run(pairs, output) == 0
    record = (output / "args.json").read_text()
    other = tmp_path / "other"
    make_pair(other, "a", seed=11)
    make_pair(other, "b", seed=12)
    assert run(other, output) == 2
    assert "differs" in caplog.text and "a.png" in caplog.text
    assert (output / "args.json").read_text() == record


def test_rerun_with_other_precision_is_refused(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    assert run(pairs, output, "--precision", "fp32") == 0
    assert run(pairs, output, "--precision", "bf16") == 2
    assert "precision" in caplog.text


def test_a_failed_start_does_not_block_the_corrected_rerun(pairs, tmp_path, caplog):
    network = tmp_path / "other.pt"
    save_tiny_network(network, channels=8)
    output = tmp_path / "out"
    assert run(pairs, output, "--init_from", str(network)) == 1
    assert "do not fit" in caplog.text
    assert not run_guard.holds_results(output)
    assert run(pairs, output) == 0
    assert json.loads((output / "args.json").read_text())["init_from"] == "scratch"


@pytest.mark.parametrize(
    "flag, value",
    [("--lr", "nan"), ("--lr", "inf"), ("--reg_noise_std", "nan"), ("--backtrack_db", "nan")],
)
def test_non_finite_numbers_are_flag_errors(pairs, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit):
        run_BDN.parse_args(bdn_argv(pairs, tmp_path / "out", flag, value))
    assert "finite" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# One bad file: one line naming it, the other images done, exit code 1.


def test_unreadable_file_is_one_line_and_the_rest_is_done(pairs, tmp_path, caplog, monkeypatch):
    locked = pairs / "real" / "a.png"
    read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    output = tmp_path / "out"
    assert run(pairs, output) == 1
    assert f"{locked}: cannot read (Permission denied)" in caplog.text
    assert (output / "b" / "summary.json").exists()


# root reads every file through these two capabilities; without them its permission bits apply
PERMISSION_BYPASS = "-dac_override,-dac_read_search"


def test_file_without_read_permission(pairs, tmp_path, caplog):
    """Unreadable input: one line, the other image still done. As root (as in CI) run_BDN.py
    runs in a process that has lost the capabilities that let root read any file."""
    (pairs / "real" / "a.png").chmod(0)
    if os.geteuid() != 0:
        assert run(pairs, tmp_path / "out") == 1
        assert "Permission denied" in caplog.text
        return
    if shutil.which("setpriv") is None:
        pytest.skip("root needs setpriv (util-linux) to drop its permission bypass")
    setpriv = ["setpriv", f"--inh-caps={PERMISSION_BYPASS}", f"--bounding-set={PERMISSION_BYPASS}"]
    completed = subprocess.run(
        [*setpriv, sys.executable, str(ROOT / "run_BDN.py"), *bdn_argv(pairs, tmp_path / "out")],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert f"{pairs / 'real' / 'a.png'}" in completed.stderr
    assert "Permission denied" in completed.stderr
    assert (tmp_path / "out" / "b" / "summary.json").exists()


def test_file_name_that_is_not_utf8(pairs, tmp_path, caplog):
    name = os.fsdecode(b"\xff\xfe.png")
    shutil.copy(pairs / "real" / "a.png", pairs / "real" / name)
    output = tmp_path / "out"
    assert run(pairs, output) == 1
    assert r"\xff\xfe.png: file name is not valid UTF-8" in caplog.text
    assert "white space" not in caplog.text  # refused before the labelling check warns of it
    caplog.text.encode("utf-8")  # every message can go to a UTF-8 log file
    assert (output / "a" / "summary.json").exists() and (output / "b" / "summary.json").exists()


def test_init_network_that_does_not_fit_one_image_fails_only_that_image(tmp_path, caplog):
    make_pair(tmp_path, "colour", seed=1)
    make_pair(tmp_path, "gray", channels=1, seed=2)
    network = tmp_path / "colour.pt"
    save_tiny_network(network, channels=16)
    output = tmp_path / "out"
    assert run(tmp_path, output, "--init_from", str(network)) == 1
    assert (output / "colour" / "summary.json").exists()
    assert not (output / "gray" / "summary.json").exists()
    assert "gray.png" in caplog.text and "do not fit" in caplog.text


@pytest.mark.parametrize("kind", ["dangling", "looping"])
def test_broken_symbolic_links_are_reported(pairs, tmp_path, caplog, kind):
    link = pairs / "real" / "c.png"
    link.symlink_to(pairs / "real" / "missing.png" if kind == "dangling" else link)
    output = tmp_path / "out"
    assert run(pairs, output) == 1
    assert f"{link}: symbolic link" in caplog.text
    assert (output / "a" / "summary.json").exists()


def test_two_references_with_one_stem_are_refused(pairs, tmp_path, caplog):
    shutil.copy(pairs / "mean" / "a.png", pairs / "mean" / "a.tif")
    assert run(pairs, tmp_path / "out") == 2
    assert "share a name" in caplog.text and "a.tif" in caplog.text


# One line instead of a traceback.


def test_output_path_that_is_a_file(pairs, tmp_path, caplog):
    output = tmp_path / "file"
    output.write_text("not a folder")
    assert run(pairs, output) == 2
    assert "is a file" in caplog.text
    assert output.read_text() == "not a folder"


def test_output_path_under_a_file(pairs, tmp_path, caplog):
    (tmp_path / "file").write_text("x")
    assert run(pairs, tmp_path / "file" / "out") == 2
    assert "cannot write the output folder" in caplog.text


def test_init_from_a_file_that_is_not_a_network(pairs, tmp_path, capsys):
    garbage = tmp_path / "net.pt"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(SystemExit):
        run_BDN.parse_args(bdn_argv(pairs, tmp_path / "out", "--init_from", str(garbage)))
    assert "not a usable network file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        denoise.parse_args(
            [str(pairs / "real"), "-o", str(tmp_path / "d"), "--init_from", str(garbage)]
        )
    assert "not a usable network file" in capsys.readouterr().err


def test_truncated_resume_state_says_what_to_do(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    assert run(pairs, output) == 0
    for stem in ("a", "b"):
        (output / stem / "summary.json").unlink()
    net = (output / "a" / "net.pt").read_bytes()
    (output / "a" / "state.pt").write_bytes(net[: len(net) // 2])
    assert run(pairs, output) == 1
    assert "a/state.pt: damaged resume state" in caplog.text
    assert "delete it to refit a from the start" in caplog.text
    assert (output / "b" / "summary.json").exists()


def fsize_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_too_large_is_one_line_per_image_and_every_image_is_tried(pairs, tmp_path):
    """`ulimit -f`: snapshots (about 10 kB) fit, the network file (about 100 kB) does not."""
    output = tmp_path / "out"
    result = run_bdn_process(bdn_argv(pairs, output), preexec_fn=fsize_limit(40_000))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for stem in ("a", "b"):
        assert f"{stem}.png: cannot write its results (File too large" in result.stderr
        assert not (output / stem / "summary.json").exists()
    assert not list(output.rglob("*.tmp"))


def test_disk_full_on_a_tiny_tmpfs(pairs, tmp_path):
    """ENOSPC on a 300 kB tmpfs mounted in a private mount namespace (needs root and unshare):
    one line per image that could not be written, every image tried, no temporary file left."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=300k tmpfs {mount}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {probe.stderr.strip()}")
    output = mount / "out"
    command = (
        f"mount -t tmpfs -o size=300k tmpfs {mount} && {sys.executable} run_BDN.py "
        + " ".join(bdn_argv(pairs, output))
        + f"; echo exit=$?; ls {output}/*/summary.json; find {output} -name '*.tmp'"
    )
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "exit=1" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr and ".tmp" not in result.stdout
    failed = {
        stem
        for stem in "ab"
        if f"real/{stem}.png: cannot write its results (No space" in result.stderr
    }
    finished = {stem for stem in "ab" if f"out/{stem}/summary.json" in result.stdout}
    assert failed and failed | finished == {"a", "b"} and not failed & finished


def test_read_only_output_is_one_line(pairs, tmp_path):
    """A read-only tmpfs (EROFS; root ignores permission bits, so this stands for "not
    writable"), mounted in a private mount namespace; skipped where that is not allowed."""
    mount = tmp_path / "readonly"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro,size=64k tmpfs {mount}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {probe.stderr.strip()}")
    command = (
        f"mount -t tmpfs -o ro,size=64k tmpfs {mount} && exec {sys.executable} run_BDN.py "
        + " ".join(bdn_argv(pairs, mount / "out"))
    )
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot write the output folder" in result.stderr
    assert "Read-only file system" in result.stderr


# Step 2.


def fake_run(folder: Path, stem: str, rows: int, iterations: int) -> Path:
    """A finished run_BDN image folder with `rows` snapshots every 10 iterations."""
    image = folder / stem
    image.mkdir(parents=True)
    lines = ["iteration,loss,psnr_noisy,psnr_raw,ssim_raw,psnr_avg,ssim_avg"]
    for row in range(1, rows + 1):
        lines.append(f"{10 * row},0.01,25,30,0.9,{25 + row},0.9")
        image_io.write_png(image / f"{10 * row:05d}.png", smooth_image(8, 8, 3, row))
    (image / "metrics.csv").write_text("\n".join(lines) + "\n")
    summary = {"iterations": iterations, "stop_iteration": None}
    (image / "summary.json").write_text(json.dumps(summary))
    return image


def label(folder: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    argv = ["--dataset_path", str(folder), "--output_path", str(tmp_path / "labels.txt")]
    code = generator_dataset.main(generator_dataset.parse_args([*argv, "--start_position", "0"]))
    return code, capsys.readouterr().err


def test_step2_refuses_metrics_cut_at_a_row_boundary(tmp_path, capsys):
    fake_run(tmp_path / "run", "a", rows=3, iterations=40)
    code, error = label(tmp_path / "run", tmp_path, capsys)
    assert code == 2
    assert "metrics.csv: rows end at iteration 30" in error and "up to 40" in error
    assert not (tmp_path / "labels.txt").exists()


def test_step2_accepts_complete_metrics(tmp_path, capsys):
    fake_run(tmp_path / "run", "a", rows=4, iterations=45)
    assert label(tmp_path / "run", tmp_path, capsys)[0] == 0


@pytest.mark.parametrize("stem", ["my image", "bell\x07"])
def test_step2_names_an_image_whose_name_has_a_space(stem, tmp_path, capsys):
    fake_run(tmp_path / "run", stem, rows=2, iterations=20)
    code, error = label(tmp_path / "run", tmp_path, capsys)
    assert code == 2
    assert f"{cli.one_line(stem)}: a name with white space or an unprintable character" in error
    assert "rename" in error and "Traceback" not in error


# Two processes, one output folder.


def test_two_runs_of_one_command_share_the_images(tmp_path):
    for index, stem in enumerate("abc"):
        make_pair(tmp_path, stem, seed=index)
    reference = tmp_path / "reference"
    assert run(tmp_path, reference) == 0
    output = tmp_path / "out"
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, str(ROOT / "run_BDN.py"), *bdn_argv(tmp_path, output)]
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(process.wait(timeout=300), process.stderr.read()) for process in processes]
    for code, error in results:
        assert code in (0, 1) and "Traceback" not in error, error
        assert code == 0 or "another process is fitting" in error
    for stem in "abc":
        assert (output / stem / "summary.json").exists()
        for name in ("metrics.csv", "00010.png", "00020.png"):
            expected = (reference / stem / name).read_bytes()
            assert (output / stem / name).read_bytes() == expected, (stem, name)
    summary_rows = (output / "summary.csv").read_text().splitlines()
    assert len(summary_rows) == 4


def test_a_second_run_with_other_settings_is_refused_while_the_first_writes(pairs, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    record = reconstruction.run_record(
        run_BDN.settings(run_BDN.parse_args(bdn_argv(pairs, output))), pairs, None
    )
    with reconstruction.start_folder(output, record, []):
        other = dict(record, seed=record["seed"] + 1)
        with pytest.raises(ValueError, match="other settings"):
            reconstruction.start_folder(output, other, [])
    with reconstruction.start_folder(output, dict(record, seed=5), []):
        pass  # alone, and no results: a changed record replaces the old one
    assert json.loads((output / "args.json").read_text())["seed"] == 5


def test_resume_iteration_reads_the_state_or_names_the_damaged_file(tmp_path):
    folder = tmp_path / "out" / "a"
    folder.mkdir(parents=True)
    assert snapshots.resume_iteration(folder) == 0
    tensor = torch.zeros(1)
    fit = {"iteration": 30, "net": {"w": tensor}, "optimizer": {}, "base_input": tensor}
    fit |= {"generator": torch.zeros(8, dtype=torch.uint8), "last_psnr": tensor}
    fit |= {"last_good": [tensor], "average": None}
    torch.save({"fit": fit, "rows": [], "elapsed": 0.0}, folder / "state.pt")
    assert snapshots.resume_iteration(folder) == 30
    torch.save({"nothing": 1}, folder / "state.pt")
    with pytest.raises(ValueError, match="state.pt: damaged resume state"):
        snapshots.resume_iteration(folder)


def test_an_image_another_process_is_fitting_is_left_to_it(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    record = reconstruction.run_record(
        run_BDN.settings(run_BDN.parse_args(bdn_argv(pairs, output))),
        pairs / "real",
        pairs / "mean",
    )
    with reconstruction.start_folder(output, record, []), run_guard.claim([output / "a"]) as got:
        assert got == [None]
        assert run(pairs, output) == 1
    assert "a.png: another process is fitting this image" in caplog.text
    assert not (output / "a" / "summary.json").exists()
    assert (output / "b" / "summary.json").exists()
    assert run(pairs, output) == 0
    assert (output / "a" / "summary.json").exists()


def test_rerun_with_a_reference_added_is_refused(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    assert run(pairs, output, clean=False) == 0
    assert run(pairs, output) == 2
    assert "clean input None" in caplog.text


def test_a_chain_stops_at_an_image_another_process_is_fitting(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    argv = bdn_argv(pairs, output, "--init_from", "previous")
    settings = run_BDN.settings(run_BDN.parse_args(argv))
    record = reconstruction.run_record(settings, pairs / "real", pairs / "mean")
    with reconstruction.start_folder(output, record, []), run_guard.claim([output / "a"]):
        assert run_BDN.main(run_BDN.parse_args(argv)) == 1
    assert "a.png: another process is fitting this image" in caplog.text
    assert not (output / "b" / "summary.json").exists()  # b would start from a's network
    assert run_BDN.main(run_BDN.parse_args(argv)) == 0
    assert json.loads((output / "b" / "summary.json").read_text())["init"] == "previous"


@pytest.mark.parametrize("stem", ["my image", "bell\x07"])
def test_step1_warns_of_a_name_step2_cannot_label(stem, tmp_path, caplog):
    make_pair(tmp_path, stem, seed=1)
    assert run(tmp_path, tmp_path / "out") == 0
    expected = f"{stem}.png: a name with white space or an unprintable character cannot be labelled"
    assert expected in caplog.text


def test_a_file_system_without_locks_warns_and_runs(pairs, tmp_path, caplog, monkeypatch):
    def no_locks(stream, operation) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_guard.fcntl, "flock", no_locks)
    output = tmp_path / "out"
    assert run(pairs, output) == 0
    assert caplog.text.count("does not support locks (No locks available)") == 1
    assert (output / "a" / "summary.json").exists() and (output / "b" / "summary.json").exists()


def test_a_diverged_fit_fails_instead_of_reporting_a_psnr(pairs, tmp_path, caplog):
    output = tmp_path / "out"
    assert run(pairs, output, "--lr", "1e30") == 1
    assert "the fit diverged (loss not finite at iteration 10); lower --lr" in caplog.text
    assert not (output / "a" / "summary.json").exists()
    assert len((output / "summary.csv").read_text().splitlines()) == 1  # the header only
