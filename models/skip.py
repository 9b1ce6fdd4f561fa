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
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class SkipConfig:
    """Everything needed to rebuild a `SkipNet` (saved with every network file)."""

    input_depth: int = 32
    output_channels: int = 3
    channels_down: int = 128
    channels_up: int = 128
    channels_skip: int = 4
    num_scales: int = 5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SkipConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown network settings: {sorted(unknown)}")
        return cls(**values)

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this (one halving per scale)."""
        return 2**self.num_scales


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Convolution with reflection padding ('same' size for stride 1, halved for stride 2)."""
    layers: list[nn.Module] = []
    padding = (kernel_size - 1) // 2
    if padding:
        layers.append(nn.ReflectionPad2d(padding))
    layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride))
    return nn.Sequential(*layers)


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """conv -> BatchNorm -> LeakyReLU(0.2)."""
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size, stride),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


class Scale(nn.Module):
    """One scale of the U-shaped network; `inner` is the next (coarser) scale or None."""

    def __init__(self, in_channels: int, config: SkipConfig, inner: "Scale | None") -> None:
        super().__init__()
        down, up, skip = config.channels_down, config.channels_up, config.channels_skip
        self.skip = conv_bn_act(in_channels, skip, 1) if skip else None
        self.down = nn.Sequential(conv_bn_act(in_channels, down, 3, stride=2), conv_bn_act(down, down, 3))
        self.inner = inner
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        deeper = up if inner is not None else down
        self.merge_norm = nn.BatchNorm2d(skip + deeper)
        self.up = nn.Sequential(conv_bn_act(skip + deeper, up, 3), conv_bn_act(up, up, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deeper = self.down(x)
        if self.inner is not None:
            deeper = self.inner(deeper)
        deeper = self.upsample(deeper)
        merged = deeper if self.skip is None else torch.cat([self.skip(x), deeper], dim=1)
        return self.up(self.merge_norm(merged))


class SkipNet(nn.Module):
    """DIP skip network: (N, input_depth, H, W) -> (N, output_channels, H, W) in (0, 1).

    H and W must be multiples of `config.size_multiple` and at least twice that.
    """

    def __init__(self, config: SkipConfig = SkipConfig()) -> None:
        super().__init__()
        if config.num_scales < 1:
            raise ValueError(f"num_scales must be at least 1, got {config.num_scales}")
        self.config = config
        inner = None
        for scale in reversed(range(config.num_scales)):
            in_channels = config.input_depth if scale == 0 else config.channels_down
            inner = Scale(in_channels, config, inner)
        self.body = inner
        self.head = nn.Sequential(nn.Conv2d(config.channels_up, config.output_channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in net.parameters() if parameter.requires_grad)
