"""INQ's weight levels and rounding (pure numpy): weights become 0 or ±2^k, k in [n2, n1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .packing import channel_base, check_bits

__all__ = ["LayerLevels", "layer_levels", "quantize", "GRANULARITIES", "uses_channel_ranges", "RANGE_RULES"]

# One exponent range per weight tensor (the paper's), or one per output channel.
GRANULARITIES = ("auto", "tensor", "channel")
# "auto": one range per output channel below this many bits, one per tensor from it on. At 5 bits the eight
# exponents of one range reach far enough that per-channel ranges measured no better (README, BatchNorm
# folding), while they put a level of +-128 in nearly every channel, which int8 integer mode and the QDQ export
# can hold only through corrections (measured on ResNet-18: integer mode 2.25x FP32 per channel, 2.73x per tensor).
AUTO_CHANNEL_BELOW_BITS = 5


def uses_channel_ranges(granularity: str, bits: int) -> bool:
    """Whether a weight of `bits` gets one exponent range per output channel under `granularity`."""
    return granularity == "channel" or (granularity == "auto" and bits < AUTO_CHANNEL_BELOW_BITS)


# Where a range sits: the paper's rule from the largest magnitude ("max"), or that range moved down by up to
# MSE_MAX_SHIFT octaves where this lowers the squared rounding error of the tensor (or channel) ("mse", the
# default; the largest weights then clamp to the top level). With one or two magnitudes (2 and 3 bits), a top
# level at the largest weight sends most weights to zero: on the small ResNet of benchmarks/bench_resnet.py
# one-shot accuracy rose from 15% to 70% at 2 bits and from 74% to 96% at 3 bits (README).
RANGE_RULES = ("max", "mse")
MSE_MAX_SHIFT = 3


@dataclass(frozen=True)
class LayerLevels:
    """The power-of-two levels of one layer: {0} ∪ {±2^k : n2 <= k <= n1}.

    One range for the whole tensor (n1, n2 ints), or one per output channel (n1, n2 tuples with one entry per
    index of the weight's `channel_axis`).
    """

    bits: int
    n1: int | tuple[int, ...]
    n2: int | tuple[int, ...]
    channel_axis: int = 0

    @property
    def per_channel(self) -> bool:
        return isinstance(self.n1, tuple)

    @property
    def exponent_base(self) -> list[int]:
        """The packed format's exponent_base: n2, once or per channel."""
        return list(self.n2) if self.per_channel else [self.n2]

    def channel(self, index: int) -> LayerLevels:
        """The levels of one output channel (the tensor's when the range is per tensor)."""
        if not self.per_channel:
            return self
        return LayerLevels(self.bits, self.n1[index], self.n2[index])

    @property
    def exponents(self) -> np.ndarray:
        """The exponents of a per-tensor range (per channel: see `channel`)."""
        if self.per_channel:
            raise ValueError("per-channel levels have one exponent range per channel: use channel(index)")
        return np.arange(self.n2, self.n1 + 1)

    @property
    def values(self) -> np.ndarray:
        """All levels of a per-tensor range, ascending."""
        positive = np.ldexp(1.0, self.exponents)
        return np.concatenate([-positive[::-1], [0.0], positive]).astype(np.float32)


def _range(s: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """n1 = floor(log2(4s/3)) and n2 = n1 + 1 - 2^(b-1)/2 for each max magnitude s > 0."""
    # frexp is exact where log2 of a float would round: 4s/3 = m * 2^e with 0.5 <= m < 1.
    _, e = np.frexp(4.0 * np.asarray(s, dtype=np.float64) / 3.0)
    n1 = e.astype(np.int64) - 1
    return n1, n1 + 1 - (1 << (bits - 1)) // 2


def layer_levels(weights: np.ndarray, bits: int, channel_axis: int | None = None, mse: bool = False) -> LayerLevels:
    """Levels from the layer's original weights: s = max|W|, n1 = floor(log2(4s/3)), n2 = n1 + 1 - 2^(b-1)/2.

    With `channel_axis`, s is each output channel's own max|W| along that axis, and so are n1 and n2. With
    `mse`, each range then moves down by the number of octaves (0 to MSE_MAX_SHIFT, the fewest of equals) that
    gives the smallest squared rounding error.
    """
    levels = _max_levels(weights, bits, channel_axis)
    return _fit_squared_error(np.asarray(weights), levels) if mse else levels


def _max_levels(weights: np.ndarray, bits: int, channel_axis: int | None) -> LayerLevels:
    check_bits(bits)
    w = np.abs(np.asarray(weights))  # exact in the weights' own type; maxima of float32 are float64-exact
    if w.dtype.kind != "f":
        w = w.astype(np.float64)
    s = float(np.max(w)) if w.size else 0.0
    if not np.isfinite(s):
        raise ConfigError("weights contain NaN or Inf")
    # An all-zero layer has no scale; any range quantizes it to zeros. Pick the one of s = 1.
    s = s or 1.0
    if channel_axis is None:
        n1, n2 = _range(s, bits)
        return LayerLevels(bits=bits, n1=int(n1), n2=int(n2))
    if not -w.ndim <= channel_axis < w.ndim:
        raise ConfigError(f"channel_axis {channel_axis} is out of range for a weight of rank {w.ndim}")
    channel_axis %= w.ndim
    others = tuple(a for a in range(w.ndim) if a != channel_axis)
    per_channel = (np.max(w, axis=others, initial=0.0) if others else w).astype(np.float64)
    # An all-zero channel takes the tensor's range: it quantizes to zeros anyway, and values retraining gives it
    # land on the tensor's levels.
    n1, n2 = _range(np.where(per_channel > 0, per_channel, s), bits)
    return LayerLevels(bits=bits, n1=tuple(int(v) for v in n1), n2=tuple(int(v) for v in n2),
                       channel_axis=channel_axis)


def _shifted(levels: LayerLevels, shift) -> LayerLevels:
    """The range(s) moved down by `shift` octaves (an int, or one per channel)."""
    if levels.per_channel:
        shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (len(levels.n1),))
        return LayerLevels(levels.bits, tuple(int(a - d) for a, d in zip(levels.n1, shift)),
                           tuple(int(a - d) for a, d in zip(levels.n2, shift)), levels.channel_axis)
    return LayerLevels(levels.bits, levels.n1 - int(shift), levels.n2 - int(shift), levels.channel_axis)


def _rounding_errors(w: np.ndarray, levels: LayerLevels) -> np.ndarray:
    """Squared rounding error of quantizing `w` to `levels`: one value per channel (one for a per-tensor range),
    summed in float64 block by block as quantize() goes."""
    per_channel = levels.per_channel
    axis = levels.channel_axis % w.ndim if per_channel else 0
    total = np.zeros(len(levels.n1) if per_channel else 1)
    for block, q in _quantized_blocks(w, *_bases(w, levels)):
        error = np.square(q.astype(np.float64) - w[block])
        if not per_channel:
            total += error.sum()
        elif axis == 0:
            total[block] += error.reshape(error.shape[0], -1).sum(axis=1)
        else:
            total += error.sum(axis=tuple(a for a in range(w.ndim) if a != axis))
    return total


def _fit_squared_error(weights: np.ndarray, levels: LayerLevels) -> LayerLevels:
    """`levels` with each range moved down by the shift (0..MSE_MAX_SHIFT) of least squared rounding error."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim == 0 or w.size == 0 or not np.all(np.isfinite(w)):
        return levels  # nothing to fit (quantize refuses non-finite weights itself)
    errors = np.stack([_rounding_errors(w, _shifted(levels, d)) for d in range(MSE_MAX_SHIFT + 1)])
    best = np.argmin(errors, axis=0)  # the first of equal errors: the smallest shift
    return _shifted(levels, best if levels.per_channel else int(best[0]))


def quantize(weights: np.ndarray, levels: LayerLevels) -> np.ndarray:
    """Nearest level in the linear domain, ties up; 0 below 2^(n2-1); clamps above to ±2^n1 (never to 0).

    ±2^k is chosen for 0.75·2^k <= |w| < 1.5·2^k; the boundaries between two powers of two and the zero
    threshold 2^(n2-1) are exact in float, so the comparisons below are exact too. Per-channel levels need the
    whole weight tensor (each entry takes the range of its channel).
    """
    w = np.asarray(weights, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise ConfigError("weights contain NaN or Inf")
    n1, n2 = _bases(w, levels)
    if w.ndim == 0 or w.size <= _QUANTIZE_BLOCK:
        return _quantize_block(w, n1, n2)
    out = np.empty(w.shape, np.float32)
    for block, q in _quantized_blocks(w, n1, n2):
        out[block] = q
    return out


def _bases(w: np.ndarray, levels: LayerLevels):
    """n1 and n2 for every entry of `w` (broadcast views), or the two ints of a per-tensor range."""
    if levels.per_channel:
        return (channel_base(levels.n1, w.shape, levels.channel_axis),
                channel_base(levels.n2, w.shape, levels.channel_axis))
    return levels.n1, levels.n2


def _quantized_blocks(w: np.ndarray, n1, n2):
    """(slice along axis 0, that block quantized), block by block: the float64 temporaries stay a few times a
    block, not the whole tensor, however large the layer (per-channel bases are sliced with it where they vary
    along that axis)."""
    step = max(1, _QUANTIZE_BLOCK // max(1, w.size // w.shape[0]))
    for start in range(0, w.shape[0], step):
        block = slice(start, start + step)
        pick = (lambda base: base[block] if isinstance(base, np.ndarray) and base.shape[0] > 1 else base)
        yield block, _quantize_block(w[block], pick(n1), pick(n2))


# Elements per block of quantize().
_QUANTIZE_BLOCK = 1 << 20


def _quantize_block(w: np.ndarray, n1, n2) -> np.ndarray:
    magnitude = np.abs(w).astype(np.float64)
    # Exponent k with 0.75·2^k <= |w| < 1.5·2^k, i.e. 2^k nearest to |w|, ties (at 1.5·2^k) going up.
    _, e = np.frexp(magnitude / 0.75)  # magnitude/0.75 = m * 2^e, 0.5 <= m < 1  =>  k = e - 1
    k = np.clip(e.astype(np.int64) - 1, n2, n1)
    q = np.ldexp(1.0, k)
    q = np.where(magnitude < np.ldexp(1.0, n2 - 1), 0.0, q)
    return (np.sign(w) * q).astype(np.float32)
