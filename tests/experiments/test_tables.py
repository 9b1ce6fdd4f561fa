"""The results-backed tables of docs/REPRODUCTION.md regenerate from the committed rows alone."""

from __future__ import annotations

from experiments import tables


def test_the_committed_tables_regenerate_from_results_alone():
    assert tables.stale_tables() == [], "run python -m experiments.tables"


def test_a_stale_table_is_reported(tmp_path, monkeypatch):
    study = tables.STUDIES[0]
    monkeypatch.setattr(study, "RESULTS", tmp_path)  # no rows, no table file
    assert str(tmp_path / study.TABLE_FILE) in tables.stale_tables()
