"""utils/biqan/data.py: decoding, train/test views, the PyDataset, split by source image."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.transform  # noqa: E402

from models import biqan  # noqa: E402
from utils import image_io  # noqa: E402
from utils.biqan import data as biqan_data  # noqa: E402


def test_read_rgb_handles_gray_and_16_bit(tmp_path: Path):
    gray = np.random.default_rng(0).random((6, 5))
    image_io.write_png(tmp_path / "gray.png", gray, bit_depth=16)
    pixels = image_io.read_rgb(tmp_path / "gray.png")
    assert pixels.shape == (6, 5, 3) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[..., 2], gray, atol=1 / 65535)
    with pytest.raises(ValueError, match="no such file"):
        image_io.read_rgb(tmp_path / "absent.png")


def test_views_of_both_input_modes():
    image = np.random.default_rng(0).random((50, 70, 3)).astype(np.float32)
    rng = np.random.default_rng(1)
    assert biqan_data.resize_side(224) == 256
    assert biqan_data.training_view(image, "resize", 32, rng).shape == (32, 32, 3)
    crop = biqan_data.training_view(image, "crop", 32, rng)
    assert crop.shape == (32, 32, 3)
    single = biqan_data.evaluation_views(image, "resize", 32, 3)
    assert single.shape == (1, 32, 32, 3)
    resized = skimage.transform.resize(image, (37, 52), order=1, preserve_range=True)
    np.testing.assert_allclose(single[0], resized[2:34, 10:42], atol=1e-6)
    np.testing.assert_array_equal(
        biqan_data.evaluation_views(image, "crop", 32, 1)[0], image[9:41, 19:51]
    )
    views = biqan_data.evaluation_views(image, "crop", 32, 2)
    assert views.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(views[0], image[:32, :32])
    np.testing.assert_array_equal(views[3], image[18:, 38:])
    with pytest.raises(ValueError, match="smaller than"):
        biqan_data.evaluation_views(image, "crop", 64, 1)
    with pytest.raises(ValueError, match="input mode"):
        biqan_data.training_view(image, "squash", 32, rng)


def write_snapshots(folder: Path, count: int, size: int = 40) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for number in range(count):
        path = folder / f"{number:05d}.png"
        image_io.write_png(path, rng.random((size, size, 3)))
        paths.append(path)
    return paths


def test_dataset_batches_are_seeded_and_complete(tmp_path: Path):
    paths = write_snapshots(tmp_path, 5)
    targets = np.eye(10)[:5]
    dataset = biqan_data.SnapshotDataset(paths, targets, 2, "crop", 32, augment=True, seed=3)
    again = biqan_data.SnapshotDataset(paths, targets, 2, "crop", 32, augment=True, seed=3)
    assert len(dataset) == 3
    pixels, batch_targets = dataset[2]
    assert pixels.shape == (1, 32, 32, 3) and batch_targets.shape == (1, 10)
    assert pixels.min() >= -1 and pixels.max() <= 1
    np.testing.assert_array_equal(dataset[0][0], again[0][0])
    seen = np.concatenate([dataset[index][1] for index in range(len(dataset))])
    np.testing.assert_array_equal(np.sort(seen.argmax(axis=1)), np.arange(5))
    first_epoch = dataset[0][0]
    dataset.on_epoch_end()
    assert not np.array_equal(dataset[0][0], first_epoch)
    evaluation = biqan_data.SnapshotDataset(
        paths, targets, 2, "crop", 32, augment=False, crops_per_side=2
    )
    pixels, batch_targets = evaluation[0]
    assert pixels.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(batch_targets.argmax(axis=1), [0] * 4 + [1] * 4)
    with pytest.raises(ValueError, match="labels"):
        biqan_data.SnapshotDataset(paths, targets[:3], 2, "crop", 32, augment=True)


def test_score_snapshots_averages_the_views(tmp_path: Path):
    paths = write_snapshots(tmp_path, 3)
    model = biqan.build_biqan(biqan.BiqanConfig(alpha=0.25, image_size=32))
    scores = biqan_data.score_snapshots(model, paths, "crop", 32, 2, batch_size=2, workers=2)
    assert scores.shape == (3, 10)
    views = biqan_data.evaluation_views(image_io.read_rgb(paths[1]), "crop", 32, 2)
    expected = biqan.predict_distributions(model, biqan.preprocess_pixels(views)).mean(axis=0)
    np.testing.assert_allclose(scores[1], expected, atol=1e-5)


def test_split_by_source_keeps_images_whole_and_is_seeded():
    image_ids = [
        f"img{image}/{iteration:05d}.png" for image in range(10) for iteration in range(20, 101, 20)
    ]
    train, validation = biqan_data.split_by_source(image_ids, 0.2, seed=4)
    assert len(train) + len(validation) == len(image_ids)
    train_sources = {biqan_data.source_image(image_ids[row]) for row in train}
    validation_sources = {biqan_data.source_image(image_ids[row]) for row in validation}
    assert len(validation_sources) == 2 and not train_sources & validation_sources
    again = biqan_data.split_by_source(image_ids, 0.2, seed=4)
    np.testing.assert_array_equal(again[1], validation)
    other_seeds = {tuple(biqan_data.split_by_source(image_ids, 0.2, seed)[1]) for seed in range(5)}
    assert len(other_seeds) > 1
    with pytest.raises(ValueError, match="at least 2 source images"):
        biqan_data.split_by_source(["a/00020.png", "a/00040.png"], 0.5, seed=0)
    with pytest.raises(ValueError, match="no image folder"):
        biqan_data.source_image("00020.png")
