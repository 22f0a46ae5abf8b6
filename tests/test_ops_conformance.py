"""Conformance of the C++ com.inq ShiftConv / ShiftGemm / ShiftMatMul kernels with onnxruntime's Conv / Gemm /
MatMul.

Each case packs random INQ weights with inq_onnx.packing, runs the custom op, and runs onnxruntime's standard
operator on the decoded float weights in the same onnxruntime. The library comes from $INQ_ONNX_LIBRARY or
inq_onnx.get_library_path().
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.packing import pack_weight, unpack_weight  # noqa: E402

OPSET = [helper.make_opsetid("", 17), helper.make_opsetid("com.inq", 1)]
ORT_VERSION = tuple(int(p) for p in ort.__version__.split(".")[:2])


def _library_path() -> str:
    path = os.environ.get("INQ_ONNX_LIBRARY")
    source = "INQ_ONNX_LIBRARY"
    if not path:
        source = "inq_onnx.get_library_path()"
        try:
            import inq_onnx

            path = str(inq_onnx.get_library_path())
        except Exception as exc:  # the package may not be built/installed
            pytest.fail(f"custom-op library not found: set INQ_ONNX_LIBRARY to libinq_onnx_ops.so "
                        f"or install inq_onnx ({type(exc).__name__}: {exc})")
    if not Path(path).is_file():
        pytest.fail(f"custom-op library from {source} does not exist: {path}")
    return path


@pytest.fixture(scope="session")
def library() -> str:
    return _library_path()


# ---------------------------------------------------------------------------------------------- helpers


def inq_weight(rng, shape, bits, per_channel, channel_axis):
    """Random INQ levels of `shape` (all magnitude codes of the format, zeros included) and their base."""
    channels = shape[channel_axis]
    base = rng.integers(-9, -4, size=channels if per_channel else 1)
    view = [1] * len(shape)
    view[channel_axis] = -1
    b = np.broadcast_to(base.reshape(view) if per_channel else base.reshape([1] * len(shape)), shape)
    m = rng.integers(0, 1 << (bits - 1), size=shape)
    sign = rng.choice([-1.0, 1.0], size=shape)
    values = np.where(m == 0, 0.0, sign * np.ldexp(1.0, b + m - 1)).astype(np.float32)
    return values, [int(v) for v in base]


def make_session(model, library=None, threads=2, optimize=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if library:
        so.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def make_model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def vinfo(name, dtype=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def assert_close(got, want):
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale + 1e-7)


# ---------------------------------------------------------------------------------------------- ShiftConv

CONV_CASES = {
    # name: (x shape, weight shape, attributes)
    "2d_basic": ((1, 3, 9, 9), (8, 3, 3, 3), {}),
    "2d_pads": ((2, 4, 10, 7), (6, 4, 3, 3), {"pads": [1, 2, 0, 1]}),
    "2d_stride": ((1, 5, 11, 12), (7, 5, 3, 3), {"strides": [2, 3], "pads": [1, 1, 1, 1]}),
    "2d_dilation": ((1, 4, 13, 12), (5, 4, 3, 2), {"dilations": [2, 3], "pads": [2, 1, 2, 0]}),
    "2d_group": ((2, 8, 9, 9), (12, 2, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    "2d_depthwise": ((2, 16, 13, 11), (16, 1, 3, 3), {"group": 16, "pads": [1, 1, 1, 1]}),
    "2d_depthwise_stride": ((1, 8, 12, 12), (8, 1, 5, 5), {"group": 8, "strides": [2, 2], "pads": [2, 2, 1, 1]}),
    "2d_depthwise_mult": ((1, 4, 9, 9), (8, 1, 3, 3), {"group": 4}),
    "2d_pointwise": ((2, 24, 7, 9), (40, 24, 1, 1), {}),
    "2d_pointwise_stride": ((1, 16, 9, 9), (8, 16, 1, 1), {"strides": [2, 2]}),
    "2d_same_upper": ((1, 3, 10, 9), (4, 3, 4, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "2d_same_lower": ((1, 3, 10, 9), (4, 3, 4, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "2d_same_upper_s1": ((1, 3, 8, 8), (4, 3, 2, 4), {"auto_pad": "SAME_UPPER"}),
    "2d_valid": ((1, 3, 10, 9), (4, 3, 3, 2), {"auto_pad": "VALID", "strides": [1, 2]}),
    "2d_kernel_shape": ((1, 2, 6, 6), (3, 2, 2, 2), {"kernel_shape": [2, 2]}),
    "2d_large": ((1, 64, 20, 20), (96, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    "2d_large_batch": ((2, 32, 24, 24), (48, 32, 3, 3), {"pads": [1, 1, 1, 1], "strides": [1, 2]}),
    "2d_small_batch": ((16, 8, 6, 6), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),  # one task per image
    "2d_odd_sizes": ((3, 7, 5, 23), (13, 7, 3, 5), {"pads": [0, 2, 1, 2], "strides": [1, 2]}),
    "1d_basic": ((2, 4, 17), (6, 4, 3), {"pads": [1, 1]}),
    "1d_stride_dilation": ((1, 3, 20), (5, 3, 3), {"strides": [2], "dilations": [2], "pads": [0, 3]}),
    "1d_group": ((1, 6, 15), (9, 2, 4), {"group": 3}),
    "1d_depthwise": ((2, 5, 16), (5, 1, 3), {"group": 5, "auto_pad": "SAME_LOWER"}),
    "1d_pointwise": ((1, 8, 33), (4, 8, 1), {}),
    # Geometries that leave the implicit-GEMM path (phase planes or wide rows would dwarf the output).
    "2d_huge_stride": ((1, 3, 9, 9), (4, 3, 3, 3), {"strides": [100000, 100000]}),
    "2d_wide_stride": ((1, 3, 6, 300), (4, 3, 3, 3), {"strides": [1, 97], "pads": [1, 1, 1, 1]}),
    "1d_large_dilation": ((1, 4, 60), (6, 4, 3), {"dilations": [29]}),
    # SAME with a stride larger than the input: a negative total pad crops the input (same in ORT 1.19 and 1.32).
    "2d_same_upper_stride_gt_input": ((1, 3, 11, 11), (4, 3, 4, 4), {"auto_pad": "SAME_UPPER", "strides": [17, 17]}),
    "1d_same_lower_crop": ((1, 3, 12), (4, 3, 2), {"auto_pad": "SAME_LOWER", "strides": [5]}),
}


def conv_models(x_shape, w_shape, attrs, bits, per_channel, with_bias, rng, constant_weight=True):
    w, base = inq_weight(rng, w_shape, bits, per_channel, 0)
    packed = pack_weight(w, bits, base, channel_axis=0)
    decoded = unpack_weight(packed, bits, base, w_shape, channel_axis=0)
    np.testing.assert_array_equal(decoded, w)
    m = w_shape[0]
    bias = rng.standard_normal(m).astype(np.float32) if with_bias else None

    inits = [numpy_helper.from_array(bias, "B")] if with_bias else []
    custom_inputs = ["X", "W_packed"] + (["B"] if with_bias else [])
    graph_inputs = [vinfo("X", shape=list(x_shape))]
    custom_inits = list(inits)
    if constant_weight:
        custom_inits.append(numpy_helper.from_array(packed, "W_packed"))
    else:
        graph_inputs.append(vinfo("W_packed", TensorProto.UINT8, [packed.size]))
    custom = make_model(
        [helper.make_node("ShiftConv", custom_inputs, ["Y"], domain="com.inq", bits=bits, weight_shape=list(w_shape),
                          exponent_base=base, **attrs)],
        graph_inputs, [vinfo("Y")], custom_inits)
    ref_attrs = dict(attrs)
    ref = make_model(
        [helper.make_node("Conv", ["X", "W"] + (["B"] if with_bias else []), ["Y"], **ref_attrs)],
        [vinfo("X", shape=list(x_shape))], [vinfo("Y")], inits + [numpy_helper.from_array(w, "W")])
    return custom, ref, packed


@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor_base", "channel_base"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_shift_conv_matches_ort_conv(library, case, per_channel):
    x_shape, w_shape, attrs = CONV_CASES[case]
    rng = np.random.default_rng(zlib.crc32(f"{case}/{per_channel}".encode()))  # stable across runs
    index = list(CONV_CASES).index(case)
    bits = 2 + (index + per_channel) % 7
    with_bias = index % 3 != 2
    custom, ref, _ = conv_models(x_shape, w_shape, attrs, bits, per_channel, with_bias, rng)
    x = rng.standard_normal(x_shape).astype(np.float32)
    want = make_session(ref, threads=1).run(None, {"X": x})[0]
    got = make_session(custom, library).run(None, {"X": x})[0]
    assert got.shape == want.shape
    assert_close(got, want)


@pytest.mark.parametrize("bits", range(2, 9))
def test_shift_conv_every_bit_width(library, bits):
    rng = np.random.default_rng(bits)
    for per_channel in (False, True):
        custom, ref, _ = conv_models((2, 6, 11, 10), (10, 6, 3, 3), {"pads": [1, 0, 1, 2]}, bits, per_channel,
                                     True, rng)
        x = rng.standard_normal((2, 6, 11, 10)).astype(np.float32)
        assert_close(make_session(custom, library).run(None, {"X": x})[0],
                     make_session(ref, threads=1).run(None, {"X": x})[0])


@pytest.mark.parametrize("case", ["2d_pads", "2d_group", "2d_depthwise", "1d_basic", "2d_pointwise"])
def test_shift_conv_runtime_weights(library, case):
    """W_packed fed as a graph input: decoded at every run."""
    x_shape, w_shape, attrs = CONV_CASES[case]
    rng = np.random.default_rng(7)
    custom, ref, packed = conv_models(x_shape, w_shape, attrs, 5, True, True, rng, constant_weight=False)
    x = rng.standard_normal(x_shape).astype(np.float32)
    got = make_session(custom, library).run(None, {"X": x, "W_packed": packed})[0]
    assert_close(got, make_session(ref, threads=1).run(None, {"X": x})[0])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_shift_conv_thread_counts(library, threads):
    rng = np.random.default_rng(threads)
    custom, ref, _ = conv_models((3, 16, 14, 14), (32, 16, 3, 3), {"pads": [1, 1, 1, 1]}, 4, True, True, rng)
    x = rng.standard_normal((3, 16, 14, 14)).astype(np.float32)
    assert_close(make_session(custom, library, threads=threads).run(None, {"X": x})[0],
                 make_session(ref, threads=1).run(None, {"X": x})[0])


def same_pads(n, k, s, upper):
    """Begin/end pads of SAME_UPPER/LOWER as onnxruntime 1.32's Conv applies them (docs/ops.md)."""
    total = (-(-n // s) - 1) * s + k - n
    trunc = lambda a: int(a / 2)  # noqa: E731  C++ division
    if total >= 0:
        begin = total // 2 if upper else (total + 1) // 2
    else:
        begin = trunc(total + 1) if upper else trunc(total + 2)
    return begin, total - begin


def conv_reference(x, w, strides, pads):
    """Plain 2-D convolution, group 1, with begin/end pads that may be negative (crop)."""
    (sh, sw), (pt, pl, pb, pr) = strides, pads
    x = np.pad(x, [(0, 0), (0, 0), (max(pt, 0), max(pb, 0)), (max(pl, 0), max(pr, 0))])
    x = x[:, :, max(-pt, 0):x.shape[2] - max(-pb, 0), max(-pl, 0):x.shape[3] - max(-pr, 0)]
    kh, kw = w.shape[2:]
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            y += np.einsum("nchw,mc->nmhw", patch, w[:, :, i, j])
    return y.astype(np.float32)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("n,k,s", [(11, 4, 17), (6, 1, 3), (10, 3, 5), (9, 2, 4), (8, 1, 5)])
def test_shift_conv_same_crop(library, auto_pad, n, k, s):
    """SAME with a stride beyond the kernel's reach: onnxruntime 1.32's pads (1.19 differs by one position when the
    negative total is even for SAME_UPPER / odd for SAME_LOWER)."""
    rng = np.random.default_rng(n * 100 + k * 10 + s)
    x_shape, w_shape = (1, 3, n, n + 1), (4, 3, k, k)
    custom, ref, _ = conv_models(x_shape, w_shape, {"auto_pad": auto_pad, "strides": [s, s]}, 4, False, False, rng)
    x = rng.standard_normal(x_shape).astype(np.float32)
    got = make_session(custom, library).run(None, {"X": x})[0]
    w = next(numpy_helper.to_array(t) for t in ref.graph.initializer if t.name == "W")
    (pt, pb), (pl, pr) = (same_pads(d, k, s, auto_pad == "SAME_UPPER") for d in x_shape[2:])
    want = conv_reference(x, w, (s, s), (pt, pl, pb, pr))
    assert got.shape == want.shape == (1, 4, -(-n // s), -(-(n + 1) // s))
    assert_close(got, want)
    if ORT_VERSION >= (1, 32):
        assert_close(got, make_session(ref, threads=1).run(None, {"X": x})[0])


@pytest.mark.parametrize("attrs,fragments", [
    ({"auto_pad": "SAME_UPPER", "pads": [0, 0, 0, 0]}, ["SAME_UPPER", "pads [0, 0, 0, 0]"]),
    ({"auto_pad": "VALID", "pads": [1, 1, 1, 1]}, ["VALID", "pads [1, 1, 1, 1]"]),
    ({"auto_pad": "SAME_LOWER", "dilations": [2, 2]}, ["SAME_LOWER", "dilations [2, 2]"]),
], ids=["same_with_pads", "valid_with_pads", "same_with_dilation"])
def test_shift_conv_rejects_what_ort_conv_rejects(library, attrs, fragments):
    """ONNX forbids auto_pad with pads; onnxruntime's Conv also refuses SAME_* with dilations (1.19 and 1.32)."""
    rng = np.random.default_rng(11)
    custom, ref, _ = conv_models((1, 3, 9, 9), (4, 3, 3, 3), attrs, 4, False, False, rng)
    x = np.zeros((1, 3, 9, 9), np.float32)
    with pytest.raises(Exception):
        make_session(ref, threads=1).run(None, {"X": x})
    _run_expect_error(library, custom, {"X": x}, *fragments)


# ---------------------------------------------------------------------------------------------- ShiftGemm

GEMM_CASES = {
    # name: (M, K, N, attributes, C shape or None)
    "plain": (5, 7, 9, {}, None),
    "bias_n": (4, 16, 33, {}, (33,)),
    "bias_1n": (3, 10, 20, {"beta": 0.5}, (1, 20)),
    "bias_m1": (6, 12, 8, {}, (6, 1)),
    "bias_mn": (7, 9, 11, {"alpha": 0.25, "beta": 2.0}, (7, 11)),
    "bias_11": (2, 5, 4, {}, (1, 1)),
    "bias_scalar": (3, 5, 6, {}, ()),
    "trans_a": (5, 8, 10, {"transA": 1}, (10,)),
    "trans_b": (6, 13, 7, {"transB": 1}, (6, 7)),
    "trans_ab": (9, 4, 50, {"transA": 1, "transB": 1, "alpha": -1.5}, (50,)),
    "beta_zero": (4, 6, 5, {"beta": 0.0}, (4, 5)),
    "large": (70, 300, 130, {"transB": 1}, (130,)),
    "single_row": (1, 512, 100, {"transB": 1}, (100,)),
}


def gemm_models(m, k, n, attrs, c_shape, bits, per_channel, rng, constant_weight=True):
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    w_shape = (n, k) if trans_b else (k, n)
    axis = 0 if trans_b else 1
    w, base = inq_weight(rng, w_shape, bits, per_channel, axis)
    packed = pack_weight(w, bits, base, channel_axis=axis)
    np.testing.assert_array_equal(unpack_weight(packed, bits, base, w_shape, channel_axis=axis), w)
    a_shape = (k, m) if trans_a else (m, k)
    inits = []
    if c_shape is not None:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_shape).astype(np.float32), "C"))
    names = ["A", "B_packed"] + (["C"] if c_shape is not None else [])
    graph_inputs = [vinfo("A", shape=list(a_shape))]
    custom_inits = list(inits)
    if constant_weight:
        custom_inits.append(numpy_helper.from_array(packed, "B_packed"))
    else:
        graph_inputs.append(vinfo("B_packed", TensorProto.UINT8, [packed.size]))
    custom = make_model(
        [helper.make_node("ShiftGemm", names, ["Y"], domain="com.inq", bits=bits, weight_shape=list(w_shape),
                          exponent_base=base, **attrs)],
        graph_inputs, [vinfo("Y")], custom_inits)
    ref = make_model(
        [helper.make_node("Gemm", ["A", "W"] + (["C"] if c_shape is not None else []), ["Y"], **attrs)],
        [vinfo("A", shape=list(a_shape))], [vinfo("Y")], inits + [numpy_helper.from_array(w, "W")])
    return custom, ref, packed, a_shape


@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor_base", "channel_base"])
@pytest.mark.parametrize("case", list(GEMM_CASES))
def test_shift_gemm_matches_ort_gemm(library, case, per_channel):
    m, k, n, attrs, c_shape = GEMM_CASES[case]
    rng = np.random.default_rng(zlib.crc32(f"gemm/{case}/{per_channel}".encode()))
    bits = 2 + (list(GEMM_CASES).index(case) + 3 * per_channel) % 7
    custom, ref, _, a_shape = gemm_models(m, k, n, attrs, c_shape, bits, per_channel, rng)
    a = rng.standard_normal(a_shape).astype(np.float32)
    want = make_session(ref, threads=1).run(None, {"A": a})[0]
    got = make_session(custom, library).run(None, {"A": a})[0]
    assert got.shape == want.shape
    assert_close(got, want)


@pytest.mark.parametrize("bits", range(2, 9))
def test_shift_gemm_every_bit_width(library, bits):
    rng = np.random.default_rng(100 + bits)
    for per_channel in (False, True):
        for attrs in ({}, {"transB": 1}):
            custom, ref, _, a_shape = gemm_models(9, 37, 21, attrs, (21,), bits, per_channel, rng)
            a = rng.standard_normal(a_shape).astype(np.float32)
            assert_close(make_session(custom, library).run(None, {"A": a})[0],
                         make_session(ref, threads=1).run(None, {"A": a})[0])


def test_shift_gemm_runtime_weights(library):
    rng = np.random.default_rng(3)
    custom, ref, packed, a_shape = gemm_models(8, 40, 24, {"transB": 1}, (24,), 6, True, rng, constant_weight=False)
    a = rng.standard_normal(a_shape).astype(np.float32)
    got = make_session(custom, library).run(None, {"A": a, "B_packed": packed})[0]
    assert_close(got, make_session(ref, threads=1).run(None, {"A": a})[0])


# ---------------------------------------------------------------------------------------------- ShiftMatMul

MATMUL_CASES = {
    # name: (A shape, N, bias)
    "rank1": ((19,), 7, False),
    "rank2": ((5, 12), 9, True),
    "rank3_tokens": ((2, 7, 16), 24, True),  # (batch, sequence, K): a transformer projection
    "rank3_one_row": ((1, 1, 64), 40, True),  # few rows: the code GEMV
    "rank4": ((2, 3, 4, 10), 6, False),
    "large": ((3, 50, 96), 130, True),  # many rows: the blocked GEMM
    "empty_rows": ((2, 0, 8), 5, True),
}


def matmul_models(a_shape, n, bias, bits, per_channel, rng, constant_weight=True, attrs=None):
    k = a_shape[-1]
    w, base = inq_weight(rng, (k, n), bits, per_channel, 1)
    packed = pack_weight(w, bits, base, channel_axis=1)
    np.testing.assert_array_equal(unpack_weight(packed, bits, base, (k, n), channel_axis=1), w)
    inits = [numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "Bias")] if bias else []
    graph_inputs = [vinfo("A", shape=list(a_shape))]
    custom_inits = list(inits)
    if constant_weight:
        custom_inits.append(numpy_helper.from_array(packed, "B_packed"))
    else:
        graph_inputs.append(vinfo("B_packed", TensorProto.UINT8, [packed.size]))
    custom = make_model(
        [helper.make_node("ShiftMatMul", ["A", "B_packed"] + (["Bias"] if bias else []), ["Y"], domain="com.inq",
                          bits=bits, weight_shape=[k, n], exponent_base=base, **(attrs or {}))],
        graph_inputs, [vinfo("Y")], custom_inits)
    ref_nodes = [helper.make_node("MatMul", ["A", "W"], ["P" if bias else "Y"])]
    if bias:
        ref_nodes.append(helper.make_node("Add", ["P", "Bias"], ["Y"]))
    ref = make_model(ref_nodes, [vinfo("A", shape=list(a_shape))], [vinfo("Y")],
                     inits + [numpy_helper.from_array(w, "W")])
    return custom, ref, packed


