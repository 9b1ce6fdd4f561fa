"""The Deep Image Prior "skip" encoder-decoder network (Ulyanov et al., CVPR 2018).

Structure, per scale i (outermost first), as in the upstream `models/skip.py`:

    x -> [skip_i: 1x1 conv -> BN -> LeakyReLU]                       (skip channels)
      -> [down_i: 3x3 conv stride 2 -> BN -> LReLU -> 3x3 conv -> BN -> LReLU
                  -> scale i+1 (if any) -> bilinear upsample x2]        (deeper channels)
    concat(skip, deeper) -> BN -> 3x3 conv -> BN -> LReLU -> 1x1 conv -> BN -> LReLU

followed by a final 1x1 convolution to the output channels and a sigmoid. All 3x3
convolutions use reflection padding. With the paper's settings (5 scales, 128 channels
down and up, 4 skip channels, input depth 32, 3 output channels) it has 2,217,831
trainable parameters.

`net_type="snail"` is the original code's other network (its `--net_type` other than skip):
the same structure with 8, 16, 32, 64, 128 channels down and up at the five scales and skip
connections only at the two coarsest (4 channels each).

`groups=K` stacks K independent networks into one module with grouped convolutions (every
layer's channels are K blocks, one per network, concatenated group by group), so K images are
fitted in one pass: with one image per network, BatchNorm statistics are per channel, so each
block behaves exactly as a separate network. `stack_states` / `unstack_state` convert between
K single-network state dicts and the stacked one.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

NET_TYPES = ("skip", "snail")
SNAIL_CHANNELS = ((8, 8, 0), (16, 16, 0), (32, 32, 0), (64, 64, 4), (128, 128, 4))


@dataclasses.dataclass(frozen=True)
class SkipConfig:
    """Everything needed to rebuild a `SkipNet` (saved with every network file)."""

    input_depth: int = 32
    output_channels: int = 3
    channels_down: int = 128
    channels_up: int = 128
    channels_skip: int = 4
    num_scales: int = 5
    net_type: str = "skip"

    def scale_channels(self, scale: int) -> tuple[int, int, int]:
        """(down, up, skip) channels of scale `scale` (0 = finest)."""
        if self.net_type == "snail":
            return SNAIL_CHANNELS[scale]
        return self.channels_down, self.channels_up, self.channels_skip

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (field name -> value)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SkipConfig:
        """The settings of a `to_dict` dict (missing fields at their defaults); ValueError on
        an unknown field."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown network settings: {sorted(unknown)}")
        return cls(**values)

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this (one halving per scale)."""
        return 2**self.num_scales


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm computed in its parameters' precision (fp32, or float64 in the tests) whatever
    autocast says: bf16's 8-bit mantissa in the normalisation cost DIP up to 0.8 dB on clean
    images (docs/REPRODUCTION.md, section 8). The next convolution takes its input back to
    bf16. Without autocast it is nn.BatchNorm2d, bit for bit, with the same parameters and
    state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))


def conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Convolution with reflection padding ('same' size for stride 1, halved for stride 2).

    Channel counts are per network; with `groups` networks the layer has groups times as many.
    """
    layers: list[nn.Module] = []
    padding = (kernel_size - 1) // 2
    if padding:
        layers.append(nn.ReflectionPad2d(padding))
    layers.append(
        nn.Conv2d(
            in_channels * groups, out_channels * groups, kernel_size, stride=stride, groups=groups
        )
    )
    return nn.Sequential(*layers)


def conv_bn_act(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """conv -> BatchNorm -> LeakyReLU(0.2)."""
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size, stride, groups),
        BatchNorm(out_channels * groups),
        nn.LeakyReLU(0.2, inplace=True),
    )


