"""utils/run_output.py: reading run_BDN output folders, with clear errors for broken ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.biqan.helpers import HEADER, write_fake_image_folder
from tests.conftest import ROOT
from utils import run_output


def test_reads_metrics_and_lists_finished_folders(tmp_path: Path):
    write_fake_image_folder(tmp_path, "b", [20, 40, 60], [30.0, 31.0, 30.5], size=8)
    write_fake_image_folder(tmp_path, "a", [20, 40], None, size=8)
    write_fake_image_folder(tmp_path, "c", [20], [30.0], size=8, finished=False)
    (tmp_path / "notes").mkdir()
    folders = run_output.list_image_folders(tmp_path)
    assert [folder.name for folder in folders.finished] == ["a", "b"]
    reasons = {folder.name: reason for folder, reason in folders.skipped}
    assert "not a run_BDN image folder" in reasons["notes"]
    assert "did not finish" in reasons["c"]
    blind, referenced = (run_output.read_metrics(folder) for folder in folders.finished)
    assert not blind.has_reference and np.all(np.isnan(blind.true_psnr))
    assert referenced.has_reference and referenced.name == "b"
    np.testing.assert_array_equal(referenced.iteration, [20, 40, 60])
    np.testing.assert_allclose(referenced.true_psnr, [30.0, 31.0, 30.5])
    assert referenced.snapshot_paths()[1] == tmp_path / "b" / "00040.png"
    run_output.check_snapshots_exist(referenced.snapshot_paths())


@pytest.mark.parametrize(
    "content, message",
    [
        ("iteration,loss\n20,0.1\n", "header must be"),
        (HEADER + "\n", "no snapshot rows"),
        (HEADER + "\n20,0.1,30,31,0.5\n", "expected 7 columns"),
        (HEADER + "\n20,abc,30,31,0.5,30,0.6\n", "'loss' is not a number"),
        (HEADER + "\n20,,30,31,0.5,30,0.6\n", "'loss' is empty"),
        (HEADER + "\n40,0.1,30,31,0.5,30,0.6\n20,0.1,30,31,0.5,30,0.6\n", "strictly increasing"),
    ],
)
def test_broken_metrics_name_the_file(tmp_path: Path, content, message):
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "metrics.csv").write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        run_output.read_metrics(folder)
    assert str(folder / "metrics.csv") in str(error.value)


def test_missing_metrics_empty_and_absent_folders(tmp_path: Path):
    (tmp_path / "img").mkdir()
    with pytest.raises(ValueError, match="not a run_BDN image folder"):
        run_output.read_metrics(tmp_path / "img")
    with pytest.raises(ValueError, match="no finished run_BDN image folders"):
        run_output.list_image_folders(tmp_path)
    with pytest.raises(ValueError, match="run folder not found"):
        run_output.list_image_folders(tmp_path / "absent")


def test_missing_snapshot_is_named(tmp_path: Path):
    folder = write_fake_image_folder(tmp_path, "a", [20, 40], [30.0, 31.0], size=8)
    (folder / "00040.png").unlink()
    with pytest.raises(ValueError, match="00040.png"):
        run_output.check_snapshots_exist(run_output.read_metrics(folder).snapshot_paths())


def test_numpy_only_modules_and_step_2_load_no_framework():
    code = (
        "import sys, generator_dataset, utils.biqan.labels, utils.selection, utils.run_output, "
        "utils.biqan.evaluation, utils.biqan.device; "
        "print(sorted(name for name in ('torch', 'keras', 'tensorflow') "
        "if name in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_read_noisy_psnr(tmp_path: Path):
    write_fake_image_folder(tmp_path, "a", [20], [30.0], size=8)
    assert np.isnan(run_output.read_noisy_psnr(tmp_path / "a"))  # a run from before the key
    summary = tmp_path / "a" / run_output.SUMMARY_FILE
    summary.write_text('{"image": "a", "noisy_psnr": 24.5}')
    assert run_output.read_noisy_psnr(tmp_path / "a") == 24.5
    summary.write_text('{"image": "a", "noisy_psnr": null}')
    assert np.isnan(run_output.read_noisy_psnr(tmp_path / "a"))
    for broken in ("{not json", "[1, 2]"):
        summary.write_text(broken)
        with pytest.raises(ValueError, match=f"{summary}: not a readable run_BDN summary"):
            run_output.read_noisy_psnr(tmp_path / "a")
