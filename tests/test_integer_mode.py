"""Integer mode: uint8 inputs, exact integer levels, int32 sums; conversion both ways; every kernel path alike."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.data import Dataset
from inq_onnx.errors import ConfigError, ModelError
from inq_onnx.integer_mode import input_quantization, set_activations
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.runtime import make_session

from models import conv_gemm_model, random_inputs, residual_model

# (x channels, out channels, kernel, stride, pad, group, spatial): plain, depthwise, pointwise, wide, 5x5/2.
CONV_SHAPES = [(3, 8, 3, 1, 1, 1, 9), (16, 16, 3, 2, 1, 16, 10), (8, 12, 1, 1, 0, 1, 5), (64, 96, 3, 1, 1, 1, 7),
               (5, 6, 5, 2, 2, 1, 11), (12, 18, 3, 1, 1, 3, 6)]


def one_conv(c, m, k, s, p, group, hw, seed):
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((m, c // group, k, k)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(m) * 0.1).astype(np.float32), "b")]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[p] * 4, strides=[s, s], group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def one_gemm(k, n, trans_a, trans_b, c_shape, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k) if trans_b else (k, n)) * 0.3).astype(np.float32)
    c = rng.standard_normal(c_shape).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")]
    node = helper.make_node("Gemm", ["a", "w", "c"], ["y"], name="fc", transA=trans_a, transB=trans_b, alpha=0.75,
                            beta=1.5)
    a_shape = [k, "N"] if trans_a else ["N", k]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bits", [3, 4, 5])
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_conv_equals_conv_of_the_quantized_input(shape, bits, static):
    """One layer: the op equals the reference on (q - zp) * scale to float rounding of the one rescale."""
    result = quantize_model(one_conv(*shape, seed=bits), QuantizeConfig(bits=bits, retrain=False))
    x = np.random.default_rng(1).standard_normal((3, shape[0], shape[-1], shape[-1])).astype(np.float32)
    model, report = set_activations(result.model, "int8", {"x": x} if static else None)
    assert report.integer_nodes == ["conv"] and report.static == static
    got = make_session(model).run(None, {"x": x})[0]
    want = ReferenceEvaluator(model, new_ops=REFERENCE_OPS).run(None, {"x": x})[0]
    assert relative_error(got, want) < 2e-6
    # ...and differs from float mode by about one input quantization step, no more.
    float_mode = make_session(result.model).run(None, {"x": x})[0]
    assert 1e-4 < relative_error(got, float_mode) < 0.05


@pytest.mark.parametrize("trans_a, trans_b, c_shape", [(0, 0, (7,)), (0, 1, (1, 7)), (1, 0, (-1, 7)), (1, 1, (-1, 1))])
@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("rows", [1, 3, 6])  # the code GEMV takes up to 4 rows, the blocked GEMM more
def test_gemm_equals_gemm_of_the_quantized_input(trans_a, trans_b, c_shape, bits, rows):
    c_shape = tuple(rows if d == -1 else d for d in c_shape)
    model = one_gemm(40, 7, trans_a, trans_b, c_shape, bits)
    result = quantize_model(model, QuantizeConfig(bits=bits, retrain=False))
    a = np.random.default_rng(2).standard_normal((40, rows) if trans_a else (rows, 40)).astype(np.float32)
    # Static scales from the data where samples lie along axis 0, else computed per run.
    model, report = set_activations(result.model, "int8", None if trans_a else {"a": a})
    assert report.static == (not trans_a)
    got = make_session(model).run(None, {"a": a})[0]
    want = ReferenceEvaluator(model, new_ops=REFERENCE_OPS).run(None, {"a": a})[0]
    assert relative_error(got, want) < 2e-6


def test_whole_model_in_integer_mode_tracks_float_mode():
    """Quantized activations compound over layers; the network's decisions barely move."""
    result = quantize_model(residual_model(), QuantizeConfig(bits=4, retrain=False))
    x = np.random.default_rng(3).standard_normal((200, 2, 6, 6)).astype(np.float32)
    feed = {"x": x, "x_min": np.array(-0.2, np.float32)}
    model, report = set_activations(result.model, "int8", ranges=None)
    assert not report.static and len(report.integer_nodes) == 7
    int8, float_mode = make_session(model).run(None, feed), make_session(result.model).run(None, feed)
    assert np.mean(int8[0].argmax(1) == float_mode[0].argmax(1)) >= 0.9
    assert relative_error(int8[1], float_mode[1]) < 0.05


def test_conversion_round_trip_restores_float_mode_exactly():
    result = quantize_model(conv_gemm_model(), QuantizeConfig(bits=5, retrain=False))
    int8, _ = set_activations(result.model, "int8", {"x": random_inputs(0)})
    back, report = set_activations(int8, "float")
    assert report.integer_nodes == [] and not report.static
    assert [n.SerializeToString() for n in back.graph.node] == [n.SerializeToString() for n in result.model.graph.node]
    meta = {p.key: p.value for p in back.metadata_props}
    assert meta["inq.activations"] == "float" and "inq.activation_ranges" in meta  # kept for export --format qdq


