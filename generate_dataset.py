"""Step 2 under the original's file name (its README calls it generator_dataset.py): the same
flags and outputs as generator_dataset.py, which does the work."""

from __future__ import annotations

import sys

import generator_dataset

if __name__ == "__main__":
    sys.exit(generator_dataset.main(generator_dataset.parse_args()))
