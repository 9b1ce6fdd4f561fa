"""bench/gpu_check.py: the CPU smoke mode end to end, the budget, the tests part, pure helpers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from bench import gpu_check
from tests.conftest import make_pair


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def check_folders(tmp_path: Path) -> dict[str, str]:
    """Two 64x64 noisy/clean pairs and empty output and work folders, as gpu_check flags."""
    make_pair(tmp_path / "data", "a", seed=1)
    make_pair(tmp_path / "data", "b", seed=2)
    return {
        "--data": str(tmp_path / "data"),
        "--output_path": str(tmp_path / "out"),
        "--work_path": str(tmp_path / "work"),
    }


def smoke_args(folders: dict[str, str], *extra: str):
    flags = [item for pair in folders.items() for item in pair]
    return gpu_check.parse_args(["--smoke", *flags, *extra])


def test_smoke_mode_runs_every_cpu_part_and_writes_the_report(check_folders):
    args = smoke_args(check_folders, "--parts", "speed", "batching", "fullscale", "extras")
    assert gpu_check.main(args) == 0
    out = Path(check_folders["--output_path"])
    speed = read_csv(out / "speed.csv")
    assert [row["loop"] for row in speed] == ["original", "fp32", "bf16"]
    assert all(float(row["ms_per_iteration"]) > 0 for row in speed)
    precision = {row["option"]: row for row in read_csv(out / "precision.csv")}
    assert set(precision) == {"fp32", "fp32 seed1", "bf16"}
    fp32 = float(precision["fp32"]["psnr_db"])
    for row in precision.values():
        difference = float(row["psnr_db"]) - fp32
        assert float(row["psnr_vs_fp32_db"]) == pytest.approx(difference, abs=1.5e-3)
    assert float(precision["fp32 seed1"]["psnr_db"]) != fp32  # the seed reaches the fit
    assert abs(float(precision["bf16"]["psnr_vs_fp32_db"])) < 0.1  # measured 0.005
    batching = read_csv(out / "batching.csv")
    assert [row["batch_images"] for row in batching] == ["1", "2"]
    full = read_csv(out / "fullscale.csv")
    assert [row["image"] for row in full] == ["a", "b"]
    for row in full:
        assert row["iterations"] == "40" and float(row["best_psnr_db"]) > 0
        columns = ("tuned_wmv_psnr_db", "published_wmv_psnr_db", "fixed20_psnr_db")
        for column in (*columns, "fixedauto_psnr_db"):
            assert float(row[column]) <= float(row["best_psnr_db"]) + 1e-6
        assert row["fixed20_iteration"] == "20"
    report = (out / "gpu_check.md").read_text()
    assert "two workers on cpu: 2 of 2 images" in report
    assert "two workers vs one process: at most 0.000 dB apart" in report
    assert "OOM fallback: skipped, needs a CUDA device" in report
    assert "full-scale option: fp32" in report or "full-scale option: bf16" in report


def test_budget_stops_the_full_scale_run_and_keeps_the_report(check_folders):
    args = smoke_args(check_folders, "--parts", "fullscale", "--budget", "1")
    assert gpu_check.main(args) == 1
    report = (Path(check_folders["--output_path"]) / "gpu_check.md").read_text()
    assert "run_BDN.py stopped by the budget" in report
    assert "0 of 2 images finished" in report


def test_tests_part_reports_pass_failure_and_budget(tmp_path):
    (tmp_path / "test_ok.py").write_text(
        "import pytest\n@pytest.mark.gpu\ndef test_ok():\n    pass\n"
        "def test_not_selected():\n    raise AssertionError\n"
    )
    (tmp_path / "test_bad.py").write_text(
        "import pytest\n@pytest.mark.gpu\ndef test_bad():\n    raise AssertionError\n"
    )
    (tmp_path / "test_slow.py").write_text(
        "import time, pytest\n@pytest.mark.gpu\ndef test_slow():\n    time.sleep(60)\n"
    )
    report = gpu_check.Report(tmp_path / "out", [])
    later = gpu_check.time.monotonic() + 60

    def run(name: str, deadline: float) -> bool:
        args = gpu_check.parse_args(["--smoke", "--test_paths", str(tmp_path / name)])
        return gpu_check.run_tests(args, report, deadline)

    assert run("test_ok.py", later)
    assert "1 passed, 1 deselected" in report.notes["tests"][-1]
    assert not run("test_bad.py", later)
    assert "1 failed" in report.notes["tests"][-1]
    assert not run("test_slow.py", gpu_check.time.monotonic() + 3)
    assert "stopped" in report.notes["tests"][-1]
    assert (tmp_path / "out" / "gpu_check.md").read_text().count("exit ") == 2


def test_fastest_option_within_the_tolerance_of_fp32():
    def row(option: str, ms: float | None, delta: float | None) -> dict:
        return {"option": option, "ms_per_iteration": ms, "psnr_vs_fp32_db": delta}

    rows = [
        row("fp32", 10.0, 0.0),
        row("fp32 seed1", None, 0.2),
        row("tf32", 6.0, 0.04),
        row("bf16", 4.0, -0.3),
    ]
    assert gpu_check.fastest_within(rows, 0.05) == "tf32"
    assert gpu_check.fastest_within(rows, 0.5) == "bf16"
    assert gpu_check.fastest_within(rows, 0.01) == "fp32"
    assert gpu_check.fastest_within([], 0.05) == "fp32"
    assert gpu_check.fastest_within([row("bf16", 4.0, None)], 0.05) == "fp32"


def test_speed_plan_measures_the_psnr_size_first_and_compiles_last():
    labels = ["fp32", "fp32 seed1", "bf16", "compiled"]
    plan = gpu_check.speed_plan([64, 128, 512], 512, labels)
    assert plan == [
        (512, labels),
        (64, ["fp32", "bf16"]),
        (128, ["fp32", "bf16"]),
        (64, ["compiled"]),
        (128, ["compiled"]),
    ]


def test_oom_limit_lies_between_one_image_and_the_batch():
    assert 100 < gpu_check.oom_memory_limit(100, 500) < 500
    with pytest.raises(ValueError, match="not above"):
        gpu_check.oom_memory_limit(500, 500)


def test_missing_data_is_one_line_naming_the_folder(tmp_path, capsys):
    args = gpu_check.parse_args(["--smoke", "--data", str(tmp_path / "nothing")])
    assert gpu_check.main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(tmp_path / "nothing") in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_only_the_smoke_mode_runs(check_folders, capsys):
    flags = [item for pair in check_folders.items() for item in pair]
    assert gpu_check.main(gpu_check.parse_args([*flags, "--gpu_id", "0"])) == 2
    assert "use --smoke" in capsys.readouterr().err


def test_fixed_iteration_must_be_a_snapshot():
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--smoke", "--fixed_iteration", "7"])
