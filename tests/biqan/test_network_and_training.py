"""models/biqan.py and utils/biqan/train.py: network, EMD loss, stages, portable checkpoints and
their errors."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models import biqan  # noqa: E402
from tests.conftest import ROOT as REPOSITORY
from utils import ownership
from utils.biqan import labels  # noqa: E402
from utils.biqan import train as biqan_train

TINY = biqan.BiqanConfig(architecture="mobilenet", alpha=0.25, image_size=32)


def random_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Preprocessed random images (count, size, size, 3) in [-1, 1]."""
    return biqan.preprocess_pixels(np.random.default_rng(seed).random((count, size, size, 3)))


def save_checkpoint(folder: Path, config: biqan.BiqanConfig) -> tuple[Path, keras.Model]:
    """A freshly initialised BIQAN saved as biqan.json + weights file; the file and model."""
    folder.mkdir(parents=True, exist_ok=True)
    model = biqan.build_biqan(config)
    path = folder / "weights.001-0.100.weights.h5"
    model.save_weights(str(path))
    biqan.save_config(folder, config)
    return path, model


@pytest.mark.parametrize("architecture", ["mobilenet", "mobilenet_v2"])
def test_network_outputs_distributions(architecture):
    config = biqan.BiqanConfig(architecture=architecture, alpha=0.25, image_size=32)
    model = biqan.build_biqan(config)
    distributions = biqan.predict_distributions(model, random_images(3))
    assert distributions.shape == (3, 10)
    np.testing.assert_allclose(distributions.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("dropout").rate == 0.75
    assert model.get_layer("scores").units == 10
    assert model.get_layer(biqan.BACKBONE_NAME).name == "backbone"


def test_emd_hand_computed():
    one_hot = np.eye(10, dtype="float32")
    # One bin apart: the CDFs differ by 1 in the first bin only -> sqrt(1 / 10).
    # First vs last bin: they differ by 1 in bins 1..9 -> sqrt(9 / 10).
    # Uniform vs one-hot bin 1: differences 1 - k/10 for k = 1..9 -> sqrt(sum / 10) = sqrt(0.285).
    y_true = np.stack([one_hot[0], one_hot[0], one_hot[0], one_hot[4]])
    y_pred = np.stack([one_hot[1], one_hot[9], np.full(10, 0.1, "float32"), one_hot[4]])
    emd = keras.ops.convert_to_numpy(biqan_train.earth_movers_distance(y_true, y_pred))
    expected = [math.sqrt(0.1), math.sqrt(0.9), math.sqrt(0.285), 0.0]
    np.testing.assert_allclose(emd, expected, atol=2e-6)


def test_preprocessing_range_and_layout():
    pixels = biqan.preprocess_pixels(np.array([[[[0.0, 0.5, 1.0]]]]))
    np.testing.assert_allclose(pixels, [[[[-1.0, 0.0, 1.0]]]])
    assert pixels.dtype == np.float32
    with pytest.raises(ValueError, match="RGB"):
        biqan.preprocess_pixels(np.zeros((2, 8, 8)))


def test_stages_freeze_then_unfreeze():
    model = biqan.build_biqan(TINY)
    biqan_train.compile_stage(model, 1, 1e-3)
    assert len(model.trainable_weights) == 2
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    biqan_train.compile_stage(model, 2, 1e-4)
    assert len(model.trainable_weights) > 2
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == pytest.approx(0.9)
    with pytest.raises(ValueError, match="stage"):
        biqan_train.compile_stage(model, 3, 1e-3)


class ArrayBatches(keras.utils.PyDataset):
    """All of (images, targets) as one batch."""

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        super().__init__()
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        return self.images, self.targets


def test_fit_stage_writes_best_only_checkpoints(tmp_path: Path):
    model = biqan.build_biqan(TINY)
    images = random_images(8)
    targets = np.stack([labels.score_distribution(score) for score in np.linspace(3, 7, 8)])
    data = ArrayBatches(images, targets.astype("float32"))
    stages = [biqan_train.StageSettings(stage=1, learning_rate=1e-2, epochs=2)]
    (history,), best = biqan_train.train_stages(model, data, data, tmp_path, stages)
    assert history["epoch"] == [1, 2] and len(history["val_loss"]) == 2
    assert best == pytest.approx(min(history["val_loss"]))
    written = biqan.list_checkpoints(tmp_path)
    assert 1 <= len(written) <= 2
    assert (
        biqan.best_checkpoint(tmp_path).name
        == f"weights.{history['val_loss'].index(best) + 1:03d}-{best:.3f}.weights.h5"
    )
    # A later stage that cannot beat ``best`` writes nothing.
    later, _ = biqan_train.fit_stage(
        model,
        data,
        data,
        tmp_path,
        biqan_train.StageSettings(stage=2, learning_rate=1e-12, epochs=1),
        initial_epoch=2,
        best_val_loss=best - 1.0,
    )
    assert later["epoch"] == [3]
    assert biqan.list_checkpoints(tmp_path) == written
    assert {path.name for path in written} <= ownership.written_names(tmp_path)


def test_a_checkpoint_name_that_is_the_users_file_stops_training(tmp_path: Path):
    keras.utils.set_random_seed(0)
    model = biqan.build_biqan(TINY)
    images = random_images(8)
    targets = np.stack([labels.score_distribution(score) for score in np.linspace(3, 7, 8)])
    data = ArrayBatches(images, targets.astype("float32"))
    stage = biqan_train.StageSettings(stage=1, learning_rate=1e-2, epochs=1)
    biqan_train.fit_stage(model, data, data, tmp_path / "first", stage, 0, np.inf)
    (written,) = biqan.list_checkpoints(tmp_path / "first")
    (tmp_path / "mine").mkdir()
    mine = tmp_path / "mine" / written.name  # the name the same epoch's checkpoint gets
    mine.write_bytes(b"mine")
    keras.utils.set_random_seed(0)  # the same training again
    model = biqan.build_biqan(TINY)
    with pytest.raises(ValueError, match="exists and was not written by this tool"):
        biqan_train.fit_stage(model, data, data, tmp_path / "mine", stage, 0, np.inf)
    assert mine.read_bytes() == b"mine"


@pytest.mark.parametrize("freeze_batchnorm", [True, False])
def test_fine_tuning_keeps_batchnorm_in_inference_mode_when_asked(freeze_batchnorm):
    model = biqan.build_biqan(TINY)
    biqan_train.compile_stage(model, 2, 1e-3, freeze_batchnorm=freeze_batchnorm)
    backbone = model.get_layer(biqan.BACKBONE_NAME)
    batchnorm, convolution = backbone.get_layer("conv1_bn"), backbone.get_layer("conv1")
    statistics = keras.ops.convert_to_numpy(batchnorm.moving_mean).copy()
    targets = np.full((4, 10), 0.1, dtype="float32")
    model.fit(ArrayBatches(random_images(4), targets), epochs=1, verbose=0)
    unchanged = np.array_equal(statistics, keras.ops.convert_to_numpy(batchnorm.moving_mean))
    assert unchanged == freeze_batchnorm
    trainable = {id(weight) for weight in model.trainable_weights}
    assert id(convolution.kernel) in trainable
    assert (id(batchnorm.gamma) in trainable) != freeze_batchnorm


def test_save_and_load_give_identical_predictions(tmp_path: Path):
    config = biqan.BiqanConfig(
        architecture="mobilenet",
        alpha=0.25,
        image_size=32,
        input_mode="crop",
        best_checkpoint="weights.001-0.100.weights.h5",
    )
    path, original = save_checkpoint(tmp_path, config)
    images = random_images(4)
    expected = biqan.predict_distributions(original, images)
    for source in (path, tmp_path):
        model, loaded_config, weights = biqan.load_biqan(source)
        assert loaded_config == config and weights == path
        np.testing.assert_array_equal(biqan.predict_distributions(model, images), expected)


@pytest.mark.parametrize("architecture, alpha", [("mobilenet_v2", 0.25), ("mobilenet", 0.5)])
def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path, architecture, alpha):
    path, _ = save_checkpoint(tmp_path, TINY)
    biqan.save_config(
        tmp_path, biqan.BiqanConfig(architecture=architecture, alpha=alpha, image_size=32)
    )
    with pytest.raises(ValueError, match="does not fit the") as error:
        biqan.load_biqan(path)
    assert str(path) in str(error.value)


