"""Before/after figure of one image of a run_BDN.py run: noisy | denoised | clean, with PSNRs.

The denoised image is the run's result for that image: the early-stopping pick (denoised.png)
or, without early stopping, the last snapshot. The noisy and clean files are found from the
run's args.json (paths relative to the folder run_BDN.py was started in). Example, after the
README's quick start:

    python experiments/before_after.py --run result/sample --image astronaut \
        --output docs/figures/sample_before_after.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from utils import image_io, metrics, plots, run_output
from utils.dip import planning, reconstruction
from utils.run_output import SUMMARY_FILE


def read_json(path: Path) -> dict:
    """A JSON file of the run; ValueError naming it when missing or broken."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; is this a finished run_BDN.py image?") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({error})") from None


def sources(run: Path, stem: str) -> tuple[list[Path], dict]:
    """([noisy, denoised(, clean)] files of image `stem` of the run, its summary)."""
    record = read_json(run / run_output.RUN_RECORD_FILE)
    summary = read_json(run / stem / SUMMARY_FILE)
    clean_folder = record["dataset_mean_path"]
    jobs = planning.plan_jobs(
        Path(record["dataset_real_path"]), None if clean_folder is None else Path(clean_folder)
    )
    job = next((job for job in jobs if job.stem == stem), None)
    if job is None:
        raise ValueError(f"{record['dataset_real_path']}: no noisy image named {stem}")
    paths = [job.noisy, reconstruction.output_image(run / stem, summary)]
    return paths + ([] if job.clean is None else [job.clean]), summary


def panels(paths: list[Path], summary: dict) -> list[tuple[np.ndarray, str]]:
    """(pixels, title) of the noisy input, the run's result and, if given, the clean reference.

    Pixels are [0, 1], HWC or HW; titles give the PSNR against the reference where one exists.
    """
    noisy, denoised, *clean = [image_io.read_image(path).pixels for path in paths]
    how = (
        f"pick, iteration {summary['picked_iteration']}"
        if summary["picked_iteration"] is not None
        else f"last snapshot, iteration {summary['iterations']}"
    )
    if not clean:
        return [(noisy, "noisy input"), (denoised, f"denoised ({how})")]
    return [
        (noisy, f"noisy input: {metrics.psnr(noisy, clean[0]):.2f} dB"),
        (denoised, f"denoised ({how}): {metrics.psnr(denoised, clean[0]):.2f} dB"),
        (clean[0], "clean reference"),
    ]


def main(args: argparse.Namespace) -> int:
    """Write the figure; 2 with a one-line error when the run or image is not usable."""
    try:
        if args.output.suffix.lower() != ".png":
            raise ValueError(f"{args.output}: the figure is written as PNG, name it *.png")
        paths, summary = sources(args.run, args.image)
        if args.output.resolve() in {path.resolve() for path in paths}:
            raise ValueError(f"{args.output}: is an image the figure reads; choose another name")
        row = panels(paths, summary)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    plots.image_row(row, args.output)
    print(f"{args.output}: " + " | ".join(title for _, title in row))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run_BDN.py output folder")
    parser.add_argument("--image", required=True, help="image name (file stem)")
    parser.add_argument("--output", type=Path, required=True, help="figure to write (.png)")
    sys.exit(main(parser.parse_args()))
