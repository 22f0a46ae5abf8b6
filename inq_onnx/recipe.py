"""The retraining recipe chosen per model and data: steps per INQ step, learning rate, decay and loss, each with why.

Whatever the user set in RetrainConfig / QuantizeConfig wins; the rest is measured here:

- epochs per INQ step: enough epochs for a minimum number of optimizer steps per INQ step (more below 4 bits,
  where each step moves weights further), at least one: retraining time grows with the data and stays bounded
  below for small data sets.
- learning rate: a short range test on the training data, in the state retraining starts from (the first
  portion frozen on its levels): the rate rises geometrically batch after batch until the loss diverges; the
  recipe takes a tenth of that rate, which retraining then checks against lower ones on a loss probe
  (inq_onnx.retrain.PROBE_BATCHES).
- decay: a half cosine within each INQ step, so that the weights have settled when the next portion is frozen
  by magnitude.
- loss (when the data has labels and the loss is "auto"): the original model's outputs (distillation) when it
  already fits the training labels, as pre-trained models usually do; the labels when it does not.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import ConfigError
from .quantizer import LayerLevels, quantize
from .retrain import RetrainConfig
from .schedule import grow_frozen_mask
from .sources import Examples
from .training.backend import GradientBackend
from .training.optim import make_optimizer

__all__ = ["Recipe", "RangeTest", "choose_recipe", "choose_epochs", "choose_loss", "lr_range_test",
           "MIN_STEPS_PER_INQ_STEP", "FIT_ACCURACY"]

# Optimizer steps each INQ step gets at least: more at low widths, where each frozen portion moves the weights
# further (the demo's 3-bit recipe needed about 260). Checked, not tuned, by benchmarks/recipe_accuracy.py.
MIN_STEPS_PER_INQ_STEP = {5: 150, 4: 200, 3: 300, 2: 400}
MAX_EPOCHS = 50  # a bound for tiny data sets, where MIN_STEPS would mean hundreds of passes
# Training accuracy from which the original model counts as fitting its labels: its outputs then carry the
# labels and how sure it is of them, and distillation keeps the quantized model closest to it.
FIT_ACCURACY = 0.99

RANGE_LR_MIN, RANGE_LR_MAX = 1e-5, 10.0
RANGE_BATCHES = 60
RANGE_SMOOTHING = 0.7  # weight of the running loss in the exponential average of batch losses
RANGE_DIVERGENCE = 4.0  # the smoothed loss above this many times its minimum: diverged
RANGE_MARGIN = 10.0  # the rate chosen is the divergence rate over this


@dataclass(frozen=True)
class RangeTest:
    """Learning rates tried, one per batch, the loss each gave, and where the loss diverged (None: never)."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    divergence_lr: float | None

    @property
    def chosen_lr(self) -> float:
        top = self.divergence_lr if self.divergence_lr is not None else self.lrs[-1]
        return max(top / RANGE_MARGIN, RANGE_LR_MIN)


@dataclass(frozen=True)
class Recipe:
    """The retraining settings used, each with a one-line reason."""

    epochs: int
    lr: float
    decay: str
    loss: str  # "labels" or "distillation"
    epochs_why: str
    lr_why: str
    decay_why: str
    loss_why: str
    range_test: RangeTest | None = None

    def training(self, config: RetrainConfig) -> RetrainConfig:
        """`config` with the chosen values in place of the ones left unset."""
        return dataclasses.replace(config, epochs=self.epochs, lr=self.lr, decay=self.decay)

    def lines(self) -> list[str]:
        return [f"epochs per INQ step {self.epochs}: {self.epochs_why}",
                f"learning rate {self.lr:.3g}: {self.lr_why}",
                f"decay {self.decay}: {self.decay_why}",
                f"loss {self.loss}: {self.loss_why}"]