@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor_base", "channel_base"])
@pytest.mark.parametrize("case", list(MATMUL_CASES))
def test_shift_matmul_matches_ort_matmul(library, case, per_channel):
    a_shape, n, bias = MATMUL_CASES[case]
    rng = np.random.default_rng(zlib.crc32(f"matmul/{case}/{per_channel}".encode()))
    bits = 2 + (list(MATMUL_CASES).index(case) + 3 * per_channel) % 7
    custom, ref, _ = matmul_models(a_shape, n, bias, bits, per_channel, rng)
    a = rng.standard_normal(a_shape).astype(np.float32)
    want = make_session(ref, threads=1).run(None, {"A": a})[0]
    got = make_session(custom, library).run(None, {"A": a})[0]
    assert got.shape == want.shape == (*a_shape[:-1], n)
    assert_close(got, want)


def test_shift_matmul_runtime_weights_and_fused_activation(library):
    rng = np.random.default_rng(11)
    custom, ref, packed = matmul_models((2, 5, 20), 12, True, 5, True, rng, constant_weight=False,
                                        attrs={"activation": "Clip", "activation_params": [-0.5, 0.25]})
    a = rng.standard_normal((2, 5, 20)).astype(np.float32)
    got = make_session(custom, library).run(None, {"A": a, "B_packed": packed})[0]
    assert_close(got, np.clip(make_session(ref, threads=1).run(None, {"A": a})[0], -0.5, 0.25))


