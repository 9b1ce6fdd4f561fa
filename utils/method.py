"""The method in one place: Deep Image Prior's settings, losses, fit step, output average and
stopping rules. Everything else (grouping, resume, locks, signals, dispatch, output files, the
scripts) imports this module, never the reverse. It imports numpy, and torch only inside the
fit's functions, so that the rules serve test_BIQAN.py and step 2 without a framework.

Tensors are (K, C, H, W) float in [0, 1] for K images fitted at once, each with its own network.
A new loss is one function under `@register_loss(name)`; a new stopping rule is one
`StoppingRule` class under `@register_rule(name)`: `push` runs online on each snapshot of a fit
(--early_stop) and offline by replaying the same class over a finished run (--selector).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

INPUT_KINDS = ("noise", "noisy_image")
# Upstream DIP's run length for denoising: run_BDN.py's --num_iter, and the least of denoise.py's
# auto length (`FitSettings.run_length`)
NUM_ITER = 3000
Entry = TypeVar("Entry")
Loss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
LOSSES: dict[str, Loss] = {}


def registrar(table: dict[str, Entry]) -> Callable[[str], Callable[[Entry], Entry]]:
    """A decorator factory: `@registrar(table)(name)` adds the decorated entry under `name`."""

    def register(name: str) -> Callable[[Entry], Entry]:
        """The decorator that adds its entry to the table under `name`."""

        def add(entry: Entry) -> Entry:
            """Add `entry` under `name` and return it unchanged."""
            table[name] = entry
            return entry

        return add

    return register


register_loss = registrar(LOSSES)  # a loss (output, target) -> (K,) under a --loss name


@register_loss("mse")
def mean_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of (K, C, H, W) tensors -> (K,)."""
    return (output - target).square().flatten(1).mean(dim=1)


