"""Issue 26: seed averaging and the CBM3D blend at each size, from rows kept in `results/`.

    python -m experiments.blend_study compute   # devdata runs and crops -> results/blend (minutes)
    python -m experiments.blend_study report [--write]   # results/blend -> the table (seconds)

A row is a fact about pixels, not about a rule: one image's DIP output (one fit's snapshot, or
the mean of the snapshots of seeds 0..K-1), named by the iterations it takes (`picks`: "1400",
or "1400;1720;2140" for seeds 0, 1, 2), blended with CBM3D at the σ tuned on that size's PolyU
crops (`scale_study.cbm3d_tuned`) as `weight * dip + (1 - weight) * cbm3d`, and its PSNR at
every weight of `WEIGHTS` (a column each; 1: DIP alone, 0: CBM3D alone).

`compute` reads the runs that `scale_study` tables (their rows under `results/`, their
snapshots in the git-ignored run folders named by `RUN_FOLDERS`) and adds the rows missing:
every snapshot of every CC image run (every seed) and PolyU tuning run (seed 0) whose snapshots
are there, so that a rule retuned later finds the rows of its new picks, and for a CC image
fitted at several seeds the mean of the shipped rules' picks (`scale_study.shipped_rules`).
Rows already written stay (their snapshots may be gone: on a new machine they cannot be
recomputed). `report` takes each shipped rule's current picks: the weight tuned on PolyU (the
mean PSNR of the blended picks), and CC's mean PSNR of one fit (every seed's run), the seed mean
and both blended, each against CBM3D on the same runs. Runs whose picks have no row (the rules
moved after their snapshots were gone) are left out, and counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import scale_study
from experiments.cbm3d_full import read_rgb
from experiments.common import REPO, add_report_flags, publish_table
from utils import image_io, metrics, run_output, selection

RESULTS = REPO / "results"
ROWS = "blend"  # RESULTS/blend/<size>px/<precision>.csv
TABLE_FILE = "blend.md"  # RESULTS/blend.md, and its copy in the document
DOC_BLOCK = "blend"  # this table's block in docs/REPRODUCTION.md
SCALE_RUNS = REPO / "devdata" / "scale"  # experiments/scale_runs.sh
RUN_FOLDERS = {
    64: REPO / "devdata" / "precision",
    128: SCALE_RUNS,
    256: SCALE_RUNS,
    512: SCALE_RUNS,
}
WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
OUTPUTS = ("one fit", "seed mean")  # one seed's pick; the mean of the picks of seeds 0, 1, 2...
# seed: the fit's seed for "one fit", the number of seeds averaged for "seed mean"
KEY = ["set", "stem", "output", "seed", "picks"]  # one output's row
WEIGHT_COLUMNS = [f"{weight:.1f}" for weight in WEIGHTS]  # its blended PSNR at each weight
COLUMNS = KEY + ["sigma"] + WEIGHT_COLUMNS
RULES = scale_study.shipped_rules()


@dataclasses.dataclass(frozen=True)
class Output:
    """One image's DIP output as its rows name it: `kind` (one of OUTPUTS), `seed` (the fit's
    seed, or the number of seeds averaged) and the snapshot taken from each of `runs`
    (`iterations`, one per run)."""

    kind: str
    seed: int
    runs: tuple[scale_study.ImageRun, ...]
    iterations: tuple[int, ...]

    @property
    def key(self) -> tuple[str, str, str, int, str]:
        """The values of KEY."""
        first = self.runs[0]
        picks = ";".join(str(iteration) for iteration in self.iterations)
        return first.set_name, first.stem, self.kind, self.seed, picks


def rule_outputs(runs_of_image: list[scale_study.ImageRun], rule: scale_study.Rule) -> list[Output]:
    """The outputs `rule` gives for one image (its runs, one per seed, in seed order): each
    run's pick and, for several seeds, the mean of their picks."""
    picks = tuple(int(run.iterations[rule.pick(run)]) for run in runs_of_image)
    found = [
        Output(OUTPUTS[0], run.seed, (run,), (pick,)) for run, pick in zip(runs_of_image, picks)
    ]
    if len(runs_of_image) > 1:
        found.append(Output(OUTPUTS[1], len(runs_of_image), tuple(runs_of_image), picks))
    return found


def snapshot_outputs(run: scale_study.ImageRun) -> list[Output]:
    """One fit's output at each of the run's snapshots (the candidates any rule can pick)."""
    return [Output(OUTPUTS[0], run.seed, (run,), (int(iteration),)) for iteration in run.iterations]


