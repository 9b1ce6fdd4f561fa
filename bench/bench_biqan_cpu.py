"""BIQAN on the CPU: Keras' mixed precision (bf16) against fp32, speed and scores.

    KERAS_BACKEND=torch python -m bench.bench_biqan_cpu [--checkpoint FOLDER]

Speed: the paper's network (MobileNet, alpha 1, 224 px) built under each dtype policy,
images per second of scoring (a batch of 32) and of training steps (a batch of 16, the EMD loss
of step 3), minimum of `--repeats` after a warm-up. Scores: a trained checkpoint (`--checkpoint`,
e.g. the one `python -m tests.biqan.learning_task OUT` writes to OUT/checkpoints) rebuilt under
each policy scores the same snapshots (the learning task's noisy copies, PSNR known): the largest
difference of the mean scores, and each policy's within-image SRCC against PSNR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np

from models import biqan
from models.biqan_config import BiqanConfig
from utils import image_io
from utils.biqan import evaluation
from utils.biqan import train as biqan_train

POLICIES = ("float32", "mixed_bfloat16")


def seconds(work, repeats: int) -> float:
    """Minimum seconds of `work()` over `repeats` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def speed_row(policy: str, repeats: int) -> str:
    """Markdown row: images per second of scoring and of training under `policy`."""
    keras.config.set_dtype_policy(policy)
    config = BiqanConfig()
    model = biqan.build_biqan(config, imagenet=False)
    biqan_train.compile_stage(model, stage=1, learning_rate=1e-3)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (32, config.image_size, config.image_size, 3)).astype("float32")
    targets = rng.dirichlet(np.ones(10), 16).astype("float32")
    score = seconds(lambda: model.predict_on_batch(images), repeats)
    train = seconds(lambda: model.train_on_batch(images[:16], targets), repeats)
    return f"| {policy} | {32 / score:.1f} | {16 / train:.1f} |"


def snapshot_pixels(paths: list[Path]) -> np.ndarray:
    """The snapshots (N, S, S, 3) preprocessed for the network (whole images: the learning
    task's crop is the image)."""
    return biqan.preprocess_pixels(np.stack([image_io.read_rgb(path) for path in paths]))


def score_rows(checkpoint: Path) -> list[str]:
    """Markdown rows: each policy's within-image SRCC of the learning task's validation
    snapshots, and the largest difference of mean scores from fp32's."""
    from tests.biqan import learning_task

    folder = checkpoint.parent / "bench_snapshots"
    images = []
    for image in learning_task.VALIDATION_IMAGES:
        paths, psnrs = learning_task.write_snapshots(folder, image)
        images.append((paths, psnrs))
    means = {}
    for policy in POLICIES:
        keras.config.set_dtype_policy(policy)
        model, config, _ = biqan.load_biqan(checkpoint)
        means[policy] = [
            biqan.predict_distributions(model, snapshot_pixels(paths)) @ np.arange(1, 11)
            for paths, _ in images
        ]
    rows = []
    for policy in POLICIES:
        srcc = np.mean(
            [
                evaluation.spearman(scores, psnrs)
                for scores, (_, psnrs) in zip(means[policy], images)
            ]
        )
        largest = max(float(np.abs(a - b).max()) for a, b in zip(means[policy], means[POLICIES[0]]))
        rows.append(f"| {policy} | {srcc:.3f} | {largest:.4f} |")
    return rows


def main(args: argparse.Namespace) -> int:
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}")
    print("\n| policy | scoring, images/s | training, images/s |\n|---|---|---|")
    for policy in POLICIES:
        print(speed_row(policy, args.repeats), flush=True)
    if args.checkpoint:
        print(
            "\n| policy | within-image SRCC vs PSNR | largest mean-score difference from float32 |"
        )
        print("|---|---|---|")
        print("\n".join(score_rows(args.checkpoint)))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, help="a trained BIQAN checkpoint folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