def test_checkpoint_errors_name_the_file(tmp_path: Path):
    path, _ = save_checkpoint(tmp_path / "run", TINY)
    (tmp_path / "run" / "biqan.json").unlink()
    with pytest.raises(ValueError, match="biqan.json: BIQAN configuration not found"):
        biqan.load_biqan(path)
    with pytest.raises(ValueError, match="checkpoint not found"):
        biqan.load_biqan(tmp_path / "absent.weights.h5")
    (tmp_path / "model.hdf5").write_text("old format")
    with pytest.raises(ValueError, match="expected a \\*.weights.h5"):
        biqan.load_biqan(tmp_path / "model.hdf5")
    (tmp_path / "run" / "biqan.json").write_text('{"architecture": "vgg"}')
    with pytest.raises(ValueError, match="not a valid BIQAN configuration"):
        biqan.load_biqan(path)


def test_imagenet_download_failure_is_clear(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: no network")

    # keras.applications fetch their weights through this function; make it fail as offline.
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(
        biqan.WeightsError, match="could not download the ImageNet weights"
    ) as error:
        biqan.build_biqan(TINY, imagenet=True)
    assert "--weights none" in str(error.value)


def test_initial_weights_from_backbone_or_whole_file(tmp_path: Path):
    source = biqan.build_biqan(TINY)
    source.get_layer(biqan.BACKBONE_NAME).save_weights(str(tmp_path / "backbone.weights.h5"))
    source.save_weights(str(tmp_path / "whole.weights.h5"))
    target = biqan.build_biqan(TINY)
    assert biqan.load_initial_weights(target, tmp_path / "backbone.weights.h5") == "backbone"
    assert biqan.load_initial_weights(target, tmp_path / "whole.weights.h5") == "biqan"
    images = random_images(2)
    np.testing.assert_array_equal(
        biqan.predict_distributions(target, images), biqan.predict_distributions(source, images)
    )
    other = biqan.BiqanConfig(architecture="mobilenet_v2", alpha=0.25, image_size=32)
    with pytest.raises(biqan.WeightsError, match="fits neither"):
        biqan.load_initial_weights(biqan.build_biqan(other), tmp_path / "whole.weights.h5")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tensorflow is not installed (pip install -r requirements-tf.txt)",
)
def test_torch_checkpoint_loads_under_tensorflow(tmp_path: Path):
    path, model = save_checkpoint(tmp_path, TINY)
    images = random_images(3, seed=7)
    np.save(tmp_path / "images.npy", images)
    expected = biqan.predict_distributions(model, images)
    code = (
        "import sys, numpy as np; from models import biqan; "
        "model, _, _ = biqan.load_biqan(sys.argv[1]); "
        "np.save(sys.argv[3], biqan.predict_distributions(model, np.load(sys.argv[2])))"
    )
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(path),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
        ],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)