def image_runs(
    runs: list[scale_study.ImageRun], size: int, precision: str
) -> dict[tuple[str, str], list[scale_study.ImageRun]]:
    """The blended runs of one size and precision by (set, image stem), in seed order: every CC
    seed, and seed 0 of the PolyU tuning sets."""
    images: dict[tuple[str, str], list[scale_study.ImageRun]] = {}
    for run in sorted(runs, key=lambda run: run.seed):
        if (run.size, run.precision) == (size, precision) and (
            run.set_name == scale_study.REPORT_SET
            or (scale_study.is_tuning_set(run.set_name) and run.seed == 0)
        ):
            images.setdefault((run.set_name, run.stem), []).append(run)
    return images


def cbm3d_output(noisy: np.ndarray, sigma_255: float) -> np.ndarray:
    """CBM3D of `noisy` (HWC float in [0, 1]) at `sigma_255`, quantised to 8 bits, in [0, 1]."""
    import bm3d

    estimate = bm3d.bm3d_rgb(noisy.astype(np.float64), sigma_255 / 255.0)
    return image_io.quantize(np.clip(estimate, 0.0, 1.0), 8) / 255.0


def run_folder(run_root: Path, run: scale_study.ImageRun) -> Path:
    """The image folder of `run` (its snapshots and input.json) under `run_root`."""
    return run_root / f"{run.size}px" / run.precision / f"{run.set_name}_s{run.seed}" / run.stem


def snapshot_paths(output: Output, run_root: Path) -> list[Path]:
    """The snapshot files the output averages."""
    return [
        run_output.snapshot_path(run_folder(run_root, run), iteration)
        for run, iteration in zip(output.runs, output.iterations)
    ]


def blend_row(
    key: tuple, sigma: float, dip: np.ndarray, cbm3d: np.ndarray, clean: np.ndarray
) -> dict:
    """The row of one output: the PSNR of weight * dip + (1 - weight) * cbm3d at each weight."""
    row = dict(zip(KEY, key)) | {"sigma": sigma}
    for column, weight in zip(WEIGHT_COLUMNS, WEIGHTS):
        row[column] = round(metrics.psnr(weight * dip + (1 - weight) * cbm3d, clean), 4)
    return row


def image_rows(
    runs_of_image: list[scale_study.ImageRun], run_root: Path, sigma: float, kept: pd.DataFrame
) -> list[dict]:
    """Rows of one image (its runs at every seed of one size and precision): those in `kept`
    (its rows at this σ), and the missing rows of its snapshots and of the shipped rules' seed
    means, computed where their snapshots are still there."""
    have = set(kept[KEY].itertuples(index=False, name=None))
    needed = {
        output.key: output
        for rule in RULES.values()
        for output in rule_outputs(runs_of_image, rule)
    }
    every = {output.key: output for run in runs_of_image for output in snapshot_outputs(run)}
    todo = {
        key: output
        for key, output in (every | needed).items()
        if key not in have and all(path.is_file() for path in snapshot_paths(output, run_root))
    }
    gone = [key for key in needed if key not in have and key not in todo]
    if gone:
        print(f"{runs_of_image[0].stem}: {len(gone)} picked output(s) without rows, snapshots gone")
    rows = kept.to_dict("records")
    if not todo:
        return rows
    folder = run_folder(run_root, next(iter(todo.values())).runs[0])
    inputs = json.loads((folder / run_output.INPUT_FILE).read_text())
    noisy, clean = read_rgb(REPO / inputs["noisy"]), read_rgb(REPO / inputs["clean"])
    cbm3d = cbm3d_output(noisy, sigma)
    for key, output in todo.items():
        pixels = np.mean([image_io.read_rgb(path) for path in snapshot_paths(output, run_root)], 0)
        rows.append(blend_row(key, sigma, pixels, cbm3d, clean))
    return rows


def row_order(row: dict) -> tuple:
    """An image's rows in writing order: output, seed, picks (as numbers)."""
    picks = tuple(int(pick) for pick in str(row["picks"]).split(";"))
    return OUTPUTS.index(row["output"]), row["seed"], picks


def read_rows(path: Path) -> pd.DataFrame:
    """The rows of one size and precision (`picks` as text), or none."""
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, dtype={"picks": str})


