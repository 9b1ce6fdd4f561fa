"""Files written by steps 3 and 4: validation correlations, per-image picks, the summaries.

Step 4 per image: ``<stem>_BIQAN.png`` (other selectors: ``<stem>_<selector>.png``), score
curves and CSV, the wmv variance plot, ``<stem>_Compare.png``; over all images
``selection.csv`` and ``Denoised_PSNR.txt``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from utils import image_io, selection
from utils.biqan import evaluation as biqan_eval
from utils.biqan import labels
from utils.biqan import plots as biqan_plots

SELECTION_FILE = "selection.csv"
DENOISED_PSNR_FILE = "Denoised_PSNR.txt"


def pick_file_name(stem: str, label: str) -> str:
    """File of a selector's pick: ``<stem>_BIQAN.png`` for biqan, ``<stem>_fixed500.png``..."""
    return f"{stem}_{display_name(label).replace(':', '')}.png"


def output_names(images: Sequence[tuple[str, bool]], selector_labels: Sequence[str]) -> list[str]:
    """Every file step 4 writes (`write_image_outputs`, `write_summary`) for `images`, (stem,
    has a reference) pairs, and the selectors: what it claims in its output folder up front."""
    names = [SELECTION_FILE, DENOISED_PSNR_FILE]
    for stem, has_reference in images:
        names += [pick_file_name(stem, label) for label in selector_labels]
        if "biqan" in selector_labels:
            names += [f"{stem}_scores.png", f"{stem}_scores.csv"]
        if "wmv" in selector_labels:
            names.append(f"{stem}_wmv_variance.png")
        if has_reference:
            names.append(f"{stem}_Compare.png")
    return names


def display_name(label: str) -> str:
    """Selector label as shown in files and figures: ``BIQAN`` for biqan, else unchanged."""
    return "BIQAN" if label == "biqan" else label


def format_number(value: float) -> str:
    """Four decimals, or an empty string for NaN (unknown, e.g. no reference)."""
    return f"{value:.4f}" if np.isfinite(value) else ""


def write_validation_report(
    output_path: Path,
    image_ids: Sequence[str],
    sources: Sequence[str],
    distributions: np.ndarray,
    true_psnr: np.ndarray,
) -> biqan_eval.CorrelationReport:
    """Write validation_scores.csv and validation_correlation.csv; return the correlations.

    ``distributions`` (N, 10): predictions of the N validation snapshots ``image_ids`` of the
    source images ``sources``; ``true_psnr`` (N,) in dB.
    """
    means = labels.distribution_mean(distributions)
    stds = labels.distribution_std(distributions)
    biqan_eval.write_table(
        output_path / "validation_scores.csv",
        [
            {
                "image_id": image_id,
                "true_psnr": format_number(psnr),
                "predicted_mean": format_number(mean),
                "predicted_std": format_number(std),
            }
            for image_id, psnr, mean, std in zip(image_ids, true_psnr, means, stds)
        ],
    )
    report = biqan_eval.correlation_report(sources, means, true_psnr)
    mean_srcc, mean_plcc = report.mean_within_image
    biqan_eval.write_table(
        output_path / "validation_correlation.csv",
        [
            {"image": "all snapshots", "srcc": report.srcc, "plcc": report.plcc},
            *(
                {"image": image, "srcc": srcc, "plcc": plcc}
                for image, (srcc, plcc) in report.per_image.items()
            ),
            {"image": "mean within image", "srcc": mean_srcc, "plcc": mean_plcc},
        ],
    )
    return report


def selection_rows(
    stem: str,
    iterations: np.ndarray,
    true_psnr: np.ndarray | None,
    chosen: selection.ImageSelection,
) -> list[dict]:
    """One selection.csv row per selector: pick, true best and the loss in dB (NaN if blind)."""
    unknown = np.full(len(iterations), np.nan)
    psnr = unknown if true_psnr is None else true_psnr
    best_index = None if true_psnr is None else int(np.argmax(true_psnr))
    rows = []
    for label, index in chosen.picks.items():
        note = chosen.notes.get(label, "")
        if label == "wmv":
            note = "rule fired" if chosen.wmv.fired else "rule did not fire: variance minimum"
        best_psnr = np.nan if best_index is None else float(psnr[best_index])
        rows.append(
            {
                "image": stem,
                "selector": label,
                "picked_iteration": int(iterations[index]),
                "picked_psnr": float(psnr[index]),
                "best_iteration": "" if best_index is None else int(iterations[best_index]),
                "best_psnr": best_psnr,
                "loss_db": best_psnr - float(psnr[index]),
                "note": note,
            }
        )
    return rows


