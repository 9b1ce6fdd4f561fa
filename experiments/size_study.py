"""Issue 9: does DIP's best iteration move with the image size, and which stopping rule follows?

Reads DIP runs of the same centre crops at several sizes (experiments/prepare_data.py --size S,
then run_BDN.py with seed 0 and a snapshot every 20 iterations): per size, `<root>/PolyU_s0_o0/`
(the PolyU pairs every 10th by name from offset 0, experiments/run_polyu.py) and
`<root>/CC_scratch_s0/` (the 5 CC crops), `<root>` given per size as SIZE=FOLDER. Every rule
skips the first `--start_index` snapshots, as test_BIQAN.py does. Per size it reports the median
best iteration and the change against the smallest size for the same images, and the gap of
each rule's pick to the true best:

- `fixed:600`, the stop tuned on the 100 PolyU runs at 64x64 (`selection.TUNED_FIXED`);
- the fixed stop tuned on this size's PolyU runs (in-sample on PolyU);
- `fixed:auto`, that stop scaled with the pixel count, 600 x (pixels / 64^2)^alpha, with the
  shipped exponent (`selection.STOP_EXPONENT`). Printed with the table, two estimates of the
  exponent from the PolyU runs only (CC chooses nothing): fitted to their best iterations
  against the same images' at 64px (the shipped one), and the one with the smallest mean gap;
- `wmv` with the PolyU-tuned setting (`selection.TUNED_WMV`), on the saved snapshots.

    python experiments/size_study.py 64=devdata/runs 96=devdata/runs96 128=devdata/runs128
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common
from utils import image_io, run_output, selection

ALPHAS = np.round(np.arange(0.0, 1.001, 0.05), 2)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One image's run: dataset, size (pixels per side), name, iterations (N,), PSNR (N,) of the
    averaged snapshots, and its image folder (for the snapshots)."""

    dataset: str
    size: int
    name: str
    iteration: np.ndarray
    psnr: np.ndarray
    folder: Path

    @property
    def best_iteration(self) -> int:
        return int(self.iteration[int(np.argmax(self.psnr))])

    def gap(self, index: int) -> float:
        """dB from the true best to snapshot `index`."""
        return float(self.psnr.max() - self.psnr[index])


def read_curves(size: int, root: Path, start_index: int) -> list[Curve]:
    """The finished images of `<root>/PolyU_s0_o0` and `<root>/CC_scratch_s0`."""
    curves = []
    for dataset, run in (("PolyU", "PolyU_s0_o0"), ("CC", "CC_scratch_s0")):
        for name in common.run_images(root / run):
            folder = root / run / name
            metrics = common.read_metrics(folder)
            if metrics is None or not common.finished(folder):
                continue
            curves.append(
                Curve(
                    dataset,
                    size,
                    name,
                    metrics["iteration"][start_index:].astype(int),
                    metrics["psnr_avg"][start_index:],
                    folder,
                )
            )
    return curves


def stop_index(curve: Curve, iteration: float) -> int:
    """The fixed rule's pick: the first snapshot at or after `iteration`, else the last."""
    return selection.select_at_or_after(curve.iteration, iteration)


def wmv_index(curve: Curve) -> int:
    """test_BIQAN's `wmv` pick with the tuned setting, on the saved snapshots."""
    paths = [run_output.snapshot_path(curve.folder, int(i)) for i in curve.iteration]
    result = selection.windowed_moving_variance(
        lambda index: image_io.read_image(paths[index]).pixels,
        selection.TUNED_WMV.window,
        selection.TUNED_WMV.patience,
        count=len(paths),
    )
    return result.pick_index


def tune_alpha(polyu: list[Curve]) -> float:
    """Alpha with the smallest mean gap over `polyu` (curves of sizes above 64)."""
    return float(
        min(
            ALPHAS,
            key=lambda a: np.mean(
                [c.gap(stop_index(c, selection.scaled_stop(c.size, c.size, a))) for c in polyu]
            ),
        )
    )


