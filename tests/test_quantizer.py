"""INQ's levels and rounding against hand-computed cases: n1/n2, ties, clamps, the zero threshold."""

import numpy as np
import pytest

from inq_onnx.errors import ConfigError
from inq_onnx.quantizer import LayerLevels, layer_levels, quantize


@pytest.mark.parametrize("s, n1", [(1.0, 0), (0.75, 0), (0.7499, -1), (1.4999, 0), (1.5, 1), (3.0, 2),
                                   (0.1, -3), (0.09375, -3), (0.0937, -4)])
def test_n1_is_floor_log2_of_four_thirds_s(s, n1):
    # n1 = floor(log2(4s/3)): 4s/3 crosses 2^k exactly at s = 0.75 * 2^k.
    assert layer_levels(np.array([s, -s / 2], np.float32), 5).n1 == n1


@pytest.mark.parametrize("bits, exponents", [(2, 1), (3, 2), (4, 4), (5, 8), (6, 16), (7, 32), (8, 64)])
def test_n2_gives_two_to_the_b_minus_2_exponents(bits, exponents):
    levels = layer_levels(np.array([1.0], np.float32), bits)
    assert levels.n1 == 0
    assert levels.n2 == 1 - exponents  # n2 = n1 + 1 - 2^(b-1)/2
    assert len(levels.exponents) == exponents
    assert len(levels.values) == 2 * exponents + 1


def test_max_weight_sign_does_not_matter():
    assert layer_levels(np.array([-1.0, 0.2], np.float32), 5) == layer_levels(np.array([1.0, 0.2], np.float32), 5)


FIVE_BITS = LayerLevels(bits=5, n1=0, n2=-7)  # levels 0, ±2^-7 .. ±1


@pytest.mark.parametrize("w, q", [
    (1.0, 1.0), (0.75, 1.0), (0.7499, 0.5),            # 0.75·2^0 is the tie between 0.5 and 1: goes up
    (0.375, 0.5), (0.37499, 0.25),                     # the same tie one octave down
    (1.4999, 1.0), (1.5, 1.0), (7.0, 1.0), (1e6, 1.0),  # above 1.5·2^n1 clamps to 2^n1, never to 0
    (2.0 ** -7, 2.0 ** -7), (0.75 * 2.0 ** -7, 2.0 ** -7),
    (2.0 ** -8, 2.0 ** -7),                            # zero threshold 2^(n2-1): a tie between 0 and 2^n2, up
    (2.0 ** -8 * 0.999, 0.0), (1e-9, 0.0), (0.0, 0.0),
])
def test_rounding_hand_cases(w, q):
    out = quantize(np.array([w, -w], np.float32), FIVE_BITS)
    assert out.tolist() == [np.float32(q), -np.float32(q)]


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_bit_width_lands_on_its_levels_and_is_nearest(bits):
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal(5000) * 0.1).astype(np.float32)
    levels = layer_levels(w, bits)
    q = quantize(w, levels)
    allowed = levels.values
    assert np.isin(q, allowed).all()
    assert np.abs(q).max() == 2.0 ** levels.n1
    # Nearest level in the linear domain (ties up): no other level is strictly closer.
    distance = np.abs(w[:, None] - allowed[None, :])
    best = distance.min(axis=1)
    assert np.all(np.abs(w - q) <= best + 1e-12)


def test_ternary_levels():
    levels = layer_levels(np.array([0.8, -0.1], np.float32), 2)  # s=0.8: n1 = floor(log2(1.0667)) = 0
    assert (levels.n1, levels.n2) == (0, 0)
    q = quantize(np.array([0.8, 0.5, 0.4999, -0.6, 3.0], np.float32), levels)
    assert q.tolist() == [1.0, 1.0, 0.0, -1.0, 1.0]


def test_all_zero_layer_stays_zero():
    w = np.zeros(10, np.float32)
    assert not quantize(w, layer_levels(w, 4)).any()


@pytest.mark.parametrize("bits", [1, 9, 0, 5.0, True, "5"])
def test_bits_out_of_range(bits):
    with pytest.raises(ConfigError, match="bits must be an integer from 2 to 8"):
        layer_levels(np.ones(3, np.float32), bits)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_rejected(bad):
    with pytest.raises(ConfigError, match="NaN or Inf"):
        layer_levels(np.array([1.0, bad], np.float32), 5)
    with pytest.raises(ConfigError, match="NaN or Inf"):
        quantize(np.array([0.5, bad], np.float32), FIVE_BITS)


def test_per_channel_ranges_come_from_each_channels_max():
    w = np.array([[1.0, -0.2], [0.1, 0.05], [-3.0, 0.0]], np.float32)  # channels along axis 0
    levels = layer_levels(w, 4, channel_axis=0)
    assert levels.per_channel and levels.n1 == (0, -3, 2) and levels.n2 == (-3, -6, -1)
    assert levels.exponent_base == [-3, -6, -1]
    assert [levels.channel(c) for c in range(3)] == [layer_levels(row, 4) for row in w]
    assert layer_levels(w.T, 4, channel_axis=1).n1 == (0, -3, 2)  # a Gemm weight (K, N): channels along axis 1


