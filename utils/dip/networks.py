"""Network files (`net.pt`): save a fitted network with its settings, load one, and the network
an image's fit starts from (fresh, or transferred from a saved one)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from models.skip import SkipConfig, SkipNet
from utils.dip.fitting import build_network
from utils.dip.planning import PreparedImage, RunSettings, image_seed
from utils.dip.snapshots import save_torch


def load_network(path: Path, device: torch.device) -> SkipNet:
    """Rebuild a network saved by `save_network`; ValueError naming the file if unusable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = SkipNet(SkipConfig.from_dict(saved["config"]))
        net.load_state_dict(saved["state_dict"])
    except Exception as error:  # noqa: BLE001 (unpickling a foreign file can raise anything)
        raise ValueError(
            f"{path}: not a usable network file ({type(error).__name__}: {error})"
        ) from None
    return net.to(device)


def save_network(path: Path, config: SkipConfig, state: dict, source: str, iterations: int) -> None:
    """Save one network's state with everything needed to rebuild it."""
    state = {key: value.detach().cpu() for key, value in state.items()}
    save_torch(
        path,
        {
            "config": config.to_dict(),
            "state_dict": state,
            "source": source,
            "iterations": iterations,
        },
    )


def network_config(settings: RunSettings, channels: int) -> SkipConfig:
    """The run's network for an image of `channels` channels (also its input depth when the
    noisy image is the input)."""
    if settings.fit.input_kind == "noisy_image":
        return dataclasses.replace(settings.network, output_channels=channels, input_depth=channels)
    return dataclasses.replace(settings.network, output_channels=channels)


def initial_state(
    image: PreparedImage, settings: RunSettings, previous: Path | None
) -> tuple[dict, str]:
    """(network state the image's fit starts from, init label): fresh or transferred."""
    config = network_config(settings, image.channels)
    source = None
    if settings.init_from == "previous":
        source = previous
    elif settings.init_from != "scratch":
        source = Path(settings.init_from)
    if source is None:
        net = build_network(config, image_seed(settings.seed, image.job.stem), torch.device("cpu"))
        return net.state_dict(), "scratch"
    transferred = load_network(source, torch.device("cpu"))
    if transferred.config != config:
        raise ValueError(
            f"{source}: network settings {transferred.config.to_dict()} do not fit "
            f"{image.job.noisy.name} with this run's settings {config.to_dict()}"
        )
    return transferred.state_dict(), settings.init_from