def fit_alpha(curves: list[Curve]) -> float:
    """Least squares (through the origin) of ln(best iteration / the same image's at 64px)
    on ln(pixels / 64^2), over the PolyU images run at 64px and a larger size."""
    at_reference = {
        c.name: c.best_iteration
        for c in curves
        if c.dataset == "PolyU" and c.size == selection.STOP_SIZE
    }
    pairs = [
        (np.log(c.best_iteration / at_reference[c.name]), 2 * np.log(c.size / selection.STOP_SIZE))
        for c in curves
        if c.dataset == "PolyU" and c.size > selection.STOP_SIZE and c.name in at_reference
    ]
    ratios, pixels = np.array(pairs).T
    return float(np.sum(ratios * pixels) / np.sum(pixels**2))


def size_table(curves: list[Curve]) -> pd.DataFrame:
    """One row per dataset and size: images, median best iteration, the geometric mean of the
    best iteration over the same image's at the smallest size, and each rule's mean gap."""
    smallest = min(curve.size for curve in curves)
    reference = {(c.dataset, c.name): c.best_iteration for c in curves if c.size == smallest}
    rows = []
    keys = sorted({(c.dataset, c.size) for c in curves}, key=lambda key: (key[0] != "PolyU", key))
    for dataset, size in keys:
        group = [c for c in curves if (c.dataset, c.size) == (dataset, size)]
        polyu = [c for c in curves if c.dataset == "PolyU" and c.size == size]
        tuned = common.tune_fixed(polyu) if polyu else None
        ratios = [c.best_iteration / reference[(dataset, c.name)] for c in group]
        rows.append(
            {
                "dataset": dataset,
                "size": size,
                "images": len(group),
                "median best iteration": int(np.median([c.best_iteration for c in group])),
                f"best iteration / at {smallest}px (geometric mean)": float(
                    np.exp(np.mean(np.log(ratios)))
                ),
                f"fixed:{selection.TUNED_FIXED.iteration}": np.mean(
                    [c.gap(stop_index(c, selection.TUNED_FIXED.iteration)) for c in group]
                ),
                "fixed, tuned on this size's PolyU": "-"
                if tuned is None
                else f"{np.mean([c.gap(stop_index(c, tuned)) for c in group]):.2f} ({tuned})",
                f"fixed:auto (exponent {selection.STOP_EXPONENT:g})": np.mean(
                    [c.gap(stop_index(c, selection.scaled_stop(size, size))) for c in group]
                ),
                "wmv (tuned)": np.mean([c.gap(wmv_index(c)) for c in group]),
            }
        )
    return pd.DataFrame(rows)


def main(args: argparse.Namespace) -> int:
    curves = []
    for entry in args.runs:
        size, _, root = entry.partition("=")
        curves += read_curves(int(size), Path(root), args.start_index)
    larger = [c for c in curves if c.dataset == "PolyU" and c.size > selection.STOP_SIZE]
    if not larger or selection.STOP_SIZE not in {c.size for c in curves}:
        print(f"need finished PolyU runs at {selection.STOP_SIZE}px and at a larger size")
        return 1
    table = size_table(curves)
    text = (
        f"Stopping rules against the crop size (seed 0; gaps in dB to the true best; start "
        f"index {args.start_index}):\n\n"
        + common.markdown_table(list(table.columns), table.round(2).values.tolist())
        + f"\n\nExponent of fixed:auto from the {len(larger)} PolyU runs above "
        f"{selection.STOP_SIZE}px: {fit_alpha(curves):.2f} fitted to their best iterations "
        f"(against the same images' at {selection.STOP_SIZE}px); {tune_alpha(larger):g} for the "
        f"smallest mean gap (grid {ALPHAS[0]:g}-{ALPHAS[-1]:g}).\n"
    )
    common.write_table(args.tables, "size_study.md", text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="SIZE=FOLDER, e.g. 64=devdata/runs")
    common.add_folder_flags(parser, "tables")
    common.add_start_index_flag(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
