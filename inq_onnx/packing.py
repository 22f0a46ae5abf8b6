"""Encode INQ levels as sign-magnitude codes and pack them densely, b bits per weight (docs/ops.md)."""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError, InqError

__all__ = ["encode", "decode_codes", "pack_bits", "unpack_bits", "pack_weight", "unpack_weight", "packed_size",
           "channel_base", "check_bits", "MIN_BITS", "MAX_BITS"]

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int) -> None:
    """The bit widths the format (and the kernels) support."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")


def channel_base(exponent_base: np.ndarray, shape: tuple[int, ...], channel_axis: int) -> np.ndarray:
    """Broadcast a per-tensor (1 value) or per-channel exponent base to `shape`."""
    base = np.asarray(exponent_base, dtype=np.int64).reshape(-1)
    if base.size == 1:
        return np.broadcast_to(base[0], shape)  # a read-only view, as below
    if base.size != shape[channel_axis]:
        raise InqError(
            f"exponent_base has {base.size} values; expected 1 or {shape[channel_axis]} (axis {channel_axis})"
        )
    view = [1] * len(shape)
    view[channel_axis] = base.size
    return np.broadcast_to(base.reshape(view), shape)


def encode(values: np.ndarray, bits: int, exponent_base, channel_axis: int = 0) -> np.ndarray:
    """Codes (uint8) of weights that are already INQ levels: 0 or ±2^(base + m - 1), 1 <= m < 2^(bits-1)."""
    check_bits(bits)
    values = np.asarray(values, dtype=np.float32)
    base = channel_base(exponent_base, values.shape, channel_axis)
    codes = np.zeros(values.shape, dtype=np.uint8)
    nonzero = values != 0
    mantissa, exponent = np.frexp(np.abs(values[nonzero]))
    if np.any(mantissa != 0.5):
        raise InqError("weights to encode must be 0 or a power of two")
    # frexp gives |w| = 0.5 * 2^exponent, so |w| = 2^(exponent - 1) = 2^(base + m - 1): m = exponent - base.
    m = exponent.astype(np.int64) - base[nonzero]
    if np.any(m < 1) or np.any(m >= 1 << (bits - 1)):
        raise InqError(f"a weight's exponent lies outside the {bits}-bit range of its exponent base")
    sign = (values[nonzero] < 0).astype(np.int64) << (bits - 1)
    codes[nonzero] = (sign | m).astype(np.uint8)
    return codes


def decode_codes(codes: np.ndarray, bits: int, exponent_base, channel_axis: int = 0) -> np.ndarray:
    """Float32 weights from codes; inverse of `encode`."""
    check_bits(bits)
    codes = np.asarray(codes, dtype=np.int64)
    base = channel_base(exponent_base, codes.shape, channel_axis)
    m = codes & ((1 << (bits - 1)) - 1)
    sign = np.where(codes >> (bits - 1) & 1, -1.0, 1.0)
    values = np.where(m == 0, 0.0, sign * np.ldexp(1.0, base + m - 1))
    return values.astype(np.float32)


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Concatenate b-bit codes, least significant bit first, into a 1-D uint8 array."""
    check_bits(bits)
    flat = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if flat.size and int(flat.max()) >> bits:
        raise InqError(f"a code does not fit in {bits} bits")
    # One row of `bits` bits per code, little-endian, then the rows end to end.
    stream = np.unpackbits(flat[:, None], axis=1, bitorder="little")[:, :bits].reshape(-1)
    return np.packbits(stream, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits`: `count` codes as uint8."""
    check_bits(bits)
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size != packed_size(count, bits):
        raise InqError(f"packed weight has {packed.size} bytes; {count} codes of {bits} bits need "
                       f"{packed_size(count, bits)}")
    stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (stream.astype(np.uint16) @ weights).astype(np.uint8)


def pack_weight(values: np.ndarray, bits: int, exponent_base, channel_axis: int = 0) -> np.ndarray:
    """Packed bytes of a weight tensor whose entries are INQ levels.

    Encoded and packed in blocks of whole rows along axis 0, each a multiple of 8 codes (so every block ends on
    a byte and the bytes are those of the whole tensor at once): the temporaries, several bytes per code, stay
    a few times a block however large the layer."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 0 or values.size <= _PACK_BLOCK:
        return pack_bits(encode(values, bits, exponent_base, channel_axis), bits)
    channel_base(exponent_base, values.shape, channel_axis)  # the base's size checked once, for the whole tensor
    base = np.asarray(exponent_base, dtype=np.int64).reshape(-1)
    row = values.size // values.shape[0]
    step = max(1, _PACK_BLOCK // row)
    step = -(-step // (8 // math.gcd(row, 8))) * (8 // math.gcd(row, 8))  # step * row codes: whole bytes
    parts = []
    for start in range(0, values.shape[0], step):
        block = values[start:start + step]
        block_base = base[start:start + step] if base.size > 1 and channel_axis % values.ndim == 0 else base
        parts.append(pack_bits(encode(block, bits, block_base, channel_axis), bits))
    return np.concatenate(parts)


# Codes per block of pack_weight().
_PACK_BLOCK = 1 << 20


def unpack_weight(packed: np.ndarray, bits: int, exponent_base, shape, channel_axis: int = 0) -> np.ndarray:
    """Float32 weight of `shape` from packed bytes."""
    shape = tuple(int(d) for d in shape)
    codes = unpack_bits(packed, bits, int(np.prod(shape, dtype=np.int64))).reshape(shape)
    return decode_codes(codes, bits, exponent_base, channel_axis)