def test_per_channel_quantize_rounds_each_channel_in_its_own_range():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 5)) * np.exp2(rng.uniform(-8, 0, (1, 5)))).astype(np.float32)
    levels = layer_levels(w, 3, channel_axis=1)
    q = quantize(w, levels)
    for c in range(5):
        assert np.array_equal(q[:, c], quantize(w[:, c], levels.channel(c)))
        assert np.abs(q[:, c]).max() == 2.0 ** levels.n1[c]  # no channel is zeroed
    tensor = quantize(w, layer_levels(w, 3))
    assert np.all(np.abs(q - w) <= np.abs(tensor - w))  # never further from a weight than one range per tensor


def test_all_zero_channel_takes_the_tensors_range():
    w = np.array([[0.0, 0.0], [0.5, -0.25]], np.float32)
    levels = layer_levels(w, 5, channel_axis=0)
    assert levels.channel(0) == levels.channel(1) == layer_levels(w, 5)
    assert not quantize(w, levels)[0].any()


def test_per_channel_levels_have_no_single_value_list():
    levels = layer_levels(np.ones((2, 3), np.float32), 4, channel_axis=0)
    with pytest.raises(ValueError, match="channel"):
        levels.values
    with pytest.raises(ConfigError, match="channel_axis 2 is out of range"):
        layer_levels(np.ones((2, 3), np.float32), 4, channel_axis=2)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_quantize_in_blocks_equals_the_whole_tensor_at_once(monkeypatch, axis):
    import inq_onnx.quantizer as quantizer

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((37, 11, 3)) * rng.uniform(0.01, 3, size=(37, 1, 1))).astype(np.float32)
    w[3, 4, 1] = 0.0
    levels = layer_levels(w, 4, axis)
    whole = quantize(w, levels)
    monkeypatch.setattr(quantizer, "_QUANTIZE_BLOCK", 70)  # blocks of two rows of 33, and a last one of one
    np.testing.assert_array_equal(quantize(w, levels), whole)
    assert whole.dtype == np.float32 and whole.shape == w.shape


# -- ranges by squared rounding error (range rule "mse") -----------------------------------------------------------

def _squared_error(w, levels):
    return float(np.sum((quantize(w, levels).astype(np.float64) - w) ** 2))


def _moved(levels, d):
    return LayerLevels(levels.bits, levels.n1 - d, levels.n2 - d)


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_mse_range_is_the_least_error_of_the_paper_range_moved_down_0_to_3_octaves(bits):
    rng = np.random.default_rng(bits)
    w = np.concatenate([rng.standard_normal(2000) * 0.1, [1.0]]).astype(np.float32)  # one outlier
    paper, fitted = layer_levels(w, bits), layer_levels(w, bits, mse=True)
    errors = [_squared_error(w, _moved(paper, d)) for d in range(4)]
    assert fitted == _moved(paper, int(np.argmin(errors)))
    assert _squared_error(w, fitted) == min(errors)
    if bits == 2:  # a top level at the outlier sends every other weight to zero
        assert fitted.n1 < paper.n1 and _squared_error(w, fitted) < 0.5 * errors[0]


def test_mse_range_keeps_the_paper_range_when_no_move_helps():
    w = np.array([1.0, -1.0, 0.5, 0.25], np.float32)  # exact levels: any move adds error, none removes any
    assert layer_levels(w, 3, mse=True) == layer_levels(w, 3)
    zeros = np.zeros((2, 3), np.float32)  # equal errors: the smallest move, none
    assert layer_levels(zeros, 2, channel_axis=0, mse=True) == layer_levels(zeros, 2, channel_axis=0)


@pytest.mark.parametrize("axis", [0, 1])
def test_mse_ranges_per_channel_are_chosen_channel_by_channel(axis):
    rng = np.random.default_rng(0)
    spread = np.concatenate([rng.standard_normal(400) * 0.1, [1.0]])  # an outlier: moves down
    flat = np.full(401, 0.9) * rng.choice([-1.0, 1.0], 401)  # all near the top: stays
    w = np.stack([spread, flat, -spread]).astype(np.float32)
    w = w if axis == 0 else w.T.copy()
    paper, fitted = layer_levels(w, 2, channel_axis=axis), layer_levels(w, 2, channel_axis=axis, mse=True)
    moves = [p - f for p, f in zip(paper.n1, fitted.n1)]
    assert moves[0] > 0 and moves[1] == 0 and moves[2] == moves[0]
    for c in range(3):
        channel = np.take(w, c, axis=axis)
        errors = [_squared_error(channel, _moved(paper.channel(c), d)) for d in range(4)]
        assert moves[c] == int(np.argmin(errors))


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_mse_ranges_in_blocks_equal_the_whole_tensor_at_once(monkeypatch, axis):
    import inq_onnx.quantizer as quantizer

    rng = np.random.default_rng(6)
    w = (rng.standard_normal((37, 11, 3)) * rng.uniform(0.01, 3, size=(37, 1, 1))).astype(np.float32)
    whole = layer_levels(w, 2, axis, mse=True)
    monkeypatch.setattr(quantizer, "_QUANTIZE_BLOCK", 70)
    assert layer_levels(w, 2, axis, mse=True) == whole
    assert whole != layer_levels(w, 2, axis)  # the case moves some range