def test_wide_layers_keep_float_activations_and_say_why():
    result = quantize_model(conv_gemm_model(), QuantizeConfig(bits=6, retrain=False))
    model, report = set_activations(result.model, "int8", {"x": random_inputs(0)})
    assert report.integer_nodes == []
    assert [n for n, _ in report.float_nodes] == ["conv1", "conv_dw", "fc"]
    assert "6-bit levels do not fit int8" in report.float_nodes[0][1]
    np.testing.assert_array_equal(make_session(model).run(None, {"x": random_inputs(1)})[0],
                                  make_session(result.model).run(None, {"x": random_inputs(1)})[0])


def test_quantize_config_int8_calibrates_on_the_data_and_checks_the_float_rewrite():
    data = Dataset({"x": random_inputs(0, 32)}, None)
    result = quantize_model(conv_gemm_model(), QuantizeConfig(bits=4, retrain=False, activations="int8"), data)
    assert result.activation_mode.static and result.float_mode_model is not None
    scales = [a.f for n in result.model.graph.node for a in n.attribute if a.name == "x_scale"]
    assert len(scales) == 3 and all(s > 0 for s in scales)
    assert all(a.name != "x_scale" for n in result.checked_model.graph.node for a in n.attribute)


@pytest.mark.parametrize("low, high, scale, zero_point", [(0.0, 2.55, 0.01, 0), (-1.0, 1.55, 0.01, 100),
                                                          (0.5, 2.0, 2.0 / 255, 0), (0.0, 0.0, 1.0, 0)])
def test_input_quantization_covers_zero_and_the_range(low, high, scale, zero_point):
    s, zp = input_quantization(low, high)
    assert s == pytest.approx(scale, rel=1e-6) and zp == zero_point


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="activations must be one of float, int8"):
        QuantizeConfig(activations="int4")
    with pytest.raises(ConfigError, match="activations must be one of float, int8"):
        set_activations(conv_gemm_model(), "int4")


@pytest.mark.parametrize("attrs, message", [
    ({"quantize_input": "int4"}, "unknown quantize_input 'int4'"),
    ({"quantize_input": "uint8", "x_scale": -1.0}, "x_scale -1.000000 must be positive"),
    ({"quantize_input": "uint8", "x_scale": 0.1, "x_zero_point": 300}, "x_zero_point 300 is outside 0..255"),
    ({"quantize_input": "uint8", "x_zero_point": 3}, "x_zero_point needs x_scale"),
    ({"x_scale": 0.1}, "x_scale / x_zero_point need quantize_input uint8"),
])
def test_op_rejects_bad_integer_attributes(attrs, message):
    model = quantize_model(conv_gemm_model(), QuantizeConfig(bits=4, retrain=False)).model
    node = next(n for n in model.graph.node if n.name == "conv1")
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    with pytest.raises(ModelError, match=message):
        make_session(model).run(None, {"x": random_inputs(0)})


_RUN_ONE = """
import sys, numpy as np, onnx
from inq_onnx.runtime import make_session
model = onnx.load(sys.argv[1]); x = np.load(sys.argv[2])
np.save(sys.argv[3], make_session(model, threads=2).run(None, {"x": x})[0])
"""


@pytest.mark.parametrize("bits", [4, 5])
def test_every_integer_kernel_path_gives_the_same_bits(tmp_path, bits):
    """INQ_ONNX_QISA forces each path this CPU has (generic and avx2 run everywhere x86 runs)."""
    result = quantize_model(residual_model(channels=20), QuantizeConfig(bits=bits, retrain=False))
    x = np.random.default_rng(4).standard_normal((3, 2, 6, 6)).astype(np.float32)
    model, _ = set_activations(result.model, "int8", ranges=None)
    model = _fix_x_min(model)
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for isa in ("generic", "avx2", "avx512vnni"):
        env = {**os.environ, "INQ_ONNX_QISA": isa}
        args = [tmp_path / "m.onnx", tmp_path / "x.npy", tmp_path / f"{isa}.npy"]
        # From tmp_path: the installed inq_onnx, not a source tree in the working directory.
        subprocess.run([sys.executable, "-c", _RUN_ONE, *args], check=True, env=env, cwd=tmp_path)
        outputs[isa] = np.load(tmp_path / f"{isa}.npy")
    assert outputs["generic"].tobytes() == outputs["avx2"].tobytes() == outputs["avx512vnni"].tobytes()