@pytest.mark.parametrize("rows", [3, 40])  # the code GEMV and the blocked integer GEMM
def test_shift_matmul_integer_mode_equals_shift_gemm_on_the_rows(library, rows):
    """Integer mode runs ShiftGemm's kernels on the (rows, K) view: the same bits as ShiftGemm on it."""
    rng = np.random.default_rng(rows)
    integer = {"quantize_input": "uint8", "x_scale": 0.02, "x_zero_point": 120}
    custom, _, packed = matmul_models((rows, 1, 32), 16, True, 4, True, rng, attrs=integer)
    node = custom.graph.node[0]
    gemm = make_model([helper.make_node("ShiftGemm", ["A", "B_packed", "Bias"], ["Y"], domain="com.inq",
                                        **{a.name: helper.get_attribute_value(a) for a in node.attribute})],
                      [vinfo("A", shape=[rows, 32])], [vinfo("Y")], list(custom.graph.initializer))
    a = rng.standard_normal((rows, 1, 32)).astype(np.float32)
    got = make_session(custom, library).run(None, {"A": a})[0]
    want = make_session(gemm, library).run(None, {"A": a.reshape(rows, 32)})[0]
    np.testing.assert_array_equal(got.reshape(rows, 16), want)


MATMUL_ERRORS = {
    "k_mismatch": ((2, 3, 6), (5, 4), None, ["[2, 3, 6]", "K = 6", "K = 5"]),
    "a_scalar": ((), (5, 4), None, ["rank 1 or more", "[]"]),
    "bias_shape": ((2, 5), (5, 4), (1, 4), ["Bias has shape [1, 4]", "expected [4]"]),
    "weight_rank": ((2, 5), (5, 4, 1), None, ["weight_shape [5, 4, 1]", "rank 2"]),
    "exponent_base_length": ((3, 5), (5, 4), None, ["exponent_base has 3 values", "N = 4"]),
}


