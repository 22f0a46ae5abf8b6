"""INQ's incremental loop: freeze a growing portion of each layer at its power-of-two levels, retrain the rest."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from .checkpoint import InqState
from .errors import ConfigError, TrainingError
from .quantizer import LayerLevels, quantize
from .schedule import STRATEGIES, grow_frozen_mask
from .sources import Examples
from .training.backend import GradientBackend
from .training.optim import DECAYS, OPTIMIZERS, decayed_lr, make_optimizer

__all__ = ["RetrainConfig", "StepReport", "run_inq", "ProgressCallback", "CheckpointCallback", "StepEvaluator"]

# progress(step_index, step_count, batches_done, batch_count, loss): called after every batch.
ProgressCallback = Callable[[int, int, int, int, float], None]
# checkpoint(state): called after every retrained INQ step with the state to continue from.
CheckpointCallback = Callable[[InqState], None]
# evaluate(parameters): a score of the model with these parameters (accuracy, or agreement with the original), or
# None when the outputs do not read as classes; called once at the end of every INQ step.
StepEvaluator = Callable[[Mapping[str, np.ndarray]], "float | None"]


@dataclass(frozen=True)
class RetrainConfig:
    # None: chosen per model and data by inq_onnx.recipe (run_inq needs them set; decay None means "none" there).
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    decay: str | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    strategy: str = "magnitude"
    seed: int = 0

    def __post_init__(self):
        # Messages name the option as the CLI spells it too.
        if self.epochs is not None and not _whole(self.epochs, 0):
            raise ConfigError(f"epochs (--epochs) must be a whole number >= 0, got {self.epochs!r}")
        if not _whole(self.batch_size, 1):
            raise ConfigError(f"batch_size (--batch-size) must be a whole number >= 1, got {self.batch_size!r}")
        if not _whole(self.seed, 0):
            raise ConfigError(f"seed (--seed) must be a whole number >= 0, got {self.seed!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr (--lr) must be a finite number > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.decay is not None and self.decay not in DECAYS:
            raise ConfigError(f"decay (--decay) must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay (--weight-decay) must be a finite number >= 0, got {self.weight_decay!r}")


def _whole(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


@dataclass
class StepReport:
    portion: float
    frozen_fraction: float
    epoch_losses: list[float] = field(default_factory=list)
    accuracy: float | None = None  # the StepEvaluator's score at the end of the step, when one was given
    lr: float | None = None  # the learning rate the step's retraining ran at (None: not retrained)
    # Rates tried and given up on in this step, each with the probe loss it left (the step's start: probe_start).
    tried: list[tuple[float, float]] = field(default_factory=list)
    probe_start: float | None = None  # the loss probe after the freeze, and after the kept retraining
    probe_end: float | None = None


# The loss probe of a retrained step (for a rate the recipe chose): the mean loss on the first PROBE_BATCHES
# batches of the data, in order, before and after the step's retraining.
# - The first retrained step also runs at the rate over LR_BACKOFF, then over LR_BACKOFF^2 ..., while each lower
#   rate leaves a lower probe loss (at most MAX_BACKOFFS times), and keeps the best: the range test gives where
#   the loss diverges, not where retraining after a freeze fits best. (A depthwise digits net at 2 bits kept
#   57% at the range test's 8.9e-4 and 95% at 4.4e-4.)
# - A later step whose retraining leaves the probe above its start (it wrecked the rest instead of fitting
#   the frozen portion) is redone at the rate over LR_BACKOFF, as often, and the lower rate is kept.
PROBE_BATCHES = 4
LR_BACKOFF = 4.0
MAX_BACKOFFS = 3


def _freeze(params: dict[str, np.ndarray], frozen: dict[str, np.ndarray], levels: Mapping[str, LayerLevels]
            ) -> dict[str, np.ndarray]:
    """Put frozen entries exactly on their levels; returns those values for cheap restores."""
    values = {}
    for name, mask in frozen.items():
        w = params[name]
        w[mask] = quantize(w, levels[name])[mask]  # the whole tensor: per-channel levels follow the layout
        values[name] = w[mask]
    return values


def _probe_loss(backend: GradientBackend, examples: Examples, batch_size: int) -> float:
    losses = [backend.loss_and_gradients(batch, target)[0]
              for batch, target in itertools.islice(examples.batches(batch_size, None), PROBE_BATCHES)]
    return float(np.mean(losses))


def run_inq(backend: GradientBackend, levels: Mapping[str, LayerLevels], portions: Sequence[float],
            examples: Examples, config: RetrainConfig, progress: ProgressCallback | None = None,
            checkpoint: CheckpointCallback | None = None, resume_from: InqState | None = None,
            evaluate: StepEvaluator | None = None, back_off: bool = False
            ) -> tuple[dict[str, np.ndarray], list[StepReport]]:
    """Run the whole schedule; returns the final parameters (all quantized weights on their levels).

    `levels` maps each quantized weight's name to its levels; other trainable parameters (biases, excluded
    layers) retrain as float. `examples` gives the batches of every epoch, in an order the loop's generator
    draws, with their targets: labels or, for distillation, the teacher's outputs.
    `checkpoint` receives the state after each retrained step; `resume_from` (such a state) continues from there.
    `back_off` (for a rate the recipe chose): the rate check on the loss probe (PROBE_BATCHES): the first
    retrained step keeps the best of the rate and lower ones, a later step whose retraining raises the probe is
    redone at a lower rate.
    """
    if config.epochs is None or config.lr is None:
        raise ConfigError("run_inq needs epochs and lr set (inq_onnx.recipe.choose_recipe picks them)")
    decay = config.decay or "none"
    rng = np.random.default_rng(config.seed)
    params = backend.get_parameters()
    missing = set(levels) - set(params)
    if missing:
        raise ConfigError(f"weights not trainable in the backend: {', '.join(sorted(missing))}")
    frozen = {name: np.zeros(params[name].shape, dtype=bool) for name in levels}
    retrain_steps = [p for p in portions if p < 1.0]
    reports = []
    lr = config.lr
    if resume_from is not None:
        _restore(resume_from, params, frozen, rng)
        reports = [StepReport(**{**report, "tried": [tuple(t) for t in report.get("tried", [])]})
                   for report in resume_from.reports]
        lr = next((r.lr for r in reversed(reports) if r.lr is not None), lr)  # a rate lowered before the stop
    for step, portion in enumerate(portions):
        if resume_from is not None and step < resume_from.steps_done:
            continue
        for name in levels:
            frozen[name] = grow_frozen_mask(params[name], frozen[name], portion, config.strategy, rng)
        frozen_values = _freeze(params, frozen, levels)
        backend.set_parameters(params)
        total = sum(int(m.size) for m in frozen.values())
        report = StepReport(portion, sum(int(m.sum()) for m in frozen.values()) / max(total, 1))
        reports.append(report)
        if portion >= 1.0:
            if evaluate is not None:
                report.accuracy = evaluate(params)
            break  # the last step quantizes everything; nothing is left to retrain
        trainable = {name: ~mask for name, mask in frozen.items()}
        if not back_off:
            optimizer = _retrain_step(backend, examples, config, lr, decay, params, frozen, frozen_values,
                                      trainable, rng, report, step, len(retrain_steps), progress)
        else:
            search = not any(r.lr is not None for r in reports)  # the first retrained step
            optimizer, lr = _retrain_with_probe(backend, examples, config, lr, decay, params, frozen, frozen_values,
                                                trainable, rng, report, step, len(retrain_steps), progress, search)
        report.lr = lr
        if evaluate is not None:  # before the checkpoint, which keeps the reports
            report.accuracy = evaluate(params)
        if checkpoint is not None:
            checkpoint(InqState(step + 1, {k: v.copy() for k, v in params.items()},
                                {k: v.copy() for k, v in frozen.items()}, rng.bit_generator.state,
                                optimizer.state_dict(), [asdict(r) for r in reports]))
    return params, reports


def _retrain_with_probe(backend: GradientBackend, examples: Examples, config: RetrainConfig, lr: float,
                        decay: str, params: dict[str, np.ndarray], frozen: dict[str, np.ndarray],
                        frozen_values: dict[str, np.ndarray], trainable: dict[str, np.ndarray],
                        rng: np.random.Generator, report: StepReport, step: int, steps: int,
                        progress: ProgressCallback | None, search: bool):
    """_retrain_step with the loss probe (PROBE_BATCHES): returns the optimizer and the rate kept. `params`,
    `rng` and `report` end as the kept run left them."""
    report.probe_start = _probe_loss(backend, examples, config.batch_size)
    start = ({k: v.copy() for k, v in params.items()}, rng.bit_generator.state)
    best = None  # (probe, rate, params, rng state, epoch losses, optimizer) of the best run so far
    step_batches = _step_batches(examples, config)
    while True:
        # Progress counts on over the rates tried: the step's bar grows by one run per rate.
        offset = len(report.tried) * step_batches
        counted = progress and (lambda s, n, done, total, loss: progress(s, n, offset + done, offset + total, loss))
        try:
            optimizer = _retrain_step(backend, examples, config, lr, decay, params, frozen, frozen_values,
                                      trainable, rng, report, step, steps, counted)
            probe = _probe_loss(backend, examples, config.batch_size)
        except TrainingError:  # diverged: the extreme of a rising loss (raised below if no rate did better)
            optimizer, probe = None, math.inf
        report.tried.append((lr, probe))
        better = best is None or probe < best[0]
        if better:
            best = (probe, lr, {k: v.copy() for k, v in params.items()}, rng.bit_generator.state,
                    list(report.epoch_losses), optimizer)
        lower = (search and better) or (not search and probe > report.probe_start)
        if not lower or len(report.tried) > MAX_BACKOFFS:
            break
        lr /= LR_BACKOFF
        params.update({k: v.copy() for k, v in start[0].items()})
        rng.bit_generator.state = start[1]
        backend.set_parameters(params)
        report.epoch_losses = []
    probe, lr, kept, state, losses, optimizer = best
    report.probe_end = probe
    report.tried = [(rate, value) for rate, value in report.tried if rate != lr]
    params.update(kept)
    rng.bit_generator.state = state
    backend.set_parameters(params)
    report.epoch_losses = losses
    if optimizer is None:
        raise TrainingError(f"retraining diverged in step {step + 1} at every rate tried; lower --lr")
    return optimizer, lr


def _step_batches(examples: Examples, config: RetrainConfig) -> int:
    """Optimizer steps in one run of an INQ step: every epoch's batches."""
    return -(-len(examples) // config.batch_size) * config.epochs


def _retrain_step(backend: GradientBackend, examples: Examples, config: RetrainConfig, lr: float, decay: str,
                  params: dict[str, np.ndarray], frozen: dict[str, np.ndarray], frozen_values: dict[str, np.ndarray],
                  trainable: dict[str, np.ndarray], rng: np.random.Generator, report: StepReport, step: int,
                  steps: int, progress: ProgressCallback | None):
    """One INQ step's epochs at rate `lr` (decayed within the step); returns the step's optimizer."""
    optimizer = make_optimizer(config.optimizer, lr, config.weight_decay, config.momentum)
    done = 0
    step_batches = _step_batches(examples, config)
    for _ in range(config.epochs):
        losses = []
        for batch, target in examples.batches(config.batch_size, rng):
            optimizer.lr = decayed_lr(lr, decay, done / step_batches)
            loss, grads = backend.loss_and_gradients(batch, target)
            if not math.isfinite(loss):
                raise TrainingError(f"retraining diverged in step {step + 1} (loss {loss}); lower --lr")
            optimizer.step(params, grads, trainable)
            for name, mask in frozen.items():  # exact, whatever the optimizer did
                params[name][mask] = frozen_values[name]
            backend.set_parameters(params)
            losses.append(loss)
            done += 1
            if progress is not None:
                progress(step, steps, done, step_batches, loss)
        # A non-finite weight shows in the next batch's loss; this catches the epoch's last batch too,
        # without scanning every weight after every batch.
        if not all(np.isfinite(v).all() for v in params.values()):
            raise TrainingError(f"retraining diverged in step {step + 1} (a weight became NaN or Inf); "
                                f"lower --lr")
        report.epoch_losses.append(float(np.mean(losses)))
    return optimizer


def _restore(state: InqState, params: dict[str, np.ndarray], frozen: dict[str, np.ndarray],
             rng: np.random.Generator) -> None:
    """Load a checkpointed state into the loop's parameters, masks and generator, checking it fits."""
    if set(state.params) != set(params) or set(state.frozen) != set(frozen):
        raise ConfigError("the checkpoint holds other parameters than the model trains")
    for name, value in state.params.items():
        if value.shape != params[name].shape:
            raise ConfigError(f"the checkpoint's {name!r} has shape {value.shape}, the model's {params[name].shape}")
        params[name] = value.astype(params[name].dtype)
    for name, mask in state.frozen.items():
        frozen[name] = mask.astype(bool)
    rng.bit_generator.state = state.rng_state
