"""Every table of docs/REPRODUCTION.md that the repository's own rows hold, regenerated in one
command from `results/` (no devdata, no fit): section 8 (`precision_study report`) and section 9
(`scale_study`, `blend_study report`). Sections 1-7 were measured on runs whose per-iteration rows were not kept; they
regenerate only by rerunning those runs (`experiments/report.py`, from devdata).

    python -m experiments.tables
"""

from __future__ import annotations

import argparse
import sys

from experiments import blend_study, precision_study, scale_study


def main() -> int:
    """Rewrite each results-backed table file and its block in docs/REPRODUCTION.md."""
    precision = precision_study.parse_args(["report", "--write"])
    scale = scale_study.parse_args(["--write"])
    blend = blend_study.parse_args(["report", "--write"])
    return precision_study.main(precision) or scale_study.main(scale) or blend_study.main(blend)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    sys.exit(main())