@pytest.mark.parametrize("case", list(MATMUL_ERRORS))
def test_shift_matmul_errors(library, case):
    a_shape, w_shape, bias_shape, fragments = MATMUL_ERRORS[case]
    bits = 4
    base = [-5, -5, -5] if case == "exponent_base_length" else [-5]
    inits = [numpy_helper.from_array(np.zeros((int(np.prod(w_shape)) * bits + 7) // 8, np.uint8), "B_packed")]
    names = ["A", "B_packed"]
    if bias_shape is not None:
        inits.append(numpy_helper.from_array(np.zeros(bias_shape, np.float32), "Bias"))
        names.append("Bias")
    node = helper.make_node("ShiftMatMul", names, ["Y"], domain="com.inq", bits=bits, weight_shape=list(w_shape),
                            exponent_base=base)
    model = make_model([node], [vinfo("A", shape=list(a_shape))], [vinfo("Y")], inits)
    _run_expect_error(library, model, {"A": np.zeros(a_shape, np.float32)}, *fragments)


# ---------------------------------------------------------------------------------------------- errors


def _conv_error_model(x_shape, w_shape, bits=4, packed_bytes=None, base=(-6,), attrs=None, bias_shape=None,
                      constant_weight=True):
    count = int(np.prod(w_shape))
    nbytes = (count * bits + 7) // 8 if packed_bytes is None else packed_bytes
    packed = np.zeros(nbytes, dtype=np.uint8)
    inits, inputs = [], ["X", "W_packed"]
    graph_inputs = [vinfo("X", shape=list(x_shape))]
    if constant_weight:
        inits.append(numpy_helper.from_array(packed, "W_packed"))
    else:
        graph_inputs.append(vinfo("W_packed", TensorProto.UINT8, [nbytes]))
    if bias_shape is not None:
        inits.append(numpy_helper.from_array(np.zeros(bias_shape, np.float32), "B"))
        inputs.append("B")
    node = helper.make_node("ShiftConv", inputs, ["Y"], domain="com.inq", bits=bits, weight_shape=list(w_shape),
                            exponent_base=list(base), **(attrs or {}))
    return make_model([node], graph_inputs, [vinfo("Y")], inits), packed


def _run_expect_error(library, model, feeds, *fragments):
    with pytest.raises(Exception) as info:
        make_session(model, library).run(None, feeds)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error message: {message}"


RUN_ERRORS = {
    "channel_mismatch": (dict(x_shape=(1, 5, 8, 8), w_shape=(4, 4, 3, 3)), ["[1, 5, 8, 8]", "4"]),
    "x_rank": (dict(x_shape=(1, 4, 8), w_shape=(4, 4, 3, 3)), ["[1, 4, 8]", "rank 4"]),
    "group_channels": (dict(x_shape=(1, 4, 8, 8), w_shape=(4, 2, 3, 3), attrs={"group": 1}), ["[1, 4, 8, 8]"]),
    "output_not_positive": (dict(x_shape=(1, 4, 2, 2), w_shape=(4, 4, 3, 3)), ["[1, 4, 2, 2]", "not positive"]),
    "bias_shape": (dict(x_shape=(1, 4, 8, 8), w_shape=(4, 4, 3, 3), bias_shape=(5,)), ["[5]", "[4]"]),
    "runtime_packed_bytes": (dict(x_shape=(1, 4, 8, 8), w_shape=(4, 4, 3, 3), packed_bytes=10,
                                  constant_weight=False), ["10 bytes", "72"]),
}


@pytest.mark.parametrize("case", list(RUN_ERRORS))
def test_shift_conv_run_errors(library, case):
    kwargs, fragments = RUN_ERRORS[case]
    model, packed = _conv_error_model(**kwargs)
    feeds = {"X": np.zeros(kwargs["x_shape"], np.float32)}
    if not kwargs.get("constant_weight", True):
        feeds["W_packed"] = packed
    _run_expect_error(library, model, feeds, *fragments)


CREATE_ERRORS = {
    "packed_bytes": (dict(packed_bytes=71), ["71 bytes", "72"]),
    "bits_too_large": (dict(bits=9), ["bits", "9"]),
    "bits_too_small": (dict(bits=1), ["bits", "1"]),
    "exponent_base_length": (dict(base=(-6, -5, -4)), ["exponent_base has 3 values", "4"]),
    "kernel_shape": (dict(attrs={"kernel_shape": [2, 2]}), ["kernel_shape [2, 2]"]),
    "auto_pad": (dict(attrs={"auto_pad": "FULL"}), ["FULL"]),
    "group_divides": (dict(attrs={"group": 3}), ["group 3"]),
    "pads_length": (dict(attrs={"pads": [1, 1]}), ["pads [1, 1]"]),
    # Values whose derived sizes would overflow: rejected at creation, naming them.
    "strides_huge": (dict(attrs={"strides": [1 << 32, 1 << 32]}), ["strides [4294967296, 4294967296]"]),
    "strides_zero": (dict(attrs={"strides": [0, 1]}), ["strides [0, 1]"]),
    "dilations_huge": (dict(attrs={"dilations": [1 << 62, 1]}), ["dilations [4611686018427387904, 1]"]),
    "pads_huge": (dict(attrs={"pads": [(1 << 63) - 1, 0, (1 << 63) - 1, 0]}), ["pads [9223372036854775807"]),
    "pads_negative": (dict(attrs={"pads": [-1, 0, 0, 0]}), ["pads [-1, 0, 0, 0]"]),
    "exponent_base_max": (dict(base=((1 << 63) - 1,)), ["exponent_base[0] = 9223372036854775807"]),
    "exponent_base_min": (dict(base=(-(1 << 63),)), ["exponent_base[0] = -9223372036854775808"]),
    "exponent_base_range": (dict(base=(-6, -5, 1001, -4)), ["exponent_base[2] = 1001"]),
    # Attributes of the wrong type are errors, not silently replaced by defaults.
    "group_float": (dict(attrs={"group": 2.0}), ["'group'", "type int", "got float"]),
    "strides_string": (dict(attrs={"strides": "ab"}), ["'strides'", "type ints", "got string"]),
    "dilations_int": (dict(attrs={"dilations": 2}), ["'dilations'", "type ints", "got int"]),
    "pads_floats": (dict(attrs={"pads": [1.0, 1.0, 1.0, 1.0]}), ["'pads'", "type ints", "got floats"]),
    "auto_pad_int": (dict(attrs={"auto_pad": 1}), ["'auto_pad'", "type string", "got int"]),
}


@pytest.mark.parametrize("case", list(CREATE_ERRORS))
def test_shift_conv_creation_errors(library, case):
    kwargs, fragments = CREATE_ERRORS[case]
    model, _ = _conv_error_model(x_shape=(1, 4, 8, 8), w_shape=(4, 4, 3, 3), **kwargs)
    _run_expect_error(library, model, {"X": np.zeros((1, 4, 8, 8), np.float32)}, *fragments)


GEMM_ERRORS = {
    "k_mismatch": ((3, 6), (5, 4), {}, None, ["[3, 6]", "K = 6", "K = 5"]),
    "a_rank": ((3, 5, 1), (5, 4), {}, None, ["[3, 5, 1]"]),
    "c_not_broadcastable": ((3, 5), (5, 4), {}, (3, 3), ["[3, 3]", "[3, 4]"]),
    "c_rank": ((3, 5), (5, 4), {}, (1, 3, 4), ["[1, 3, 4]"]),
    "exponent_base_length": ((3, 5), (5, 4), {"base": (-5, -5)}, None, ["exponent_base has 2 values", "N = 4"]),
    "packed_bytes": ((3, 5), (5, 4), {"bytes": 3}, None, ["3 bytes", "10"]),
    # Checked before anything is allocated: a 30000 x 30000 weight with a 10-byte buffer fails at once.
    "packed_bytes_huge": ((1, 30000), (30000, 30000), {"bytes": 10}, None, ["10 bytes", "need 450000000"]),
    "weight_shape_overflow": ((1, 5), (1 << 40, 1 << 40), {"bytes": 10}, None, ["too many elements"]),
    "exponent_base_range": ((3, 5), (5, 4), {"base": (-2000,)}, None, ["exponent_base[0] = -2000"]),
    "alpha_int": ((3, 5), (5, 4), {"attrs": {"alpha": 2}}, None, ["'alpha'", "type float", "got int"]),
    "trans_b_float": ((3, 5), (5, 4), {"attrs": {"transB": 1.0}}, None, ["'transB'", "type int", "got float"]),
}


@pytest.mark.parametrize("case", list(GEMM_ERRORS))
def test_shift_gemm_errors(library, case):
    a_shape, w_shape, opts, c_shape, fragments = GEMM_ERRORS[case]
    bits = 4
    nbytes = opts["bytes"] if "bytes" in opts else (int(np.prod(w_shape)) * bits + 7) // 8
    inits = [numpy_helper.from_array(np.zeros(nbytes, np.uint8), "B_packed")]
    names = ["A", "B_packed"]
    if c_shape is not None:
        inits.append(numpy_helper.from_array(np.zeros(c_shape, np.float32), "C"))
        names.append("C")
    node = helper.make_node("ShiftGemm", names, ["Y"], domain="com.inq", bits=bits, weight_shape=list(w_shape),
                            exponent_base=list(opts.get("base", (-5,))), **opts.get("attrs", {}))
    model = make_model([node], [vinfo("A", shape=list(a_shape))], [vinfo("Y")], inits)
    _run_expect_error(library, model, {"A": np.zeros(a_shape, np.float32)}, *fragments)


def test_conv_packed_size_checked_before_allocation(library):
    """A weight_shape of 2^36 elements with a 10-byte buffer: an error naming the sizes, nothing allocated."""
    model, _ = _conv_error_model(x_shape=(1, 4096, 8, 8), w_shape=(4096, 4096, 64, 64), packed_bytes=10)
    _run_expect_error(library, model, {"X": np.zeros((1, 4096, 8, 8), np.float32)}, "10 bytes",
                      "need 34359738368")


def test_process_survives_errors(library):
    """After failing runs, the library still computes correct results in this process."""
    model, _ = _conv_error_model(x_shape=(1, 5, 8, 8), w_shape=(4, 4, 3, 3))
    for _ in range(3):
        with pytest.raises(Exception):
            make_session(model, library).run(None, {"X": np.zeros((1, 5, 8, 8), np.float32)})
    test_shift_conv_every_bit_width(library, 3)


def test_missing_attribute_is_an_error(library):
    node = helper.make_node("ShiftConv", ["X", "W_packed"], ["Y"], domain="com.inq", weight_shape=[4, 4, 3, 3],
                            exponent_base=[-5])
    model = make_model([node], [vinfo("X", shape=[1, 4, 8, 8])], [vinfo("Y")],
                       [numpy_helper.from_array(np.zeros(72, np.uint8), "W_packed")])
    _run_expect_error(library, model, {"X": np.zeros((1, 4, 8, 8), np.float32)}, "bits")
