"""The claims table quotes the studies' tables: bounds left out, our bars' verdicts, "-" where a
size has no rows."""

from __future__ import annotations

from experiments import claims

SCALE = """DIP and CBM3D:

| size | precision | seeds | image runs | noisy (dB) | DIP best (dB) | best - noisy | CBM3D tuned (dB) | best - CBM3D | best iteration, median [range] |
|---|---|---|---|---|---|---|---|---|---|
| 64 | fp32 | 0 | 5 | 34.00 | 37.00 | +3.00 | 36.90 (σ 10, 20 PolyU) | +0.10 | 600 [400, 800] |
| 64 | bf16 | 0 | 5 | 34.00 | 37.10 | +3.10 | 36.90 (σ 10, 20 PolyU) | +0.20 | 600 [400, 800] |

No-reference rules:

| size | precision | rule | setting | tuned on | gap to best | picked (dB) | pick - CBM3D | within-image SRCC |
|---|---|---|---|---|---|---|---|---|
| 64 | bf16 | wmv (default) | w | - | 0.12 ± 0.10 [0.30] | 36.98 | +0.08 | +0.85 |
| 64 | bf16 | last |  | - | 0.90 ± 0.50 [1.50] | 36.20 | -0.70 | - |
| 64 | bf16 | biqan, paper's recipe | b | PolyU | 1.50 ± 1.00 [3.00] | 35.60 | -1.30 | +0.40 |
| 64 | bf16 | fixed, tuned (bound) | fixed:600 | CC itself | 0.01 ± 0.01 [0.02] | 37.09 | +0.19 | - |
"""

BLEND = """Seed averaging:

| size | precision | rule | CC runs | CBM3D | one fit | seed mean (seeds) | weight (PolyU images) | one fit, blended | seed mean, blended |
|---|---|---|---|---|---|---|---|---|---|
| 64 | bf16 | wmv (default) | 5 | 36.90 | 36.98 (+0.08) | 37.10 (+0.20) (3) | 0.2 (20) | 37.10 (+0.20) | 37.15 (+0.25) |
| 64 | bf16 | fixed:auto | 2 of 5 | 36.90 | 36.90 (+0.00) | - | 0.2 (20) | 37.30 (+0.40) | - |
| 64 | bf16 | stop and weight, tuned (bound): fixed:540 | 5 | 36.90 | 36.80 (-0.10) | - | 0.4 (CC) | 37.50 (+0.60) | - |
"""


def write_tables(results, scale=SCALE, blend=BLEND):
    results.mkdir(parents=True, exist_ok=True)
    (results / "scale.md").write_text(scale)
    (results / "blend.md").write_text(blend)


def claim_cells(results) -> dict[str, list[str]]:
    """Claim number -> its cells (paper, 64, 128, 256, 512 px)."""
    rows = [claims.cells_of(line) for line in claims.report_lines(results)[2:]]
    return {row[0].split(".")[0]: row[1:-1] for row in rows}


def test_markdown_tables_are_read_by_header():
    tables = claims.markdown_tables(SCALE)
    assert [len(table) for table in tables] == [2, 4]
    assert tables[1][2]["rule"] == "biqan, paper's recipe"
    assert tables[1][1]["setting"] == ""


def test_cells_quote_the_bf16_rows_and_leave_the_bounds_out(tmp_path):
    write_tables(tmp_path)
    cells = claim_cells(tmp_path)
    assert cells["1"][1:] == ["+3.10 dB", "-", "-", "-"]  # bf16, not fp32; no other size
    assert cells["2"][1] == "best +0.20 dB; best pick +0.08 (wmv (default))"  # not the bound
    assert cells["3"][1] == "1.50 dB below, SRCC +0.40"
    assert cells["4"][1] == "yes: 0.12 dB (wmv (default)), SRCC +0.85 (wmv (default))"
    # the partial blend (2 of 5 runs) clears the bar, the complete ones do not: open
    assert cells["5"][1] == (
        "open: one fit +0.08 (wmv (default)); 3 fits averaged and blended (wmv (default)) "
        "+0.25; one fit blended (fixed:auto, 2 of 5 runs) +0.40"
    )
    assert cells["6"][1] == cells["7"][1] == "-"  # no transfer or precision table here


def test_our_bars_say_no_when_missed_and_yes_when_a_complete_output_clears(tmp_path):
    missed = SCALE.replace("| +0.85 |", "| +0.79 |")
    write_tables(tmp_path / "missed", scale=missed)
    assert claim_cells(tmp_path / "missed")["4"][1].startswith("no: 0.12 dB")
    cleared = BLEND.replace("37.15 (+0.25)", "37.25 (+0.35)")
    write_tables(tmp_path / "cleared", blend=cleared)
    assert claim_cells(tmp_path / "cleared")["5"][1].startswith("yes: one fit +0.08")
    no_blend = BLEND.replace("37.30 (+0.40)", "37.00 (+0.10)")
    write_tables(tmp_path / "no", blend=no_blend)
    assert claim_cells(tmp_path / "no")["5"][1].startswith("no: ")


def test_precision_cell_counts_its_runs_in_the_singular_and_plural():
    def row(image_runs: str) -> dict[str, str]:
        return {
            "difference": "bf16 - fp32", "size": "256", "set": f"CC{image_runs} seeds 0",
            "image runs": image_runs, "best PSNR (dB)": "-0.13 [-0.13, -0.13] (n)",
        }  # fmt: skip

    tables = claims.Tables([], [], [], [], [row("1"), row("15")])
    assert claims.precision_kept(tables, 256) == (
        "CC1 -0.13 [-0.13, -0.13] dB (1 run), CC15 -0.13 [-0.13, -0.13] dB (15 runs)"
    )
    assert claims.precision_kept(tables, 64) == "-"


def test_a_size_tabled_in_fp32_alone_is_quoted_in_fp32_and_says_so(tmp_path):
    """A CPU without bf16 instructions fits 512 px in fp32: its cells quote the fp32 rows, each
    marked "(fp32)", while a size with bf16 rows quotes those alone."""
    scale = SCALE.replace("| 64 | fp32 | 0 |", "| 512 | fp32 | 0 |")
    write_tables(tmp_path, scale=scale.replace("| 64 | bf16 | wmv", "| 512 | fp32 | wmv"))
    cells = claim_cells(tmp_path)
    assert cells["1"][1:] == ["+3.10 dB", "-", "-", "+3.00 dB (fp32)"]
    assert cells["2"][4] == "best +0.10 dB; best pick +0.08 (wmv (default)) (fp32)"
    assert cells["4"][4].startswith("yes: 0.12 dB (wmv (default))")
    assert cells["4"][1].startswith("no: 0.90 dB (last)")  # wmv's row is 512 px fp32 now
    assert cells["7"][4] == "-"
