"""INQ's weight levels and rounding (pure numpy): weights become 0 or ±2^k, k in [n2, n1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .packing import check_bits

__all__ = ["LayerLevels", "layer_levels", "quantize"]



@dataclass(frozen=True)
class LayerLevels:
    """The power-of-two levels of one layer: {0} ∪ {±2^k : n2 <= k <= n1}."""

    bits: int
    n1: int
    n2: int

    @property
    def exponents(self) -> np.ndarray:
        return np.arange(self.n2, self.n1 + 1)

    @property
    def values(self) -> np.ndarray:
        """All levels, ascending."""
        positive = np.ldexp(1.0, self.exponents)
        return np.concatenate([-positive[::-1], [0.0], positive]).astype(np.float32)


def layer_levels(weights: np.ndarray, bits: int) -> LayerLevels:
    """Levels from the layer's original weights: s = max|W|, n1 = floor(log2(4s/3)), n2 = n1 + 1 - 2^(b-1)/2."""
    check_bits(bits)
    s = float(np.max(np.abs(weights))) if np.size(weights) else 0.0
    if not np.isfinite(s):
        raise ConfigError("weights contain NaN or Inf")
    if s == 0.0:
        # An all-zero layer has no scale; any range quantizes it to zeros. Pick the one of s = 1.
        s = 1.0
    # frexp is exact where log2 of a float would round: 4s/3 = m * 2^e with 0.5 <= m < 1.
    _, e = np.frexp(np.float64(4.0 * s / 3.0))
    n1 = int(e) - 1
    n2 = n1 + 1 - (1 << (bits - 1)) // 2
    return LayerLevels(bits=bits, n1=n1, n2=n2)


def quantize(weights: np.ndarray, levels: LayerLevels) -> np.ndarray:
    """Nearest level in the linear domain, ties up; 0 below 2^(n2-1); clamps above to ±2^n1 (never to 0).

    ±2^k is chosen for 0.75·2^k <= |w| < 1.5·2^k; the boundaries between two powers of two and the zero
    threshold 2^(n2-1) are exact in float, so the comparisons below are exact too.
    """
    w = np.asarray(weights, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise ConfigError("weights contain NaN or Inf")
    magnitude = np.abs(w).astype(np.float64)
    # Exponent k with 0.75·2^k <= |w| < 1.5·2^k, i.e. 2^k nearest to |w|, ties (at 1.5·2^k) going up.
    _, e = np.frexp(magnitude / 0.75)  # magnitude/0.75 = m * 2^e, 0.5 <= m < 1  =>  k = e - 1
    k = np.clip(e.astype(np.int64) - 1, levels.n2, levels.n1)
    q = np.ldexp(1.0, k)
    q = np.where(magnitude < np.ldexp(1.0, levels.n2 - 1), 0.0, q)
    return (np.sign(w) * q).astype(np.float32)