def write_image_outputs(
    output_path: Path,
    stem: str,
    iterations: np.ndarray,
    paths: Sequence[Path],
    true_psnr: np.ndarray | None,
    chosen: selection.ImageSelection,
    primary: str,
    read_rgb: Callable[[Path], np.ndarray],
) -> str:
    """Write one image's picks and figures; return its line of Denoised_PSNR.txt.

    ``iterations``/``paths``/``true_psnr`` describe the candidate snapshots (true_psnr None
    when blind); ``primary`` is the selector of the Compare figure and of the line.
    """
    for label, index in chosen.picks.items():
        image_io.write_atomic(output_path / pick_file_name(stem, label), paths[index].read_bytes())
    picks = {display_name(label): int(iterations[index]) for label, index in chosen.picks.items()}
    if chosen.distributions is not None:
        write_scores(output_path, stem, iterations, true_psnr, chosen.distributions, picks)
    if chosen.wmv is not None:
        stop = chosen.wmv.stop_index
        biqan_plots.plot_wmv_variance(
            iterations,
            chosen.wmv.variances,
            int(iterations[chosen.wmv.pick_index]),
            None if stop is None else int(iterations[stop]),
            f"{stem}: windowed moving variance",
            output_path / f"{stem}_wmv_variance.png",
        )
    pick = chosen.picks[primary]
    name = display_name(primary)
    if true_psnr is None:
        return f"{stem}: no reference; {name} pick at iteration {iterations[pick]}"
    best = int(np.argmax(true_psnr))
    biqan_plots.plot_compare(
        read_rgb(paths[best]),
        f"True best: iteration {iterations[best]}, {true_psnr[best]:.2f} dB",
        read_rgb(paths[pick]),
        f"{name} pick: iteration {iterations[pick]}, {true_psnr[pick]:.2f} dB",
        output_path / f"{stem}_Compare.png",
    )
    return (
        f"{stem}: best PSNR {true_psnr[best]:.2f} dB (iteration {iterations[best]}), "
        f"denoised PSNR {true_psnr[pick]:.2f} dB (iteration {iterations[pick]}, {name}), "
        f"loss {true_psnr[best] - true_psnr[pick]:.2f} dB"
    )


def write_scores(
    output_path: Path,
    stem: str,
    iterations: np.ndarray,
    true_psnr: np.ndarray | None,
    distributions: np.ndarray,
    picks: dict[str, int],
) -> None:
    """BIQAN's predicted score curves of one image's candidates (`distributions`
    (candidates, 10)): ``<stem>_scores.png`` with the picks and ``<stem>_scores.csv``."""
    means = labels.distribution_mean(distributions)
    stds = labels.distribution_std(distributions)
    biqan_plots.plot_score_curves(
        iterations,
        means,
        stds,
        true_psnr,
        picks,
        f"{stem}: BIQAN scores",
        output_path / f"{stem}_scores.png",
    )
    psnr = true_psnr if true_psnr is not None else np.full(len(iterations), np.nan)
    biqan_eval.write_table(
        output_path / f"{stem}_scores.csv",
        [
            {
                "iteration": int(iteration),
                "predicted_mean": format_number(mean),
                "predicted_std": format_number(std),
                "true_psnr": format_number(value),
            }
            for iteration, mean, std, value in zip(iterations, means, stds, psnr)
        ],
    )


def write_summary(
    output_path: Path,
    rows: Sequence[dict],
    image_lines: Sequence[str],
    primary: str,
    noisy_psnr: dict[str, float] | None = None,
) -> list[str]:
    """Write selection.csv and Denoised_PSNR.txt; return the text's lines.

    The text ends with the means of the primary selector, the mean noisy input PSNR and each
    selector's mean picked PSNR beside it (when ``noisy_psnr``, image -> dB, knows every image
    with a reference), and the mean gap to the true best per selector, over the images that
    have a reference.
    """
    biqan_eval.write_table(
        output_path / SELECTION_FILE,
        [
            {
                key: format_number(value) if isinstance(value, float) else value
                for key, value in row.items()
            }
            for row in rows
        ],
    )
    lines = list(image_lines)
    referenced = [row for row in rows if np.isfinite(row["best_psnr"])]
    primary_rows = [row for row in referenced if row["selector"] == primary]
    if primary_rows:
        lines.append(
            f"Mean best PSNR: {np.mean([row['best_psnr'] for row in primary_rows]):.2f} dB"
        )
        lines.append(
            f"Mean denoised PSNR ({display_name(primary)}): "
            f"{np.mean([row['picked_psnr'] for row in primary_rows]):.2f} dB"
        )
    noisy = [(noisy_psnr or {}).get(row["image"], np.nan) for row in primary_rows]
    if primary_rows and np.all(np.isfinite(noisy)):
        lines += gain_lines(referenced, float(np.mean(noisy)))
    gaps = biqan_eval.mean_gap_by_selector(referenced)
    lines.append(
        "Mean gap to the true best: "
        + (
            ", ".join(f"{label} {gap:.2f} dB" for label, gap in gaps.items())
            or "n/a (no image has a reference)"
        )
    )
    image_io.write_text(output_path / DENOISED_PSNR_FILE, "\n".join(lines) + "\n")
    return lines


def gain_lines(referenced: Sequence[dict], mean_noisy: float) -> list[str]:
    """The mean noisy input PSNR, then each selector's mean picked PSNR and gain over it (dB)."""
    picked: dict[str, list[float]] = {}
    for row in referenced:
        picked.setdefault(row["selector"], []).append(row["picked_psnr"])
    means = {label: float(np.mean(values)) for label, values in picked.items()}
    return [
        f"Mean noisy input PSNR: {mean_noisy:.2f} dB",
        "Mean picked PSNR (gain over the noisy input): "
        + ", ".join(
            f"{label} {value:.2f} dB ({value - mean_noisy:+.2f})" for label, value in means.items()
        ),
    ]
