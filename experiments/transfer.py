"""Question 2: does transfer learning save DIP iterations on CC without losing peak PSNR?

For every seed, every CC image is fitted (run_BDN.py, 1200 iterations, snapshot every 20) from
each initialisation:

| init | run_BDN.py `--init_from` |
|---|---|
| `scratch` | `scratch` (the reference) |
| `previous` | `previous`: the CC images chained in name order; the first image starts from scratch and is left out of this init's statistics |
| `polyu1` | the final `net.pt` of one PolyU image fitted from scratch (the first image of `--polyu_run`) |
| `polyu_chain4` | the final `net.pt` of a PolyU chain: 4 PolyU images (every 25th by name) fitted in turn with `--init_from previous`, 1200 iterations each, seed 0 |
| `polyu_chain8_short` | the same with 8 PolyU images (every 13th), only a quarter of the iterations each (300 of 1200: stopped before the peak, before the network fits the noise) |

Per image and seed, from `psnr_avg` (the saved, averaged snapshot, against the clean mean):
the scratch run's peak P; for each init the first snapshot iteration reaching P - 0.1 dB
(`iters_to_target`, empty when never reached within the run) and the init's own peak.
Saving = 1 - iters_to_target(init) / iters_to_target(scratch).

    python experiments/transfer.py run --crops devdata/crops --runs devdata/runs --code devdata/code/SHA
    python experiments/transfer.py analyse --runs devdata/runs --tables devdata/tables

`run` is resumable (run_BDN.py skips finished images and continues an unfinished one) and runs
one fit at a time, seed by seed, so that partial results are usable early. `analyse` reads
whatever has finished and writes `transfer.csv` (per image, seed and init) and `transfer.md`.
Full scale on a GPU: `--crops ../shared/data --subsets devdata/full/subsets --runs devdata/full/runs
--polyu_run devdata/full/runs/PolyU_s0 --num_iter 3000 --gpu_id 0` (512x512 images).
"""

from __future__ import annotations

import argparse
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments import common, run_polyu
from utils import run_output

LOGGER = logging.getLogger("transfer")
INITS = ("scratch", "previous", "polyu1", "polyu_chain4", "polyu_chain8_short")
TOLERANCE_DB = 0.1
# PolyU pre-fit chains: name -> (every, offset, iterations per image as a fraction of --num_iter)
CHAINS = {"polyu_chain4": (25, 0, 1.0), "polyu_chain8_short": (13, 0, 0.25)}


def cc_run_dir(runs: Path, init: str, seed: int) -> Path:
    return runs / f"CC_{init}_s{seed}"


def chain_run_dir(runs: Path, init: str) -> Path:
    return runs / f"PolyU_{init}_s0"


def call(command: list[str]) -> int:
    common.wait_until_free(Path(command[command.index("--output_path") + 1]))
    LOGGER.info("%s", " ".join(command))
    code = subprocess.call(command)
    if code:
        LOGGER.warning("exit code %d", code)
    return code


def last_net(run_dir: Path) -> Path | None:
    """net.pt of the last finished image (sorted by name) of a run folder."""
    images = common.run_images(run_dir)
    return run_dir / images[-1] / run_output.NETWORK_FILE if images else None


def prefit_chain(args: argparse.Namespace, init: str) -> Path | None:
    """Fit the PolyU chain of `init` (resumable) and return its final net.pt."""
    every, offset, fraction = CHAINS[init]
    folder = run_polyu.subset(Path(args.crops), "PolyU", every, offset, args.subsets)
    out = chain_run_dir(Path(args.runs), init)
    iterations = max(
        args.save_iter, int(round(args.num_iter * fraction / args.save_iter)) * args.save_iter
    )
    chain_args = argparse.Namespace(**{**vars(args), "num_iter": iterations})
    call(
        run_polyu.run_bdn_command(
            folder / "real", folder / "mean", out, chain_args, "previous", seed=0
        )
    )
    expected = len(list((folder / "real").iterdir()))
    if len(common.run_images(out)) < expected:
        LOGGER.warning("%s: chain unfinished", out)
        return None
    return last_net(out)