def _fix_x_min(model):
    """residual_model's Clip bound as a constant, so that the graph has the one input x."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.input[1]
    model.graph.initializer.append(numpy_helper.from_array(np.array(-0.2, np.float32), "x_min"))
    return model


def test_static_int8_passes_uint8_between_shiftconvs_that_only_read_each_other():
    result = quantize_model(residual_model(channels=8), QuantizeConfig(bits=4, retrain=False))
    model = _fix_x_min(result.model)
    x = np.random.default_rng(5).standard_normal((64, 2, 6, 6)).astype(np.float32)
    chained, report = set_activations(model, "int8", {"x": x})
    # stem -> block (as X and as the residual Z), block -> six, six -> dyn; dyn feeds a Clip node, tap is an
    # output, and bcast's input comes from a Relu node: those stay float.
    assert report.uint8_values == ["s_r", "b_r", "k_c"]
    onnx.checker.check_model(chained, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(chained, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert [types[v] for v in report.uint8_values] == [TensorProto.UINT8] * 3 and types["d"] == TensorProto.FLOAT
    block = next(n for n in chained.graph.node if n.name == "block")
    assert {a.name for a in block.attribute} >= {"x_scale", "z_scale", "z_zero_point", "y_scale"}
    # The same scales as float tensors between the nodes would be quantized with: only the uint8 summand is
    # rounded once more, so the drift from float mode grows little.
    unchained = _unchain(chained)
    float_mode = make_session(model).run(None, {"x": x})
    got, want = make_session(chained).run(None, {"x": x}), make_session(unchained).run(None, {"x": x})
    assert relative_error(got[1], float_mode[1]) < 1.5 * relative_error(want[1], float_mode[1]) + 0.01
    assert np.mean(got[0].argmax(1) == float_mode[0].argmax(1)) >= 0.9
    # Back to float mode: no uint8 tensor, no zero-point input, the float model again.
    back, _ = set_activations(chained, "float")
    assert [n.SerializeToString() for n in back.graph.node] == [n.SerializeToString() for n in model.graph.node]
    assert not [t for t in back.graph.initializer if t.data_type == TensorProto.UINT8 and t.name.endswith("_point")]


def _unchain(model):
    """The int8 model with float tensors between its nodes (uint8 outputs and summands removed)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        if node.domain:
            del node.input[4:]
            keep = [a for a in node.attribute if a.name not in ("y_scale", "z_scale", "z_zero_point")]
            del node.attribute[:]
            node.attribute.extend(keep)
    return model


def _stem_model(residual: bool, ceil_mode: int = 0) -> onnx.ModelProto:
    """ResNet's stem: Conv, Relu, MaxPool 3x3/2, then a conv reading the pool (and adding it back: `residual`)."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("MaxPool", ["r1"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1], ceil_mode=ceil_mode),
             helper.make_node("Conv", ["p", "w2", "b2"], ["c2"], name="block", pads=[1, 1, 1, 1])]
    nodes += ([helper.make_node("Add", ["c2", "p"], ["s"], name="add"),
               helper.make_node("Relu", ["s"], ["y"], name="out")] if residual else
              [helper.make_node("Relu", ["c2"], ["y"], name="out")])
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (8, 8, 3, 3)), ("b2", (8,)))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("residual", [False, True])
def test_pooled_stem_passes_uint8_to_the_block_as_x_and_summand(residual):
    result = quantize_model(_stem_model(residual), QuantizeConfig(bits=4, retrain=False))
    stem = next(n for n in result.model.graph.node if n.name == "stem")
    assert stem.output[0] == "p" and "MaxPool" not in [n.op_type for n in result.model.graph.node]
    x = np.random.default_rng(7).standard_normal((16, 3, 12, 12)).astype(np.float32)
    chained, report = set_activations(result.model, "int8", {"x": x})
    assert report.uint8_values == ["p"]
    stem, block = (next(n for n in chained.graph.node if n.name == k) for k in ("stem", "block"))
    y_scale = next(a.f for a in stem.attribute if a.name == "y_scale")
    assert next(a.f for a in block.attribute if a.name == "x_scale") == y_scale  # reads the pool with its scale
    got = make_session(chained).run(None, {"x": x})[0]
    want = make_session(_unchain(chained)).run(None, {"x": x})[0]
    if residual:
        assert block.input[3] == "p"
        y_zero_point = next(t for t in chained.graph.initializer if t.name == stem.input[4])
        assert next(a.f for a in block.attribute if a.name == "z_scale") == y_scale
        assert next(a.i for a in block.attribute if a.name == "z_zero_point") == numpy_helper.to_array(y_zero_point)
        # X reads the same codes either way; Z is the pooled codes instead of the float pool: half a step of
        # rounding, and a little more where the integer stem's values overshoot the float model's calibrated range.
        assert np.max(np.abs(got - want)) <= y_scale
    else:
        # Pooling the codes gives the codes of the pooled floats (quantization is monotone): the same bits.
        np.testing.assert_array_equal(got, want)
    back, _ = set_activations(chained, "float")
    assert [n.SerializeToString() for n in back.graph.node] == [n.SerializeToString() for n in result.model.graph.node]


def test_unfused_maxpool_keeps_float_between_integer_convs():
    """ceil_mode 1 is not fused: onnxruntime's uint8 MaxPool is slower than its float one, so no uint8 there."""
    result = quantize_model(_stem_model(residual=False, ceil_mode=1), QuantizeConfig(bits=4, retrain=False))
    assert "MaxPool" in [n.op_type for n in result.model.graph.node]
    x = np.random.default_rng(8).standard_normal((16, 3, 12, 12)).astype(np.float32)
    chained, report = set_activations(result.model, "int8", {"x": x})
    assert report.uint8_values == [] and len(report.integer_nodes) == 2
