"""INQ's incremental schedule: accumulated portions per step and which weights each step freezes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["DEFAULT_PORTIONS", "default_portions", "check_portions", "parse_portions", "grow_frozen_mask",
           "STRATEGIES"]

# The paper's accumulated portions (ICLR 2017, section 3 and table 6).
DEFAULT_PORTIONS: dict[int, tuple[float, ...]] = {
    5: (0.5, 0.75, 0.875, 1.0),
    4: (0.3, 0.5, 0.8, 0.9, 0.95, 1.0),
    3: (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
    2: (0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0),
}
STRATEGIES = ("magnitude", "random")


def default_portions(bits: int) -> tuple[float, ...]:
    """The paper's schedule for `bits`; widths above 5 bits lose less and use the 5-bit one."""
    return DEFAULT_PORTIONS[min(bits, 5)]


def check_portions(portions: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(p) for p in portions)
    if not values:
        raise ConfigError("portions must not be empty")
    if any(not 0.0 < p <= 1.0 for p in values):  # also catches NaN
        raise ConfigError(f"portions must lie in (0, 1], got {list(values)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(f"portions must increase strictly, got {list(values)}")
    if values[-1] != 1.0:
        raise ConfigError(f"the last portion must be 1 (everything quantized), got {values[-1]}")
    return values


def parse_portions(text: str) -> tuple[float, ...]:
    """'0.5,0.75,0.875,1' -> (0.5, 0.75, 0.875, 1.0)."""
    try:
        values = [float(part) for part in text.split(",")] if text.strip() else []
    except ValueError:
        raise ConfigError(f"portions must be comma-separated numbers, got {text!r}") from None
    return check_portions(values)


def grow_frozen_mask(weights: np.ndarray, frozen: np.ndarray, portion: float, strategy: str,
                     rng: np.random.Generator) -> np.ndarray:
    """Freeze more weights until `portion` of the layer is frozen; frozen weights stay frozen.

    `magnitude` (the paper's pruning-inspired partition) picks the largest |w| among the weights not yet
    frozen; `random` is the paper's ablation baseline.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    flat_frozen = frozen.reshape(-1)
    target = int(round(portion * flat_frozen.size)) if portion < 1.0 else flat_frozen.size
    needed = target - int(flat_frozen.sum())
    if needed <= 0:
        return frozen.copy()
    candidates = np.flatnonzero(~flat_frozen)
    if strategy == "magnitude":
        scores = np.abs(weights.reshape(-1)[candidates])
        # Stable sort: equal magnitudes freeze in index order, so runs are reproducible.
        chosen = candidates[np.argsort(-scores, kind="stable")[:needed]]
    else:
        chosen = rng.choice(candidates, size=needed, replace=False)
    grown = flat_frozen.copy()
    grown[chosen] = True
    return grown.reshape(frozen.shape)