def init_source(args: argparse.Namespace, init: str) -> str | None:
    if init in ("scratch", "previous"):
        return init
    if init == "polyu1":
        run = Path(args.polyu_run)
        images = common.run_images(run)
        if not images:
            LOGGER.warning("%s has no finished image yet: polyu1 skipped", run)
            return None
        return str(run / images[0] / run_output.NETWORK_FILE)
    net = prefit_chain(args, init)
    return str(net) if net else None


def run(args: argparse.Namespace) -> int:
    crops, runs = Path(args.crops), Path(args.runs)
    failures = 0
    for seed in args.seeds:
        for init in args.inits:
            source = init_source(args, init)
            if source is None:
                failures += 1
                continue
            command = run_polyu.run_bdn_command(
                crops / "CC" / "real",
                crops / "CC" / "mean",
                cc_run_dir(runs, init, seed),
                args,
                source,
                seed=seed,
            )
            failures += call(command) != 0
    return 1 if failures else 0


def image_init(run_dir: Path, image: str) -> str:
    """The init actually used for an image (summary.json), e.g. 'scratch' for a chain's first image."""
    import json

    path = run_dir / image / run_output.SUMMARY_FILE
    return json.loads(path.read_text()).get("init", "") if path.is_file() else ""


def analyse_rows(runs: Path, seeds: list[int], inits: list[str]) -> list[dict]:
    rows = []
    for seed in seeds:
        scratch_dir = cc_run_dir(runs, "scratch", seed)
        for image in common.run_images(scratch_dir):
            reference = common.read_metrics(scratch_dir / image)
            peak = float(np.nanmax(reference["psnr_avg"]))
            target = peak - TOLERANCE_DB
            scratch_iters = common.first_reaching(
                reference["iteration"], reference["psnr_avg"], target
            )
            for init in inits:
                run_dir = cc_run_dir(runs, init, seed)
                if not common.finished(run_dir / image):
                    continue
                metrics = common.read_metrics(run_dir / image)
                avg = metrics["psnr_avg"]
                iters = common.first_reaching(metrics["iteration"], avg, target)
                used = image_init(run_dir, image)
                rows.append(
                    {
                        "seed": seed,
                        "image": image,
                        "init": init,
                        "chain_start": init == "previous" and used == "scratch",
                        "scratch_peak": round(peak, 4),
                        "scratch_iters_to_target": scratch_iters,
                        "iters_to_target": iters,
                        "saving": round(1.0 - iters / scratch_iters, 4)
                        if np.isfinite(iters)
                        else math.nan,
                        "peak": round(float(np.nanmax(avg)), 4),
                        "peak_iteration": int(metrics["iteration"][int(np.nanargmax(avg))]),
                        "peak_minus_scratch": round(float(np.nanmax(avg)) - peak, 4),
                        "peak_raw": round(float(np.nanmax(metrics["psnr_raw"])), 4),
                        "last": round(float(avg[-1]), 4),
                        "num_iter": int(metrics["iteration"][-1]),
                    }
                )
    return rows


