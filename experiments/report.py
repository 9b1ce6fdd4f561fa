"""Regenerate the 2026 selection table (docs/ARCHIVE_2026.md) and the figures from devdata/.

Reads what exists, never runs a DIP fit, and leaves a placeholder where a measurement is missing:
- `<crops>/CC/{real,mean}` (experiments/prepare_data.py): noisy-input PSNR/SSIM; CBM3D baselines
  (the `bm3d` package; computed here and cached in `<tables>/cbm3d.csv`);
- `<runs>/CC_scratch_s<seed>/` (experiments/transfer.py): DIP true best, raw best, last iteration;
- `<selection>/CC_scratch_s<seed>/<variant>/selection.csv` (experiments/select_snapshots.py, i.e.
  test_BIQAN.py): the WMV and BIQAN picks;

The selection table (q3) goes between `<!-- BEGIN q3 -->` and `<!-- END q3 -->` in the
document, the text around the markers left alone; the per-crop table (q1) is printed and kept in
`<tables>/q1.md` (the document's section 1 is `experiments.per_image`'s, from results/). Figures
go to `--figures` (our own plots only: no image crops, since the data is licensed).

    python experiments/report.py --crops devdata/crops --runs devdata/runs --doc docs/ARCHIVE_2026.md
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common, select_snapshots
from utils import image_io, metrics
from utils.run_output import snapshot_path

CBM3D_SIGMAS = (
    5,
    10,
    15,
    20,
    25,
    30,
    40,
)  # in 8-bit units (/255); bm3d takes ~8 s per 64x64 call here
# Means over the 15 CC images: cbm3d and biqan from the original README's table, true_best from
# the original repository's result file (result/CC_Resume_All32/Denoised_PSNR.txt), not the
# paper; noisy measured on the 15 pairs (docs/REPRODUCTION.md, section 1).
PUBLISHED = {"noisy": 33.41, "cbm3d": 33.99, "biqan": 37.47, "true_best": 37.83}


# ----------------------------------------------------------------------------------------------
# CBM3D baselines
def cbm3d_grid(real: np.ndarray, mean: np.ndarray) -> dict[int, tuple[float, float]]:
    import bm3d

    results = {}
    for sigma in CBM3D_SIGMAS:
        denoised = image_io.quantize(bm3d.bm3d_rgb(real, sigma / 255.0), 8) / 255.0
        results[sigma] = (metrics.psnr(denoised, mean), metrics.ssim(denoised, mean))
    return results


def cbm3d_rows(crops: Path, tables: Path, polyu_every: int) -> list[dict]:
    """Per image of CC and of the PolyU tuning subset (every `polyu_every`-th PolyU crop): the
    blind-sigma result and the sigma grid; cached in `<tables>/cbm3d.csv`."""
    cache = tables / "cbm3d.csv"
    cached = {(row["dataset"], row["image"]): row for row in common.read_csv(cache)}
    try:
        import bm3d
        from skimage.restoration import estimate_sigma
    except ImportError as error:
        print(f"CBM3D skipped: {error}")
        return list(cached.values())
    rows = []
    for dataset, every in (("CC", 1), ("PolyU", polyu_every)):
        for stem, real_path, mean_path in common.pairs(crops, dataset, every):
            if (dataset, stem) in cached:
                rows.append(cached[(dataset, stem)])
                continue
            real, mean = image_io.read_rgb(real_path), image_io.read_rgb(mean_path)
            sigma_est = float(estimate_sigma(real, channel_axis=-1, average_sigmas=True))
            blind = image_io.quantize(bm3d.bm3d_rgb(real, max(sigma_est, 1e-4)), 8) / 255.0
            row = {
                "dataset": dataset,
                "image": stem,
                "sigma_est_255": round(sigma_est * 255, 3),
                "blind_psnr": round(metrics.psnr(blind, mean), 4),
                "blind_ssim": round(metrics.ssim(blind, mean), 4),
            }
            for sigma, (p, s) in cbm3d_grid(real, mean).items():
                row[f"psnr_s{sigma}"], row[f"ssim_s{sigma}"] = round(p, 4), round(s, 4)
            rows.append(row)
            common.write_csv(cache, rows + [r for k, r in cached.items() if r not in rows])
            print(
                f"CBM3D {dataset} {stem}: sigma_est {row['sigma_est_255']:.2f}/255, blind {row['blind_psnr']:.2f} dB"
            )
    return rows


def cbm3d_summary(rows: list[dict]) -> tuple[pd.DataFrame, int | None]:
    """Per CC image (the index): CBM3D with the blind, the PolyU-tuned and the oracle sigma
    (columns `<kind>_psnr` in dB, `<kind>_ssim`), `sigma_est` and `oracle_sigma` (in /255); and
    the tuned sigma: the one of best mean PSNR over the PolyU rows (None without them)."""
    grid = [f"{measure}_s{sigma}" for measure in ("psnr", "ssim") for sigma in CBM3D_SIGMAS]
    columns = ["dataset", "image", "sigma_est_255", "blind_psnr", "blind_ssim", *grid]
    table = pd.DataFrame(rows, columns=columns)
    numbers = table.drop(columns="dataset").set_index("image").astype(float)
    psnr, ssim = (
        numbers[grid[start : start + len(CBM3D_SIGMAS)]].set_axis(CBM3D_SIGMAS, axis=1)
        for start in (0, len(CBM3D_SIGMAS))
    )
    polyu = (table.dataset == "PolyU").to_numpy()
    tuned = int(psnr[polyu].mean().idxmax()) if polyu.any() else None
    cc = (table.dataset == "CC").to_numpy()
    numbers, psnr, ssim = numbers[cc], psnr[cc], ssim[cc]
    oracle = psnr.idxmax(axis=1)
    summary = pd.DataFrame(
        {
            "sigma_est": numbers.sigma_est_255,
            "blind_psnr": numbers.blind_psnr,
            "blind_ssim": numbers.blind_ssim,
            "tuned_psnr": psnr[tuned] if tuned else math.nan,
            "tuned_ssim": ssim[tuned] if tuned else math.nan,
            "oracle_psnr": psnr.max(axis=1),
            "oracle_ssim": [ssim.at[image, sigma] for image, sigma in oracle.items()],
            "oracle_sigma": oracle,
        }
    )
    return summary, tuned


# ----------------------------------------------------------------------------------------------
# DIP runs and selections
def dip_image(run_dir: Path, image: str) -> dict | None:
    if not common.finished(run_dir / image):
        return None
    m = common.read_metrics(run_dir / image)
    best = int(np.nanargmax(m["psnr_avg"]))
    raw_best = int(np.nanargmax(m["psnr_raw"]))
    return {
        "metrics": m,
        "best_psnr": m["psnr_avg"][best],
        "best_ssim": m["ssim_avg"][best],
        "best_iteration": int(m["iteration"][best]),
        "raw_best_psnr": m["psnr_raw"][raw_best],
        "raw_best_iteration": int(m["iteration"][raw_best]),
        "last_psnr": m["psnr_avg"][-1],
        "last_ssim": m["ssim_avg"][-1],
        "last_iteration": int(m["iteration"][-1]),
    }


def selections(selection_root: Path, run_name: str) -> dict[str, dict[str, dict]]:
    """{column label: {image: selection row}} from every `<root>/<run>/<variant>/selection.csv`."""
    out: dict[str, dict[str, dict]] = {}
    folder = selection_root / run_name
    if not folder.is_dir():
        return out
    for csv_path in sorted(folder.glob("*/selection.csv")):
        variant = csv_path.parent.name
        for row in common.read_csv(csv_path):
            if select_snapshots.variant_keeps(variant, row["selector"]):
                out.setdefault(select_snapshots.variant_label(variant, row["selector"]), {})[
                    row["image"]
                ] = row
    return out


def ssim_at(metrics: dict, iteration: int) -> float:
    hits = np.flatnonzero(metrics["iteration"] == iteration)
    return float(metrics["ssim_avg"][hits[0]]) if hits.size else math.nan


# ----------------------------------------------------------------------------------------------
# tables
def cell_rows(
    measured: pd.DataFrame, value: str, digits: int, images: list[str], placeholders: dict
) -> list[list[str]]:
    """Markdown rows: per image, its `value` in each column of `placeholders` (the PSNR followed
    by its `note`), the column's placeholder where `measured` (one row per image and column) has
    none; then the mean row (bold when every image has a value, else with the count)."""
    text = measured[value].map(f"{{:.{digits}f}}".format)
    cells = (
        measured.assign(text=text + measured.note if value == "psnr" else text)
        .pivot(index="image", columns="column", values="text")
        .reindex(index=images, columns=list(placeholders))
        .fillna(pd.Series(placeholders))
    )
    groups = measured.groupby("column")[value]
    count, mean = groups.size(), groups.agg(lambda values: np.mean(values.to_numpy()))

    def mean_cell(column: str) -> str:
        if not count.get(column, 0):
            return "-"
        number = f"{mean[column]:.{digits}f}"
        if count[column] == len(images):
            return f"**{number}**"
        return f"({number}, {count[column]} of {len(images)})"

    return cells.reset_index().to_numpy().tolist() + [["**mean**"] + list(map(mean_cell, cells))]


def q1_tables(
    crops: Path, runs: Path, selection_root: Path, cbm3d: pd.DataFrame, tuned_sigma, seed: int
) -> str:
    """The PSNR and SSIM tables of question 1: per CC crop, the noisy input, CBM3D, DIP's true
    best, raw-output best and last iteration (seed `seed`), and every selector's pick."""
    run_dir = runs / f"CC_scratch_s{seed}"
    picks = selections(selection_root, run_dir.name)
    pick_labels = sorted(
        (label for label in picks if not label.startswith("last")),
        key=lambda label: (not label.startswith("wmv"), label),
    )
    header = [
        "image",
        "noisy input",
        "CBM3D, blind σ (est. σ/255)",
        f"CBM3D, σ tuned on PolyU ({tuned_sigma if tuned_sigma else '-'}/255)",
        "CBM3D, oracle σ (σ/255)",
        "DIP true best (iteration)",
        "DIP raw-output best (iteration)",
        "DIP last iteration",
    ] + [f"{label} pick (iteration)" for label in pick_labels]
    images = common.pairs(crops, "CC")
    measured = []  # (image, column, PSNR, SSIM, note after the PSNR)
    for stem, real_path, mean_path in images:
        real, mean = image_io.read_rgb(real_path), image_io.read_rgb(mean_path)
        measured.append((stem, "noisy", metrics.psnr(real, mean), metrics.ssim(real, mean), ""))
        if stem in cbm3d.index:
            base = cbm3d.loc[stem]
            measured += [
                (stem, "blind", base.blind_psnr, base.blind_ssim, f" ({base.sigma_est:.1f})"),
                (stem, "tuned", base.tuned_psnr, base.tuned_ssim, ""),
                (stem, "oracle", base.oracle_psnr, base.oracle_ssim, f" ({base.oracle_sigma:.0f})"),
            ]
        dip = dip_image(run_dir, stem)
        if dip is None:
            continue
        measured += [
            (stem, "best", dip["best_psnr"], dip["best_ssim"], f" ({dip['best_iteration']})"),
            (stem, "raw_best", dip["raw_best_psnr"], math.nan, f" ({dip['raw_best_iteration']})"),
            (stem, "last", dip["last_psnr"], dip["last_ssim"], ""),
        ]
        for label in pick_labels:
            if row := picks[label].get(stem):
                iteration = int(row["picked_iteration"])
                note = ", did not fire" if "did not fire" in row.get("note", "") else ""
                ssim = ssim_at(dip["metrics"], iteration)
                psnr = float(row["picked_psnr"])
                measured.append((stem, label, psnr, ssim, f" ({iteration}{note})"))
    measured = pd.DataFrame(measured, columns=["image", "column", "psnr", "ssim", "note"])
    placeholders = dict.fromkeys(["noisy", "blind", "tuned", "oracle"], "not measured")
    placeholders |= dict.fromkeys(["best", "raw_best", "last"], "running")
    placeholders |= dict.fromkeys(pick_labels, "not measured")
    stems = [stem for stem, _, _ in images]
    psnr_rows = cell_rows(measured, "psnr", 2, stems, placeholders)
    published = ["noisy", "cbm3d", None, None, "true_best", None, None]
    published += ["biqan" if label.startswith("biqan") else None for label in pick_labels]
    psnr_rows.append(
        ["published (15 CC, 512x512)"]
        + [f"{PUBLISHED[key]:.2f}" if key else "-" for key in published]
    )
    ssim_rows = cell_rows(  # the raw output has no saved snapshot, so no SSIM
        measured[measured.column != "raw_best"], "ssim", 3, stems, placeholders | {"raw_best": "-"}
    )
    return (
        "PSNR (dB) against the clean mean image:\n\n"
        + common.markdown_table(header, psnr_rows)
        + "\n\nSSIM (same snapshots; the raw-output column has no saved snapshot, so no SSIM):\n\n"
        + common.markdown_table(header, ssim_rows)
        + "\n"
    )


