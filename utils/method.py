"""The method in one place: Deep Image Prior's settings, losses, fit step, output average and
stopping rules.

Everything else (grouping, resume, locks, signals, dispatch, output files, the scripts) imports
this module, never the reverse; it imports numpy, and torch only where a fit runs (the stopping
rules serve test_BIQAN.py and step 2 without a framework). Tensors are (K, C, H, W) float
in [0, 1] for K images fitted at once, each with its own network.

* `FitSettings`: every hyper-parameter of a fit, with its default, in iterations.
* `LOSSES`: loss name -> function (output, target) -> (K,) losses; `mse` by default. A new loss
  is one function and `register_loss`.
* `fit_step`: one iteration for K images; backtracking compares each image's PSNR against its
  noisy image, whatever the loss. `update_average` is the output's exponential moving average.
* `RULES`: stopping rule name -> class with `push(iteration, snapshot)`, `fired` and
  `pick_iteration`, run online on each snapshot of a fit and offline (test_BIQAN.py) by
  replaying the same class over a finished run's snapshots. A new rule is one class and
  `register_rule`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

INPUT_KINDS = ("noise", "noisy_image")
Loss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
LOSSES: dict[str, Loss] = {}


def register_loss(name: str) -> Callable[[Loss], Loss]:
    """Decorator: add a loss (output, target) -> (K,) under `name` (a command-line --loss)."""

    def register(loss: Loss) -> Loss:
        LOSSES[name] = loss
        return loss

    return register


@register_loss("mse")
def mean_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of (K, C, H, W) tensors -> (K,)."""
    return (output - target).square().flatten(1).mean(dim=1)


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of one DIP fit (defaults: upstream DIP's denoising notebook)."""

    num_iter: int = 3000
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
        """Raise ValueError for settings that cannot run (NaN and infinities included)."""
        for name in ("lr", "reg_noise_std", "target_noise_std", "exp_weight", "backtrack_db"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.num_iter < 1:
            raise ValueError(f"num_iter must be positive, got {self.num_iter}")
        if not 1 <= self.save_iter <= self.num_iter:
            raise ValueError(
                f"save_iter must be in 1..num_iter ({self.num_iter}), got {self.save_iter}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.reg_noise_std < 0 or self.target_noise_std < 0 or self.input_noise_scale <= 0:
            raise ValueError("noise levels must be >= 0 (input_noise_scale > 0)")
        if not 0 <= self.exp_weight < 1:
            raise ValueError(f"exp_weight must be in [0, 1), got {self.exp_weight}")
        if self.backtrack_db < 0:
            raise ValueError(f"backtrack_db must be >= 0 (0 disables), got {self.backtrack_db}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")


def psnr_against(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of (K, C, H, W) outputs against references in [0, 1] -> (K,)."""
    return -10.0 * (output - reference).square().flatten(1).mean(dim=1).log10()


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

    settings = fit.settings
    images, channels, height, width = fit.noisy.shape
    net_input = fit.base_input
    if settings.reg_noise_std > 0:
        noise = noise_blocks(
            fit.generators, net_input, settings.reg_noise_std, settings.reg_noise_random
        )
        net_input = net_input + noise
    target = fit.noisy
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
            backtrack(fit, psnr_against(output, fit.noisy))
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
                # split the first dimension into the K networks' blocks: a view whatever the
                # memory format (channels-last weights cannot be flattened without a copy)
                by_image = last.unflatten(0, (images, -1))
                mask = good.view(images, *[1] * (by_image.dim() - 1))
                torch.where(mask, parameter.unflatten(0, (images, -1)), by_image, out=by_image)
                parameter.copy_(last)
        torch.where(good, psnr_now, fit.last_psnr, out=fit.last_psnr)


@dataclasses.dataclass(frozen=True)
class RuleOptions:
    """What a rule may use, for one image: window and patience in snapshots (patience None:
    never fires), the fixed stop in iterations, a score of a snapshot (model-based rules) and
    how many first snapshots it never picks."""

    window: int = 5
    patience: int | None = 50
    stop_iteration: float | None = None
    score: Callable[[np.ndarray | None], float] | None = None
    skip: int = 0


class StoppingRule:
    """Sees one image's snapshots in order (`push`); `fired` once its rule fires;
    `pick_iteration` is its choice so far. `needs_pixels`: offline replay loads the snapshots;
    `scored`: it ranks a model's scores (given as `RuleOptions.score`); `online`/`offline`:
    where the rule is offered (--early_stop, --selector)."""

    needs_pixels = True
    scored = False
    online = True
    offline = True

    def __init__(self) -> None:
        self.fired = False
        self.pick_iteration: int | None = None

    @classmethod
    def from_options(cls, options: RuleOptions) -> StoppingRule:
        """The rule for one image; by default built without options."""
        return cls()

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        """See the snapshot saved at `iteration` ((H, W[, C]) float in [0, 1])."""
        raise NotImplementedError


RULES: dict[str, type[StoppingRule]] = {}


def register_rule(name: str) -> Callable[[type[StoppingRule]], type[StoppingRule]]:
    """Decorator: add a stopping rule class under `name` (--early_stop and --selector)."""

    def register(rule: type[StoppingRule]) -> type[StoppingRule]:
        RULES[name] = rule
        return rule

    return register


def replay(rule: StoppingRule, inputs: Iterable[tuple[int, object]]) -> int | None:
    """Push (iteration, snapshot) pairs into `rule` in order until it fires; returns the
    iteration it fired at, or None. `inputs` may be lazy: nothing after the firing is read."""
    for iteration, value in inputs:
        rule.push(iteration, value)
        if rule.fired:
            return iteration
    return None


def patience_step(
    value: float,
    index: int,
    best_value: float,
    best_index: int,
    waited: int,
    patience: int,
    fired: bool = False,
) -> tuple[float, int, int, bool]:
    """WMV's patience after the value of snapshot `index`: (best value, its index, snapshots
    waited since, fired: `patience` snapshots without a new minimum; a new minimum leaves
    `fired` as it was)."""
    if value < best_value:
        return value, index, 0, fired
    return best_value, best_index, waited + 1, waited + 1 >= patience


@register_rule("wmv")
class WmvRule(StoppingRule):
    """The ES-WMV rule (Wang et al., "Early Stopping for Deep Image Prior"): the variance of a
    window is the mean over its `window` snapshots of the per-pixel mean squared deviation from
    the window mean; `variances` has one per snapshot (NaN before the first full window),
    `best_index` is the snapshot at the variance minimum (-1 before), the pick; it fires after
    `patience` snapshots without a new minimum."""

    def __init__(self, window: int, patience: int) -> None:
        super().__init__()
        if window < 2:
            raise ValueError(f"window must be at least 2 snapshots, got {window}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1 snapshot, got {patience}")
        self.window, self.patience = window, patience
        self.history: list[np.ndarray] = []
        self.running_sum: np.ndarray | None = None
        self.running_squares: np.ndarray | None = None
        self.iterations: list[int] = []
        self.variances: list[float] = []
        self.best_variance, self.best_index, self.waited = np.inf, -1, 0

    @classmethod
    def from_options(cls, options: RuleOptions) -> StoppingRule:
        return cls(options.window, options.patience)

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        snapshot = np.asarray(snapshot, dtype=np.float64)
        index = len(self.variances)
        if self.running_sum is None:
            self.running_sum, self.running_squares = (
                np.zeros_like(snapshot),
                np.zeros_like(snapshot),
            )
        elif snapshot.shape != self.running_sum.shape:
            raise ValueError(
                f"snapshot {index} has shape {snapshot.shape}, the earlier ones "
                f"{self.running_sum.shape}"
            )
        self.iterations.append(iteration)
        self.history.append(snapshot)
        self.running_sum += snapshot
        self.running_squares += snapshot**2
        if len(self.history) > self.window:
            dropped = self.history.pop(0)
            self.running_sum -= dropped
            self.running_squares -= dropped**2
        if len(self.history) < self.window:
            self.variances.append(np.nan)
            return
        window_mean = self.running_sum / self.window
        variance = float(
            np.maximum(self.running_squares / self.window - window_mean**2, 0.0).mean()
        )
        self.variances.append(variance)
        self.best_variance, self.best_index, self.waited, self.fired = patience_step(
            variance,
            index,
            self.best_variance,
            self.best_index,
            self.waited,
            self.patience,
            self.fired,
        )
        if self.best_index >= 0:
            self.pick_iteration = self.iterations[self.best_index]


@register_rule("fixed")
class FixedRule(StoppingRule):
    """Fires at the first snapshot at or after `stop_iteration` and picks it; before that (and
    when the run ends first) the pick is the latest snapshot."""

    needs_pixels = False

    def __init__(self, stop_iteration: float) -> None:
        super().__init__()
        if stop_iteration < 1:
            raise ValueError(f"the stop iteration must be at least 1, got {stop_iteration}")
        self.stop_iteration = stop_iteration

    @classmethod
    def from_options(cls, options: RuleOptions) -> StoppingRule:
        if options.stop_iteration is None:
            raise ValueError("the fixed rule needs a stop iteration")
        return cls(options.stop_iteration)

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        if self.fired:
            return
        self.pick_iteration = iteration
        self.fired = iteration >= self.stop_iteration


class BestScoreRule(StoppingRule):
    """Best finite score among snapshots `skip` and later; fires after `patience` snapshots
    without a new best (never with None). `score` maps a snapshot to a number; every snapshot
    is scored, also the skipped ones, so that stateful scorers see them all."""

    needs_pixels = False
    scored = True

    def __init__(
        self, score: Callable[[np.ndarray | None], float], patience: int | None, skip: int = 0
    ) -> None:
        super().__init__()
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be at least 1 snapshot, got {patience}")
        self.score, self.patience, self.skip = score, patience, skip
        self.best_score, self.waited = -np.inf, 0
        self.scores: list[float] = []

    @classmethod
    def from_options(cls, options: RuleOptions) -> StoppingRule:
        if options.score is None:
            raise ValueError(f"the {cls.__name__} rule needs a score of each snapshot")
        return cls(options.score, options.patience, options.skip)

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        value = float(self.score(snapshot))
        self.scores.append(value)
        if len(self.scores) <= self.skip:
            return
        if math.isfinite(value) and value > self.best_score:
            self.best_score, self.pick_iteration, self.waited = value, iteration, 0
        else:
            self.waited += 1
            self.fired = self.patience is not None and self.waited >= self.patience


@register_rule("biqan")
class BiqanRule(BestScoreRule):
    """The best snapshot by a trained BIQAN's predicted mean quality."""


@register_rule("ranker")
class RankerRule(BestScoreRule):
    """The best snapshot by the snapshot ranker's score (models/snapshot_ranker.py)."""


@register_rule("last")
class LastRule(StoppingRule):
    """The last snapshot (offline only: online, --early_stop none keeps it)."""

    needs_pixels = False
    online = False

    def push(self, iteration: int, snapshot: np.ndarray | None) -> None:
        self.pick_iteration = iteration


def online_rules() -> tuple[str, ...]:
    """--early_stop's choices: none, then every rule offered online."""
    return ("none", *(name for name, rule in RULES.items() if rule.online))


def offline_rules() -> tuple[str, ...]:
    """--selector's rule names."""
    return tuple(name for name, rule in RULES.items() if rule.offline)