def least_length(num_iter: int | None) -> int:
    """The fewest iterations a fit of `num_iter` makes: `num_iter`, or NUM_ITER where it is
    auto (None; `FitSettings.run_length` may make it longer)."""
    return NUM_ITER if num_iter is None else num_iter


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of one DIP fit (defaults: upstream DIP's denoising notebook); a
    `num_iter` of None is auto (`run_length`)."""

    num_iter: int | None = NUM_ITER
    save_iter: int = 20
    lr: float = 0.01
    reg_noise_std: float = 1.0 / 30.0
    target_noise_std: float = 0.0
    exp_weight: float = 0.99
    input_noise_scale: float = 0.1
    backtrack_db: float = 5.0
    reg_noise_random: bool = False
    target_noise_random: bool = False
    input_kind: str = "noise"
    loss: str = "mse"

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot run (NaN and infinities too)."""
        for name in ("lr", "reg_noise_std", "target_noise_std", "exp_weight", "backtrack_db"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        most = least_length(self.num_iter)
        requirements = {
            "num_iter": (self.num_iter is None or self.num_iter >= 1, "positive"),
            "save_iter": (1 <= self.save_iter <= most, f"in 1..num_iter ({most})"),
            "lr": (self.lr > 0, "positive"),
            "reg_noise_std": (self.reg_noise_std >= 0, ">= 0"),
            "target_noise_std": (self.target_noise_std >= 0, ">= 0"),
            "input_noise_scale": (self.input_noise_scale > 0, "positive"),
            "exp_weight": (0 <= self.exp_weight < 1, "in [0, 1)"),
            "backtrack_db": (self.backtrack_db >= 0, ">= 0 (0 disables)"),
            "input_kind": (self.input_kind in INPUT_KINDS, f"one of {INPUT_KINDS}"),
            "loss": (self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
        }
        for name, (holds, requirement) in requirements.items():
            if not holds:
                raise ValueError(f"{name} must be {requirement}, got {getattr(self, name)!r}")

    def run_length(self, stop: float) -> int:
        """The fit's iterations: `num_iter`; auto (None): NUM_ITER, or `stop` (the stopping
        rule's latest, an iteration) rounded up to a snapshot where that is later, so that
        the rule is never cut short by the run's end."""
        if self.num_iter is not None:
            return self.num_iter
        return max(NUM_ITER, math.ceil(stop / self.save_iter) * self.save_iter)


def update_average(
    average: torch.Tensor | None, output: torch.Tensor, exp_weight: float
) -> torch.Tensor:
    """The output's exponential moving average after `output` (in place; a copy at the start)."""
    if average is None:
        return output.clone()
    return average.mul_(exp_weight).add_(output, alpha=1.0 - exp_weight)


def noise_blocks(
    generators: list[torch.Generator], tensor: torch.Tensor, std: float, random_std: bool = False
) -> torch.Tensor:
    """Gaussian noise of `tensor`'s shape (1, K*c, H, W), each image's block from its own
    generator; with `random_std` each block's std is drawn uniformly from [0, std) first."""
    import torch

    shape = (1, tensor.shape[1] // len(generators), *tensor.shape[2:])
    blocks = []
    for generator in generators:
        options = {"generator": generator, "device": tensor.device, "dtype": tensor.dtype}
        scale = torch.rand((), **options) if random_std else 1.0
        blocks.append(torch.randn(shape, **options) * scale)
    return torch.cat(blocks, dim=1) * std


class FitState(Protocol):
    """What `fit_step` reads and updates (utils.dip.fitting.DipFit holds it)."""

    settings: FitSettings
    noisy: torch.Tensor
    base_input: torch.Tensor
    generators: list[torch.Generator]
    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    parameters: list[torch.Tensor]
    last_good: list[torch.Tensor]
    last_psnr: torch.Tensor
    average: torch.Tensor | None
    bf16: bool
    iteration: int


def fit_step(fit: FitState) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration of K images; returns (raw outputs (K, C, H, W), losses (K,)) as device
    tensors, without host-device synchronisation."""
    import torch

    settings, (images, channels, height, width) = fit.settings, fit.noisy.shape
    net_input, target = fit.base_input, fit.noisy
    if settings.reg_noise_std > 0:
        net_input = net_input + noise_blocks(
            fit.generators, net_input, settings.reg_noise_std, settings.reg_noise_random
        )
    if settings.target_noise_std > 0:
        flat = target.reshape(1, -1, height, width)
        noise = noise_blocks(
            fit.generators, flat, settings.target_noise_std, settings.target_noise_random
        )
        target = target + noise.view_as(target)
    with torch.autocast(fit.noisy.device.type, dtype=torch.bfloat16, enabled=fit.bf16):
        output = fit.forward(net_input)
    output = output.to(fit.noisy.dtype).reshape(images, channels, height, width)
    losses = LOSSES[settings.loss](output, target)
    fit.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    output = output.detach()
    with torch.no_grad():
        fit.average = update_average(fit.average, output, settings.exp_weight)
        if settings.backtrack_db > 0:
            backtrack(fit, -10.0 * mean_squared_error(output, fit.noisy).log10())
    fit.optimizer.step()
    fit.iteration += 1
    return output, losses.detach()


def backtrack(fit: FitState, psnr_now: torch.Tensor) -> None:
    """Restore an image's last good parameters if its PSNR (K,) against its noisy image fell by
    more than `backtrack_db`. On an accelerator the choice is made on the device with
    `torch.where` (no host round trip); on the CPU a host branch copies each parameter once when
    no image fell back. Both give identical values."""
    import torch

    with torch.no_grad():
        good = psnr_now >= fit.last_psnr - fit.settings.backtrack_db
        if good.device.type == "cpu" and bool(good.all()):
            torch._foreach_copy_(fit.last_good, fit.parameters)
        else:
            images = good.shape[0]
            for parameter, last in zip(fit.parameters, fit.last_good):
                # the first dimension split into the K networks' blocks: a view in any memory
                # format (channels-last weights cannot be flattened without a copy)
                by_image = last.unflatten(0, (images, -1))
                mask = good.view(images, *[1] * (by_image.dim() - 1))
                torch.where(mask, parameter.unflatten(0, (images, -1)), by_image, out=by_image)
                parameter.copy_(last)
        torch.where(good, psnr_now, fit.last_psnr, out=fit.last_psnr)


@dataclasses.dataclass(frozen=True)
class RuleOptions:
    """What a rule may use for one image: window and patience in snapshots (patience None: never
    fires), the fixed stop in iterations, a model's score of a snapshot, and how many first
    snapshots it never picks."""

    window: int = 5
    patience: int | None = 50
    stop_iteration: float | None = None
    score: Callable[[np.ndarray | None], float] | None = None
    skip: int = 0


class StoppingRule:
    """Built from one image's `RuleOptions`, sees its snapshots in order (`push`); `fired` once
    it fires; `pick_iteration`: its choice so far. Class flags: `needs_pixels` (offline replay
    loads the snapshots), `scored` (it ranks `options.score`), `online`/`offline` (offered by
    --early_stop/--selector)."""

    needs_pixels, scored, online, offline = True, False, True, True

    def __init__(self, options: RuleOptions = RuleOptions()) -> None:
        self.options = options
        self.fired = False
        self.pick_iteration: int | None = None

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        """See the snapshot saved at `iteration` ((H, W[, C]) float in [0, 1])."""
        raise NotImplementedError


RULES: dict[str, type[StoppingRule]] = {}
register_rule = registrar(RULES)  # a StoppingRule class under an --early_stop/--selector name


def replay(rule: StoppingRule, inputs: Iterable[tuple[int, object]]) -> int | None:
    """Push (iteration, snapshot) pairs into `rule` in order until it fires; returns the
    iteration it fired at, or None. `inputs` may be lazy: nothing after the firing is read."""
    for iteration, value in inputs:
        rule.push(iteration, value)
        if rule.fired:
            return iteration
    return None


class BestScoreRule(StoppingRule):
    """Best finite score among snapshots `skip` and later (`best_index`, -1 before); fires after
    `patience` snapshots without a new best (never with None). Every snapshot is scored, the
    skipped ones too, so that stateful scorers see them all."""

    needs_pixels, scored = False, True

    def __init__(self, options: RuleOptions) -> None:
        super().__init__(options)
        if options.score is None:
            raise ValueError(f"the {type(self).__name__} rule needs a score of each snapshot")
        if options.patience is not None and options.patience < 1:
            raise ValueError(f"patience must be at least 1 snapshot, got {options.patience}")
        self.best_score, self.best_index, self.waited = -np.inf, -1, 0
        self.scores: list[float] = []

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        """Score the snapshot: a new finite best past the first `skip` becomes the pick;
        `patience` snapshots without one fire the rule."""
        value = float(self.options.score(snapshot))
        self.scores.append(value)
        if len(self.scores) <= self.options.skip:
            return
        if math.isfinite(value) and value > self.best_score:
            self.best_score, self.pick_iteration, self.waited = value, iteration, 0
            self.best_index = len(self.scores) - 1
        else:
            self.waited += 1
            patience = self.options.patience
            self.fired = patience is not None and self.waited >= patience


class WindowVariance:
    """A stateful score: the variance of the window of the last `window` snapshots pushed (the
    mean over pixels of their squared deviation from the window mean), NaN before the first full
    window; `variances` keeps one per snapshot."""

    def __init__(self, window: int) -> None:
        self.window, self.history = window, []
        self.variances: list[float] = []

    def __call__(self, snapshot: np.ndarray | None) -> float:
        snapshot = np.asarray(snapshot, dtype=np.float64)
        if self.history and snapshot.shape != self.history[-1].shape:
            raise ValueError(
                f"snapshot {len(self.variances)} has shape {snapshot.shape}, the earlier ones {self.history[-1].shape}"
            )
        self.history = [*self.history[1 - self.window :], snapshot]
        full = len(self.history) == self.window
        self.variances.append(float(np.stack(self.history).var(axis=0).mean()) if full else np.nan)
        return self.variances[-1]


@register_rule("wmv")
class WmvRule(BestScoreRule):
    """ES-WMV (Wang et al., "Early Stopping for Deep Image Prior"): the pick is the snapshot of
    the lowest `WindowVariance` from the first full window on; it fires after `patience`
    snapshots without a new minimum, and at the latest at the first snapshot at or after
    `stop_iteration` (when given; the fixed rule's stop) where it has a pick, keeping it."""

    needs_pixels, scored = True, False

    def __init__(self, options: RuleOptions) -> None:
        if options.window < 2 or options.patience is None or options.patience < 1:
            raise ValueError(
                f"window must be at least 2 snapshots and patience at least 1, got {options.window}, {options.patience}"
            )
        self.window_variance = WindowVariance(options.window)
        score, skip = self.minus_variance, options.window - 1
        super().__init__(dataclasses.replace(options, score=score, skip=skip))

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        """As `BestScoreRule.push`; also fire at the first snapshot at or after `stop_iteration`
        once there is a pick."""
        super().push(iteration, snapshot)
        stop, picked = self.options.stop_iteration, self.pick_iteration is not None
        self.fired = self.fired or (stop is not None and iteration >= stop and picked)

    def minus_variance(self, snapshot: np.ndarray | None) -> float:
        """The score: minus the window variance after `snapshot` (NaN before a full window)."""
        return -self.window_variance(snapshot)

    @property
    def variances(self) -> list[float]:
        """The window variance after each snapshot so far (NaN before a full window)."""
        return self.window_variance.variances


@register_rule("fixed")
class FixedRule(StoppingRule):
    """Fires at the first snapshot at or after `stop_iteration` and picks it; before that (and
    when the run ends first) the pick is the latest snapshot."""

    needs_pixels = False

    def __init__(self, options: RuleOptions) -> None:
        super().__init__(options)
        if options.stop_iteration is None or options.stop_iteration < 1:
            raise ValueError(f"the stop iteration must be at least 1, got {options.stop_iteration}")

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        """Pick the snapshot; fire at the first one at or after `stop_iteration`."""
        if not self.fired:
            self.pick_iteration = iteration
            self.fired = iteration >= self.options.stop_iteration


@register_rule("biqan")
class BiqanRule(BestScoreRule):
    """The best snapshot by a trained BIQAN's predicted mean quality."""


@register_rule("ranker")
class RankerRule(BestScoreRule):
    """The best snapshot by the snapshot ranker's score (models/snapshot_ranker.py)."""


@register_rule("last")
class LastRule(StoppingRule):
    """The last snapshot (offline only: online, --early_stop none keeps it)."""

    needs_pixels, online = False, False

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        """Pick the snapshot (the last pushed wins)."""
        self.pick_iteration = iteration


def rule_names(offered: str) -> tuple[str, ...]:
    """The names of the rules offered `online` (--early_stop) or `offline` (--selector)."""
    return tuple(name for name, rule in RULES.items() if getattr(rule, offered))
