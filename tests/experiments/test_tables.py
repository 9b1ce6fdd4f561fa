"""The results-backed tables of docs/REPRODUCTION.md regenerate from the committed rows alone."""

from __future__ import annotations

from experiments import precision_study, scale_study, tables
from utils import selection


def test_the_committed_tables_regenerate_from_results_alone():
    assert tables.stale_tables() == [], "run python -m experiments.tables"


def test_a_stale_table_is_reported(tmp_path, monkeypatch):
    study = tables.STUDIES[0]
    monkeypatch.setattr(study, "RESULTS", tmp_path)  # no rows, no table file
    assert str(tmp_path / study.TABLE_FILE) in tables.stale_tables()


def test_the_shipped_size_exponents_are_the_ones_the_committed_polyu_runs_give():
    """utils/selection.py's exponents are tuned on the PolyU runs under results/ (bf16, every
    size, with fp32 stand-ins at 256 px once section 8's check has passed; docs/REPRODUCTION.md
    section 9): committing tuning runs that move them means retuning the defaults in the same
    change."""
    runs = scale_study.read_runs(scale_study.RESULTS)
    tuning = scale_study.tuning_by_size(runs, "bf16", precision_study.pooling_holds())
    stop, patience = scale_study.tuned_exponents(tuning)
    tuned = (float(stop.best), float(patience.best))
    shipped = (selection.STOP_EXPONENT, selection.PATIENCE_EXPONENT)
    assert tuned == shipped, (
        f"the committed PolyU runs give the exponents {tuned}: set STOP_EXPONENT and "
        "PATIENCE_EXPONENT in utils/selection.py, then run python -m tools.flag_tables and "
        "python -m experiments.tables"
    )
