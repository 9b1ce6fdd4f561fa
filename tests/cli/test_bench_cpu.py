"""bench/bench_cpu.py on the smallest setting: the speed table, the profile, and the limit."""

from __future__ import annotations

import re

from bench import bench_cpu


def test_speed_rows_give_each_variant_against_the_baseline(capsys):
    argv = ["--sizes", "64", "--threads", "1", "--images", "1", "--repeats", "1"]
    assert bench_cpu.main(bench_cpu.parse_args(argv + ["--variants", "fp32-nchw", "bf16-cl"])) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 64 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["64", "1", "1"]
    assert re.fullmatch(r"\d+ ms \(1\.00x\)", cells[3])
    assert re.fullmatch(r"\d+ ms \(\d+\.\d\dx\)", cells[4])
    assert 6 < float(cells[5]) < 8  # GFLOP per iteration of the paper's network at 64x64


def test_the_profile_accounts_for_the_whole_step():
    rows = bench_cpu.profile(64, "bf16-cl", steps=1)
    shares = [float(row.split("|")[3].strip().rstrip("%")) for row in rows]
    assert abs(sum(shares) - 100) < 1
    assert rows[0].startswith("| convolution |")


def test_contention_measures_each_variant_asked_for(monkeypatch, capsys):
    calls = []

    def contention(size: int, variant: str, iterations: int) -> list[str]:
        calls.append((size, variant, iterations))
        return [f"| {size} | {variant} |"]

    monkeypatch.setattr(bench_cpu, "contention", contention)
    argv = ["--contention", "64", "--variants", "fp32-nchw", "bf16-cl", "--iterations", "2"]
    assert bench_cpu.main(bench_cpu.parse_args(argv)) == 0
    assert calls == [(64, "fp32-nchw", 2), (64, "bf16-cl", 2)]
    assert "| 64 | bf16-cl |" in capsys.readouterr().out