def choose_epochs(sample_count: int, batch_size: int, bits: int) -> tuple[int, str]:
    """Epochs per INQ step giving at least MIN_STEPS_PER_INQ_STEP optimizer steps, and why."""
    batches = -(-sample_count // batch_size)
    wanted = MIN_STEPS_PER_INQ_STEP[min(max(bits, 2), 5)]
    epochs = min(max(1, -(-wanted // batches)), MAX_EPOCHS)
    if epochs == 1:
        return 1, f"one pass over the data ({batches} batches) gives at least the {wanted} optimizer steps a " \
                  f"{bits}-bit INQ step needs"
    capped = " (capped)" if epochs == MAX_EPOCHS else ""
    return epochs, f"{batches} batches an epoch; {epochs} epochs{capped} give the {wanted} optimizer steps a " \
                   f"{bits}-bit INQ step needs"


def choose_loss(requested: str, labels: np.ndarray | None, teacher_accuracy: float | None) -> tuple[str, str]:
    """"labels" or "distillation" for QuantizeConfig.loss `requested`, and why."""
    if requested == "cross-entropy":
        return "labels", "set by --loss"
    if requested == "distillation":
        return "distillation", "set by --loss"
    if labels is None:
        return "distillation", "the data has no labels: the original model's outputs are the targets"
    if teacher_accuracy is not None and teacher_accuracy >= FIT_ACCURACY:
        return "distillation", f"the original model fits the training labels ({teacher_accuracy:.1%}): its " \
                               f"outputs say as much and how sure it is"
    shown = f" ({teacher_accuracy:.1%})" if teacher_accuracy is not None else ""
    return "labels", f"the original model does not fit the training labels{shown}: they say more than its outputs"


def lr_range_test(backend: GradientBackend, examples: Examples, config: RetrainConfig,
                  levels: Mapping[str, LayerLevels], portion: float, batches: int = RANGE_BATCHES) -> RangeTest:
    """Train with a rate rising from RANGE_LR_MIN to RANGE_LR_MAX over `batches` batches, from the state of the
    first INQ step (`portion` of each weight in `levels` frozen on its levels); the backend's parameters are
    restored afterwards. The batches run on from one pass over the examples into the next, each in a new order."""
    start = backend.get_parameters()
    params = {name: value.copy() for name, value in start.items()}
    rng = np.random.default_rng(config.seed)
    frozen, trainable = {}, {}
    for name, layer_levels in levels.items():
        mask = grow_frozen_mask(params[name], np.zeros(params[name].shape, bool), portion, config.strategy, rng)
        params[name][mask] = quantize(params[name], layer_levels)[mask]
        frozen[name], trainable[name] = (mask, params[name][mask]), ~mask
    lrs = np.geomspace(RANGE_LR_MIN, RANGE_LR_MAX, batches)
    optimizer = make_optimizer(config.optimizer, float(lrs[0]), config.weight_decay, config.momentum)
    stream = examples.batches(config.batch_size, rng, endless=True)
    losses: list[float] = []
    smoothed, lowest, divergence = None, math.inf, None
    try:
        backend.set_parameters(params)
        for i, lr in enumerate(lrs):
            loss, grads = backend.loss_and_gradients(*next(stream))
            losses.append(loss)
            smoothed = loss if smoothed is None else RANGE_SMOOTHING * smoothed + (1 - RANGE_SMOOTHING) * loss
            # The loss seen now is that of the step taken at the previous rate.
            if i and not (math.isfinite(smoothed) and smoothed <= RANGE_DIVERGENCE * lowest):
                divergence = float(lrs[i - 1])
                break
            lowest = min(lowest, smoothed)
            optimizer.lr = float(lr)
            optimizer.step(params, grads, trainable)
            for name, (mask, values) in frozen.items():
                params[name][mask] = values
            if not all(np.isfinite(v).all() for v in params.values()):
                divergence = float(lr)
                break
            backend.set_parameters(params)
    finally:
        stream.close()
        backend.set_parameters(start)
    return RangeTest(tuple(float(x) for x in lrs[:len(losses)]), tuple(losses), divergence)


def choose_recipe(backend: GradientBackend, examples: Examples, config: RetrainConfig,
                  levels: Mapping[str, LayerLevels], portions: Sequence[float], bits: int, loss: str,
                  loss_why: str) -> Recipe:
    """The recipe for retraining with `backend` on `examples`: `config`'s set values, the rest chosen.

    `loss` and `loss_why` come from choose_loss (the backend is built for that loss already).
    """
    if not portions:
        raise ConfigError("portions must not be empty")
    count = len(examples)
    if config.epochs is not None:
        epochs, epochs_why = config.epochs, "set by --epochs"
    else:
        epochs, epochs_why = choose_epochs(count, config.batch_size, bits)
    range_test = None
    if config.lr is not None:
        lr, lr_why = config.lr, "set by --lr"
    else:
        range_test = lr_range_test(backend, examples, config, levels, portions[0])
        lr = range_test.chosen_lr
        if range_test.divergence_lr is None:
            lr_why = f"range test on the training data: no divergence up to {range_test.lrs[-1]:.3g}; a " \
                     f"tenth of that"
        else:
            lr_why = f"range test on the training data: the loss diverged at {range_test.divergence_lr:.3g}; " \
                     f"a tenth of that"
    if config.decay is not None:
        decay, decay_why = config.decay, "set by --decay"
    else:
        decay, decay_why = "cosine", "the rate falls within each INQ step so that weights settle before the " \
                                     "next portion is frozen by magnitude"
    return Recipe(epochs, lr, decay, loss, epochs_why, lr_why, decay_why, loss_why, range_test)