def concat_groups(first: torch.Tensor, second: torch.Tensor, groups: int) -> torch.Tensor:
    """Concatenate channels network by network: (N, K*a, H, W), (N, K*b, H, W) -> (N, K*(a+b), H, W)."""
    if groups == 1:
        return torch.cat([first, second], dim=1)
    batch, _, height, width = first.shape
    merged = torch.cat(
        [
            first.view(batch, groups, -1, height, width),
            second.view(batch, groups, -1, height, width),
        ],
        dim=2,
    )
    return merged.view(batch, -1, height, width)


class Scale(nn.Module):
    """One scale of the U-shaped network; `inner` is the next (coarser) scale or None."""

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, int, int],
        inner: Scale | None,
        groups: int = 1,
    ) -> None:
        super().__init__()
        down, up, skip = channels
        self.up_channels = up
        self.groups = groups
        self.skip = conv_bn_act(in_channels, skip, 1, groups=groups) if skip else None
        self.down = nn.Sequential(
            conv_bn_act(in_channels, down, 3, 2, groups), conv_bn_act(down, down, 3, groups=groups)
        )
        self.inner = inner
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        deeper = inner.up_channels if inner is not None else down
        self.merge_norm = BatchNorm((skip + deeper) * groups)
        self.up = nn.Sequential(
            conv_bn_act(skip + deeper, up, 3, groups=groups), conv_bn_act(up, up, 1, groups=groups)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deeper = self.down(x)
        if self.inner is not None:
            deeper = self.inner(deeper)
        deeper = self.upsample(deeper)
        merged = deeper if self.skip is None else concat_groups(self.skip(x), deeper, self.groups)
        return self.up(self.merge_norm(merged))


class SkipNet(nn.Module):
    """DIP skip network(s): (N, K*input_depth, H, W) -> (N, K*output_channels, H, W) in (0, 1).

    K = `groups` independent networks. H and W must be multiples of `config.size_multiple`
    and at least twice that.
    """

    def __init__(self, config: SkipConfig = SkipConfig(), groups: int = 1) -> None:
        super().__init__()
        if config.num_scales < 1:
            raise ValueError(f"num_scales must be at least 1, got {config.num_scales}")
        if groups < 1:
            raise ValueError(f"groups must be at least 1, got {groups}")
        if config.net_type not in NET_TYPES:
            raise ValueError(f"net_type must be one of {NET_TYPES}, got {config.net_type!r}")
        if config.net_type == "snail" and config.num_scales != len(SNAIL_CHANNELS):
            raise ValueError(f"the snail network has {len(SNAIL_CHANNELS)} scales")
        self.config = config
        self.groups = groups
        inner = None
        for scale in reversed(range(config.num_scales)):
            in_channels = config.input_depth if scale == 0 else config.scale_channels(scale - 1)[0]
            inner = Scale(in_channels, config.scale_channels(scale), inner, groups)
        self.body = inner
        self.head = nn.Sequential(
            nn.Conv2d(
                inner.up_channels * groups, config.output_channels * groups, 1, groups=groups
            ),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The body in whatever precision autocast gives it; the head (the output convolution
        and the sigmoid) always in fp32: the output is what the loss, the average and the
        snapshots see, and bf16's 8-bit mantissa there cost up to 1.3 dB (docs/REPRODUCTION.md,
        section 8). Without autocast this is the plain fp32 network, bit for bit."""
        features = self.body(x)
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.to(self.head[0].weight.dtype))


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in net.parameters() if parameter.requires_grad)


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """K single-network state dicts -> the state dict of `SkipNet(config, groups=K)`."""
    return {
        key: torch.cat([state[key] for state in states])
        if states[0][key].dim()
        else states[0][key].clone()
        for key in states[0]
    }


def unstack_state(state: dict[str, torch.Tensor], groups: int) -> list[dict[str, torch.Tensor]]:
    """State dict of `SkipNet(config, groups=K)` -> K single-network state dicts (copies)."""
    return [
        {
            key: value.chunk(groups)[index].clone() if value.dim() else value.clone()
            for key, value in state.items()
        }
        for index in range(groups)
    ]