# ----------------------------------------------------------------------------------------------
# figures
def figure_curves(
    crops: Path, runs: Path, selection_root: Path, cbm3d: dict, seed: int, path: Path
) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    run_dir = runs / f"CC_scratch_s{seed}"
    images = [p for p in common.pairs(crops, "CC") if common.finished(run_dir / p[0])]
    if not images:
        return False
    picks = selections(selection_root, run_dir.name)
    fig, axes = plt.subplots(
        1, len(images), figsize=(3.2 * len(images), 2.8), squeeze=False, dpi=80
    )
    markers = {"wmv": ("v", "tab:green"), "last": ("s", "tab:gray"), "fixed": ("D", "tab:brown")}
    for ax, (stem, real_path, mean_path) in zip(axes[0], images):
        dip = dip_image(run_dir, stem)
        m = dip["metrics"]
        ax.plot(m["iteration"], m["psnr_avg"], label="DIP averaged output", color="tab:blue")
        ax.plot(
            m["iteration"],
            m["psnr_raw"],
            label="DIP raw output",
            color="tab:blue",
            alpha=0.35,
            lw=0.8,
        )
        noisy = metrics.psnr(image_io.read_rgb(real_path), image_io.read_rgb(mean_path))
        ax.axhline(noisy, color="k", ls=":", lw=1, label="noisy input")
        top = max(
            dip["best_psnr"],
            dip["raw_best_psnr"],
            cbm3d.at[stem, "tuned_psnr"] if stem in cbm3d.index else 0,
        )
        ax.set_ylim(min(noisy, dip["best_psnr"]) - 3, top + 1.5)
        if stem in cbm3d.index:
            ax.axhline(
                cbm3d.at[stem, "tuned_psnr"],
                color="tab:orange",
                ls="--",
                lw=1,
                label="CBM3D (σ tuned on PolyU)",
            )
        ax.plot(
            dip["best_iteration"], dip["best_psnr"], "*", color="tab:red", ms=10, label="true best"
        )
        for label, rows in picks.items():
            row = rows.get(stem)
            if row is None or label == "last":
                continue
            marker, colour = markers.get(label.split(" ")[0].split(":")[0], ("o", "tab:purple"))
            ax.plot(
                int(row["picked_iteration"]),
                float(row["picked_psnr"]),
                marker,
                color=colour,
                ms=7,
                mfc="none",
                label=f"{label} pick",
            )
        ax.set_title(stem, fontsize=8)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("PSNR (dB)", fontsize=8)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=7, frameon=False
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def figure_transfer(crops: Path, runs: Path, seed: int, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    inits = ("scratch", "previous", "polyu1", "polyu_chain4", "polyu_chain8_short")
    images = [
        p[0]
        for p in common.pairs(crops, "CC")
        if common.finished(runs / f"CC_scratch_s{seed}" / p[0])
    ]
    if not images:
        return False
    fig, axes = plt.subplots(
        1, len(images), figsize=(3.2 * len(images), 2.8), squeeze=False, dpi=80
    )
    for ax, stem in zip(axes[0], images):
        for init in inits:
            if common.finished(runs / f"CC_{init}_s{seed}" / stem):
                m = common.read_metrics(runs / f"CC_{init}_s{seed}" / stem)
                ax.plot(
                    m["iteration"], m["psnr_avg"], label=init, lw=1.2 if init == "scratch" else 0.9
                )
        ref = common.read_metrics(runs / f"CC_scratch_s{seed}" / stem)
        ax.axhline(
            np.nanmax(ref["psnr_avg"]) - 0.1,
            color="k",
            ls=":",
            lw=0.8,
            label="scratch peak - 0.1 dB",
        )
        low = np.nanmax(ref["psnr_avg"]) - 4
        ax.set_ylim(bottom=low)
        ax.set_title(stem, fontsize=8)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("PSNR of averaged output (dB)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def figure_compare(
    crops: Path,
    runs: Path,
    selection_root: Path,
    tuned_sigma: int | None,
    seed: int,
    stems: list[str],
    path: Path,
) -> bool:
    """Noisy | clean | CBM3D (PolyU-tuned sigma) | DIP true best | every pick, for a few CC crops,
    enlarged 3x without interpolation, PSNR in each title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    run_dir = runs / f"CC_scratch_s{seed}"
    chosen = [
        p for p in common.pairs(crops, "CC") if p[0] in stems and common.finished(run_dir / p[0])
    ]
    if not chosen:
        return False
    picks = selections(selection_root, run_dir.name)
    labels = [label for label in picks if label != "last"]
    columns = 4 + len(labels)
    fig, axes = plt.subplots(
        len(chosen), columns, figsize=(1.9 * columns, 2.2 * len(chosen)), squeeze=False, dpi=100
    )
    for row_axes, (stem, real_path, mean_path) in zip(axes, chosen):
        real, mean = image_io.read_rgb(real_path), image_io.read_rgb(mean_path)
        dip = dip_image(run_dir, stem)
        panels = [("noisy", real), ("clean (mean)", None)]
        if tuned_sigma is not None:
            import bm3d

            panels.append(
                (
                    f"CBM3D σ={tuned_sigma}",
                    image_io.quantize(bm3d.bm3d_rgb(real, tuned_sigma / 255.0), 8) / 255.0,
                )
            )
        panels.append(
            (
                f"DIP true best ({dip['best_iteration']})",
                image_io.read_rgb(snapshot_path(run_dir / stem, dip["best_iteration"])),
            )
        )
        for label in labels:
            row = picks[label].get(stem)
            if row is not None:
                iteration = int(row["picked_iteration"])
                panels.append(
                    (
                        f"{label} ({iteration})",
                        image_io.read_rgb(snapshot_path(run_dir / stem, iteration)),
                    )
                )
        for ax in row_axes:
            ax.axis("off")
        for ax, (title, image) in zip(row_axes, panels):
            ax.imshow(mean if image is None else image, interpolation="nearest")
            text = title if image is None else f"{title}\n{metrics.psnr(image, mean):.2f} dB"
            ax.set_title(text, fontsize=6)
        row_axes[0].text(
            -0.08,
            0.5,
            stem,
            transform=row_axes[0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=6,
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    crops, runs, tables = Path(args.crops), Path(args.runs), Path(args.tables)
    selection_root, figures, doc = Path(args.selection), Path(args.figures), Path(args.doc)
    tables.mkdir(parents=True, exist_ok=True)
    rows = (
        cbm3d_rows(crops, tables, args.polyu_every)
        if not args.no_cbm3d
        else common.read_csv(tables / "cbm3d.csv")
    )
    cbm3d, tuned_sigma = cbm3d_summary(rows)
    q1 = q1_tables(crops, runs, selection_root, cbm3d, tuned_sigma, args.seeds[0])
    (tables / "q1.md").write_text(q1)
    selection_md = tables / "selection.md"
    q3 = selection_md.read_text() if selection_md.is_file() else "Not measured yet.\n"
    blocks = {"q3": q3}  # section 1's table is experiments.per_image's, from results/
    made = []
    for seed in args.seeds:
        if figure_curves(
            crops, runs, selection_root, cbm3d, seed, figures / f"q1_cc_psnr_curves_s{seed}.png"
        ):
            made.append(f"q1_cc_psnr_curves_s{seed}.png")
    if figure_transfer(
        crops, runs, args.seeds[0], figures / f"q2_transfer_curves_s{args.seeds[0]}.png"
    ):
        made.append(f"q2_transfer_curves_s{args.seeds[0]}.png")
    compare = f"q1_cc_compare_s{args.seeds[0]}.png"
    if figure_compare(
        crops, runs, selection_root, tuned_sigma, args.seeds[0], args.compare, figures / compare
    ):
        made.append(compare)
    if doc.is_file():
        text = doc.read_text()
        for name, content in blocks.items():
            text = common.replace_block(text, name, content)
        doc.write_text(text)
    print(q1)
    print("figures:", ", ".join(made) or "none yet")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_folder_flags(parser, "crops", "runs", "selection", "tables")
    parser.add_argument(
        "--figures", default="docs/figures", help="figure folder (default docs/figures)"
    )
    parser.add_argument(
        "--doc", default="docs/ARCHIVE_2026.md", help="document whose marked blocks are replaced"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="DIP seeds (default 0 1 2; the first is the Q1 seed)",
    )
    parser.add_argument(
        "--polyu_every",
        type=int,
        default=13,
        help="tune the CBM3D sigma on every N-th PolyU crop by name (default 13: 8 crops)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        default=["d800_iso3200_1", "d800_iso6400_1"],
        help="CC images of the compare figure (default d800_iso3200_1 d800_iso6400_1)",
    )
    parser.add_argument("--no_cbm3d", action="store_true", help="use the cached CBM3D results only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