def compute(results: Path) -> int:
    """Add the rows the shipped rules' picks need, for every size and precision whose runs and
    CBM3D σ are there, keeping the rows already written (`image_rows`): of every collected run,
    its CC folder filling or not (`scale_study.read_all_runs`), while its snapshots are here."""
    runs = scale_study.read_all_runs(results)
    for size, precision in sorted({(run.size, run.precision) for run in runs}):
        if size not in RUN_FOLDERS or precision not in scale_study.PRECISIONS:
            continue
        tuned = scale_study.cbm3d_tuned(results, size)
        if tuned is None:
            print(f"{size}px: no CBM3D σ tuned yet; skipped")
            continue
        target = results / ROWS / f"{size}px" / f"{precision}.csv"
        before = read_rows(target)
        before = before[before["sigma"] == tuned[0]]  # rows at another σ are stale
        rows = []
        for (set_name, stem), runs_of_image in sorted(image_runs(runs, size, precision).items()):
            kept = before[(before["set"] == set_name) & (before["stem"] == stem)]
            rows += sorted(
                image_rows(runs_of_image, RUN_FOLDERS[size], tuned[0], kept), key=row_order
            )
            print(f"{size}px {precision} {set_name} {stem}", flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        image_io.write_text(target, pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
    return 0


def mean_psnr(curves: list[pd.Series], weight: float) -> str:
    """The mean PSNR of `curves` (PSNR by weight) at `weight`, and against CBM3D (weight 0) on
    the same outputs, or "-" for none."""
    if not curves:
        return "-"
    blended = np.mean([curve[weight] for curve in curves])
    return f"{blended:.2f} ({blended - np.mean([curve[0.0] for curve in curves]):+.2f})"


def cbm3d_cell(curves: list[pd.Series]) -> str:
    """CBM3D's mean PSNR (the curves at weight 0) over `curves`, or "-" for none."""
    return f"{np.mean([curve[0.0] for curve in curves]):.2f}" if curves else "-"


def counted(found: int, total: int) -> str:
    """`found`, or "found of total" where some are missing."""
    return f"{found}" if found == total else f"{found} of {total}"


def found_curves(
    images: dict, rule: scale_study.Rule, curves: dict[tuple, pd.Series], report: bool, kind: str
) -> tuple[list[pd.Series], int]:
    """The curves (PSNR by weight) of `rule`'s outputs of `kind` on the CC (`report`) or the
    PolyU images that have rows, and how many such outputs there are in all."""
    outputs = [
        output
        for (set_name, _), runs_of_image in images.items()
        if (set_name == scale_study.REPORT_SET) == report
        for output in rule_outputs(runs_of_image, rule)
        if output.kind == kind
    ]
    return [curves[output.key] for output in outputs if output.key in curves], len(outputs)


def rule_line(size: int, precision: str, name: str, images: dict, curves: dict) -> str:
    """The table row of the shipped rule `name` at one size and precision: its outputs of
    `images` (`image_runs`) found in `curves` (PSNR by weight, by KEY)."""
    rule = RULES[name]
    polyu, polyu_total = found_curves(images, rule, curves, False, OUTPUTS[0])
    one, one_total = found_curves(images, rule, curves, True, OUTPUTS[0])
    mean, mean_total = found_curves(images, rule, curves, True, OUTPUTS[1])
    weight = pd.concat(polyu, axis=1).mean(axis=1).idxmax() if polyu else None
    seeds = max((len(runs) for (set_name, _), runs in images.items()
                 if set_name == scale_study.REPORT_SET), default=0)  # fmt: skip
    averaged = ""
    if mean_total:
        images_found = "" if len(mean) == mean_total else f"; {len(mean)} of {mean_total} images"
        averaged = f" ({seeds}{images_found})"
    cells = [
        str(size),
        precision,
        name,
        counted(len(one), one_total),
        cbm3d_cell(one),
        mean_psnr(one, 1.0),
        mean_psnr(mean, 1.0) + averaged,
        "-" if weight is None else f"{weight:g} ({counted(len(polyu), polyu_total)})",
        "-" if weight is None else mean_psnr(one, weight),
        "-" if weight is None else mean_psnr(mean, weight),
    ]
    return "| " + " | ".join(cells) + " |"


def snapshot_curves(images: dict, curves: dict, report: bool) -> tuple[list[tuple], int]:
    """(iterations (n,), blended PSNR (n, weights)) of each one-fit run of the CC (`report`) or
    PolyU images (`image_runs`) whose every snapshot has a row, and how many runs there are."""
    found, total = [], 0
    for (set_name, _), runs_of_image in images.items():
        if (set_name == scale_study.REPORT_SET) != report:
            continue
        for run in runs_of_image:
            total += 1
            keys = [output.key for output in snapshot_outputs(run)]
            if all(key in curves for key in keys):
                found.append((run.iterations, np.array([curves[key].to_numpy() for key in keys])))
    return found, total


def joint_setting(found: list[tuple]) -> tuple[int, int]:
    """(stop iteration, weight index) with the best mean blended PSNR over the `found` curves,
    among the iterations they all have."""
    common = sorted(set.intersection(*(set(iterations.tolist()) for iterations, _ in found)))
    stack = np.array(
        [[psnr[list(iterations).index(stop)] for stop in common] for iterations, psnr in found]
    )
    stop, weight = np.unravel_index(np.argmax(stack.mean(axis=0)), stack.shape[1:])
    return int(common[stop]), int(weight)


def joint_line(size: int, precision: str, name: str, setting, cc: tuple, polyu: str) -> str:
    """A table row for the blend of the snapshot at `setting`'s stop with CBM3D at its weight."""
    (found, total), (stop, weight) = cc, setting
    picked = [psnr[selection.select_at_or_after(iterations, stop)] for iterations, psnr in found]
    curves = [pd.Series(row, index=WEIGHTS) for row in picked]
    cells = [
        str(size), precision, f"{name}: fixed:{stop}", counted(len(found), total),
        cbm3d_cell(curves), mean_psnr(curves, 1.0), "-",
        f"{WEIGHTS[weight]:g} ({polyu})", mean_psnr(curves, WEIGHTS[weight]), "-",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def joint_lines(size: int, precision: str, images: dict, curves: dict) -> list[str]:
    """Rows of one fit's stop and blend weight tuned together for the blend: on the PolyU runs
    whose every snapshot has a row, and on the CC runs themselves in hindsight (bound)."""
    polyu, polyu_total = snapshot_curves(images, curves, False)
    cc = snapshot_curves(images, curves, True)
    if not polyu or not cc[0]:
        return []
    return [
        joint_line(size, precision, "stop and weight, tuned", joint_setting(polyu), cc,
                   counted(len(polyu), polyu_total)),
        joint_line(size, precision, "stop and weight, tuned (bound)", joint_setting(cc[0]), cc,
                   "CC itself, in hindsight"),
    ]  # fmt: skip


def report_lines(results: Path) -> list[str]:
    """The markdown table: per size, precision and shipped rule, CC's mean PSNR of each output
    at the rule's current picks."""
    runs = scale_study.read_runs(results)
    lines = [
        "Seed averaging and the CBM3D blend on the CC crops at the shipped rules' picks (mean PSNR, "
        "dB, and against CBM3D tuned on PolyU on the same runs; the blend weight tuned on the "
        "seed-0 picks of the PolyU crops; runs whose picks have no blend row, their snapshots "
        "gone, are left out and counted; `stop and weight, tuned`: one fit's stop, a fixed "
        "iteration, and the weight tuned together for the blend on the PolyU runs whose every "
        "snapshot has a row, and (bound) on the CC runs themselves in hindsight, not a result):",
        "",
        "| size | precision | rule | CC runs | CBM3D | one fit | seed mean (seeds) | weight "
        "(PolyU images) | one fit, blended | seed mean, blended |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(
        (results / ROWS).glob("*px/*.csv"), key=lambda path: (int(path.parent.name[:-2]), path.stem)
    ):
        size, precision = int(path.parent.name[:-2]), path.stem
        rows = read_rows(path)
        curves = {
            tuple(row[:-1]): pd.Series(row[-1], index=WEIGHTS)
            for row in zip(*(rows[column] for column in KEY), rows[WEIGHT_COLUMNS].to_numpy())
        }
        images = image_runs(runs, size, precision)
        if not any(set_name == scale_study.REPORT_SET for set_name, _ in images):
            continue  # its CC folder is still filling (scale_study.waiting_folders)
        lines += [rule_line(size, precision, name, images, curves) for name in RULES]
        lines += joint_lines(size, precision, images, curves)
    return lines


def main(args: argparse.Namespace) -> int:
    if args.action == "compute":
        return compute(args.results)
    publish_table(report_lines(args.results), args.results / TABLE_FILE, DOC_BLOCK, args.write)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("compute", "report"))
    add_report_flags(parser, RESULTS, TABLE_FILE)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
