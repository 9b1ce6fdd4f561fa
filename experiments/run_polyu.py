"""DIP runs (step 1, run_BDN.py) on a deterministic subset of the PolyU crops.

These runs are the training data of BIQAN (steps 2-3) and the tuning data for early stopping.
The subset is every `--every`-th pair sorted by name, starting at `--offset` (default every 4th
from the first: 25 of the 100 PolyU pairs); it is materialised as copies under
`<crops>/PolyU_every<N>_<offset>/{real,mean}` so that run_BDN.py sees a plain folder.
Rerunning the same command resumes (run_BDN.py skips finished images). `--code` runs the
run_BDN.py of a frozen copy of the repository (long runs stay on one code version while the
checkout is edited).

    nohup nice -n 10 /work/venv/bin/python experiments/run_polyu.py \\
        --crops devdata/crops --out devdata/runs/PolyU_s0 --seed 0 --code devdata/code/SHA > devdata/logs/polyu_s0.log 2>&1 &

Full scale on a GPU (512x512 originals, the paper's 3000 iterations, all 100 images):

    python experiments/run_polyu.py --crops ../shared/data --every 1 --num_iter 3000 \\
        --out devdata/full/runs/PolyU_s0 --gpu_id 0
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from experiments import common

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def subset(crops: Path, dataset: str, every: int, offset: int, root: Path | None = None) -> Path:
    """Copy every `every`-th pair (sorted by name, from `offset`) into `<root>/<dataset>_every<N>_<offset>`
    (root defaults to `crops`; give another one when `crops` is the read-only shared data); return it."""
    if every == 1 and offset == 0:
        return crops / dataset
    real_dir, mean_dir = crops / dataset / "real", crops / dataset / "mean"
    reals = sorted(p for p in real_dir.iterdir() if p.suffix.lower() in SUFFIXES)
    chosen = reals[offset::every]
    target = Path(root or crops) / f"{dataset}_every{every}_{offset}"
    for kind in ("real", "mean"):
        (target / kind).mkdir(parents=True, exist_ok=True)
    for real in chosen:
        means = [p for p in mean_dir.iterdir() if p.stem == real.stem]
        if len(means) != 1:
            raise SystemExit(f"{real}: no unique clean reference in {mean_dir}")
        for source, kind in ((real, "real"), (means[0], "mean")):
            destination = target / kind / source.name
            if not destination.exists():
                shutil.copyfile(source, destination)
    return target


def run_bdn_command(
    real: Path,
    mean: Path,
    out: Path,
    args: argparse.Namespace,
    init_from: str = "scratch",
    seed: int | None = None,
) -> list[str]:
    """The run_BDN.py command line shared by the experiments (run_BDN.py taken from `args.code`)."""
    return [
        sys.executable,
        str(Path(args.code) / "run_BDN.py"),
        "--dataset_real_path",
        str(real),
        "--dataset_mean_path",
        str(mean),
        "--output_path",
        str(out),
        "--num_iter",
        str(args.num_iter),
        "--save_iter",
        str(args.save_iter),
        "--seed",
        str(args.seed if seed is None else seed),
        "--init_from",
        init_from,
        "--gpu_id",
        args.gpu_id,
        "--quiet",
        "--show_iter",
        str(args.show_iter),
        "--precision",
        args.precision,
    ]


def main(args: argparse.Namespace) -> int:
    folder = subset(Path(args.crops), args.dataset, args.every, args.offset, args.subsets)
    command = run_bdn_command(folder / "real", folder / "mean", Path(args.out), args)
    common.wait_until_free(Path(args.out))
    print(" ".join(command), flush=True)
    return subprocess.call(command)


def add_run_flags(parser: argparse.ArgumentParser, num_iter: int = 1200) -> None:
    parser.add_argument(
        "--num_iter", type=int, default=num_iter, help=f"iterations per image (default {num_iter})"
    )
    parser.add_argument(
        "--save_iter", type=int, default=20, help="snapshot every N iterations (default 20)"
    )
    parser.add_argument("--gpu_id", default="cpu", help="'cpu' (default) or a CUDA device id")
    parser.add_argument(
        "--show_iter", type=int, default=200, help="log a line every N iterations (default 200)"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        help="run_BDN.py's --precision (default auto: bf16 where the device computes it natively)",
    )
    parser.add_argument(
        "--code",
        default=str(REPO),
        help="repository root whose run_BDN.py is run (default this checkout); a frozen copy, e.g. "
        "`git archive HEAD | tar -x -C devdata/code/SHA`, keeps long runs safe from edits",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_folder_flags(parser, "crops")
    parser.add_argument(
        "--subsets",
        default=None,
        help="where subset folders are made (default: inside --crops; give one when --crops is ../shared/data)",
    )
    parser.add_argument("--dataset", default="PolyU", help="dataset folder name (default PolyU)")
    parser.add_argument(
        "--every", type=int, default=4, help="take every N-th pair sorted by name (default 4)"
    )
    parser.add_argument(
        "--offset", type=int, default=0, help="index of the first pair taken (default 0)"
    )
    parser.add_argument(
        "--out",
        default="devdata/runs/PolyU_s0",
        help="run_BDN output folder (default devdata/runs/PolyU_s0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="run_BDN seed (default 0)")
    add_run_flags(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