def summary_table(rows: list[dict], inits: list[str]) -> tuple[str, list[dict]]:
    summary = []
    for init in inits:
        chosen = [r for r in rows if r["init"] == init and not r["chain_start"]]
        if not chosen:
            continue
        iters = np.array([r["iters_to_target"] for r in chosen], dtype=float)
        scratch_iters = np.array([r["scratch_iters_to_target"] for r in chosen], dtype=float)
        run_length = np.array([r["num_iter"] for r in chosen], dtype=float)
        reached = np.isfinite(iters)
        # not reached within the run: counted as the full run length (a lower bound on the cost)
        censored = np.where(reached, iters, run_length)
        summary.append(
            {
                "init": init,
                "n": len(chosen),
                "seeds": len({r["seed"] for r in chosen}),
                "reached": f"{int(reached.sum())}/{len(chosen)}",
                "iters_to_target": common.mean_std(censored, 0),
                "saving_pct": common.mean_std(100 * (1 - censored / scratch_iters), 0),
                "total_saving_pct": f"{100 * (1 - censored.sum() / scratch_iters.sum()):.0f}",
                "peak": common.mean_std([r["peak"] for r in chosen]),
                "peak_minus_scratch": common.mean_std([r["peak_minus_scratch"] for r in chosen]),
                "peak_iteration": common.mean_std([r["peak_iteration"] for r in chosen], 0),
            }
        )
    header = [
        "init",
        "images x seeds",
        "reached scratch peak - 0.1 dB",
        "iterations to reach, never = run length (mean ± sd)",
        "saving per image % (mean ± sd)",
        "saving of summed iterations %",
        "own peak dB",
        "peak - scratch peak dB",
        "peak iteration",
    ]
    table = common.markdown_table(
        header,
        [
            [
                s["init"],
                f"{s['n']} ({s['seeds']} seeds)",
                s["reached"],
                s["iters_to_target"],
                s["saving_pct"],
                s["total_saving_pct"],
                s["peak"],
                s["peak_minus_scratch"],
                s["peak_iteration"],
            ]
            for s in summary
        ],
    )
    return table, summary


def per_image_table(rows: list[dict], inits: list[str]) -> str:
    images = sorted({r["image"] for r in rows})
    header = ["image", "scratch peak dB", "scratch iters"] + [
        f"{i} iters / peak" for i in inits if i != "scratch"
    ]
    body = []
    for image in images:
        mine = [r for r in rows if r["image"] == image]
        scratch = [r for r in mine if r["init"] == "scratch"]
        line = [
            image,
            common.mean_std([r["scratch_peak"] for r in scratch]),
            common.mean_std([r["scratch_iters_to_target"] for r in scratch], 0),
        ]
        for init in inits:
            if init == "scratch":
                continue
            chosen = [r for r in mine if r["init"] == init and not r["chain_start"]]
            if not chosen:
                line.append("-")
                continue
            iters = [r["iters_to_target"] for r in chosen]
            shown = "/".join("never" if not np.isfinite(i) else str(int(i)) for i in iters)
            line.append(f"{shown} / {np.mean([r['peak'] for r in chosen]):.2f}")
        body.append(line)
    return common.markdown_table(header, body)


def analyse(args: argparse.Namespace) -> int:
    runs, tables = Path(args.runs), Path(args.tables)
    rows = analyse_rows(runs, args.seeds, args.inits)
    common.write_csv(tables / "transfer.csv", rows)
    if not rows:
        (tables / "transfer.md").write_text("No finished CC scratch runs yet.\n")
        print("no finished CC scratch runs yet")
        return 0
    table, summary = summary_table(rows, args.inits)
    common.write_csv(tables / "transfer_summary.csv", summary)
    text = (
        f"{table}\n\nPer image (iterations to reach the scratch peak - {TOLERANCE_DB} dB, one entry per seed, "
        f"'never' = not within the run; mean own peak over seeds):\n\n{per_image_table(rows, args.inits)}\n"
    )
    common.write_table(tables, "transfer.md", text)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "action", choices=("run", "analyse"), help="run the fits, or analyse the finished ones"
    )
    common.add_folder_flags(parser, "crops")
    parser.add_argument(
        "--subsets",
        default=None,
        help="where the PolyU chain subsets are made (default: inside --crops; give one when --crops is ../shared/data)",
    )
    common.add_folder_flags(parser, "runs", "tables")
    parser.add_argument(
        "--polyu_run",
        default="devdata/runs/PolyU_s0",
        help="PolyU run whose first image's net.pt is the polyu1 init (default devdata/runs/PolyU_s0)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)"
    )
    parser.add_argument(
        "--inits",
        nargs="+",
        default=list(INITS),
        choices=INITS,
        help=f"inits (default all: {' '.join(INITS)})",
    )
    run_polyu.add_run_flags(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout
    )
    arguments = parse_args()
    sys.exit(run(arguments) if arguments.action == "run" else analyse(arguments))
