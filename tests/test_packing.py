"""The packed weight format (docs/ops.md): codes, bit order, round trips for every bit width."""

import numpy as np
import pytest

from inq_onnx import packing
from inq_onnx.errors import InqError
from inq_onnx.quantizer import layer_levels, quantize


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 1001])
def test_bit_packing_round_trip(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    codes = rng.integers(0, 1 << bits, size=count).astype(np.uint8)
    packed = packing.pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == (count * bits + 7) // 8
    assert np.array_equal(packing.unpack_bits(packed, bits, count), codes)


def test_bit_order_is_lsb_first():
    # 3-bit codes 1, 2, 7: stream bits 100 010 111 -> byte0 = 0b11010001, byte1 = 0b1
    assert packing.pack_bits(np.array([1, 2, 7], np.uint8), 3).tolist() == [0b11010001, 0b1]


@pytest.mark.parametrize("bits", range(2, 9))
def test_weight_round_trip_through_codes(bits):
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((6, 3, 3, 3)) * 0.2).astype(np.float32)
    levels = layer_levels(w, bits)
    q = quantize(w, levels)
    packed = packing.pack_weight(q, bits, [levels.n2])
    assert np.array_equal(packing.unpack_weight(packed, bits, [levels.n2], q.shape), q)


def test_code_layout_sign_and_magnitude():
    # base -3: m=1 -> 2^-3, m=3 -> 2^-1; sign is the top bit
    codes = packing.encode(np.array([0.125, -0.5, 0.0], np.float32), 4, [-3])
    assert codes.tolist() == [0b0001, 0b1011, 0]
    assert packing.decode_codes(np.array([0b1000], np.uint8), 4, [-3]).tolist() == [0.0]  # negative zero


def test_per_channel_exponent_base():
    w = np.array([[1.0, -0.5], [0.25, 0.0]], np.float32)
    codes = packing.encode(w, 3, [-1, -2], channel_axis=0)
    assert np.array_equal(packing.decode_codes(codes, 3, [-1, -2], channel_axis=0), w)
    with pytest.raises(InqError, match="expected 1 or 2"):
        packing.encode(w, 3, [-1, -2, 0])


def test_encode_rejects_off_level_weights():
    with pytest.raises(InqError, match="power of two"):
        packing.encode(np.array([0.3], np.float32), 5, [-7])
    with pytest.raises(InqError, match="outside the 3-bit range"):
        packing.encode(np.array([8.0], np.float32), 3, [0])  # m = 4 > 2^(3-1) - 1


def test_unpack_rejects_wrong_byte_count():
    with pytest.raises(InqError, match="need 2"):
        packing.unpack_bits(np.zeros(3, np.uint8), 5, 3)


@pytest.mark.parametrize("bits", [2, 3, 5])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_pack_weight_in_blocks_gives_the_bytes_of_the_whole_tensor(monkeypatch, bits, axis):
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((29, 7, 3)) * rng.uniform(0.05, 2, size=(29, 1, 1))).astype(np.float32)
    levels = layer_levels(w, bits, axis)
    q = quantize(w, levels)
    whole = packing.pack_bits(packing.encode(q, bits, levels.exponent_base, axis or 0), bits)
    monkeypatch.setattr(packing, "_PACK_BLOCK", 50)  # rows of 21 codes: blocks of 8 rows (168 codes, 21 bytes)
    blocked = packing.pack_weight(q, bits, levels.exponent_base, axis or 0)
    np.testing.assert_array_equal(blocked, whole)
    assert np.array_equal(packing.unpack_weight(blocked, bits, levels.exponent_base, q.shape, axis or 0), q)
