"""Every table of docs/REPRODUCTION.md that the repository's own rows hold, regenerated in one
command from `results/` (no devdata, no fit): the runs behind them (`inventory`), section 1
(per crop, `per_image`), section 2 (transfer learning, `transfer_study`), section 4 (the seed
spread, `seed_spread`), section 5 (online stopping, `online_study`), section 7 (CBM3D at 512
px, `cbm3d_full`), section 8 (`precision_study report`), section 9 (`scale_study`,
`blend_study report`) and the claims table that quotes them (`claims`). The other tables of
sections 3, 6 and 7 (its DIP part) were measured on runs whose per-iteration rows were not
kept; they regenerate only by rerunning those runs (`experiments/report.py`, from devdata).

    python -m experiments.tables            # rewrite the tables and their document blocks
    python -m experiments.tables --check    # list the stale ones (exit 1 if any)
"""

from __future__ import annotations

import argparse
import sys

from experiments import (
    blend_study,
    cbm3d_full,
    claims,
    common,
    inventory,
    online_study,
    per_image,
    precision_study,
    scale_study,
    seed_spread,
    transfer_study,
)

STUDIES = (
    inventory,
    per_image,
    transfer_study,
    seed_spread,
    online_study,
    precision_study,
    scale_study,
    blend_study,
    cbm3d_full,
    claims,  # last: it quotes the tables written before it
)  # each: RESULTS, report_lines, TABLE_FILE, DOC_BLOCK


def stale_tables() -> list[str]:
    """The table files and document blocks that differ from what the committed rows give."""
    stale = []
    document = common.REPRODUCTION.read_text()
    for study in STUDIES:
        text = "\n".join(study.report_lines(study.RESULTS)) + "\n"
        table = study.RESULTS / study.TABLE_FILE
        if not table.exists() or table.read_text() != text:
            stale.append(str(table))
        if common.replace_block(document, study.DOC_BLOCK, text) != document:
            stale.append(f"{common.REPRODUCTION.name}, block {study.DOC_BLOCK}")
    return stale


def main(argv: list[str] | None = None) -> int:
    """Rewrite each results-backed table file and its block in docs/REPRODUCTION.md (with
    --check: report the stale ones instead)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list stale tables")
    if parser.parse_args(argv).check:
        stale = stale_tables()
        for name in stale:
            print(f"stale: {name}; run python -m experiments.tables")
        return 1 if stale else 0
    for study in STUDIES:
        lines = study.report_lines(study.RESULTS)
        common.publish_table(lines, study.RESULTS / study.TABLE_FILE, study.DOC_BLOCK, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
