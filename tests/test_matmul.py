"""MatMul layers (x·W + b, as transformer and TensorFlow exports write them) and Gemm's variants, end to end."""

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.data import Dataset
from inq_onnx.export import export_float, export_qdq
from inq_onnx.layers import match_layers
from inq_onnx.normalize import normalize_model
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.runtime import make_session
from inq_onnx.schemas import register_schemas
from inq_onnx.session import InferenceSession

from models import make_model, transformer_block_model, weights


def histogram(model):
    return collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)


def tokens(seed, count=6, shape=(5, 8)):
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def assert_outputs_close(got, want, rtol=1e-5):
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.max(np.abs(w))))


def test_transformer_block_is_rewritten_end_to_end():
    model = transformer_block_model()
    result = quantize_model(model, QuantizeConfig(bits=5, retrain=False))
    assert not result.skipped
    assert [(layer.node, layer.bias, layer.bias_add, layer.channel_axis) for layer in result.layers] == [
        ("up", "b_up", "up_bias", 1), ("mid", "b_mid", "mid_bias", 1), ("down", "b_down", "down_bias", 1),
        ("head", "b_head", "head_bias", 1)]
    # N-D inputs: ShiftMatMul; the 2-D head: ShiftGemm. The bias Adds are folded (Gelu's Add and the residual
    # remain), the Relu after `up` is fused, no float MatMul is left.
    assert histogram(result.model) == {"com.inq:ShiftMatMul": 3, "com.inq:ShiftGemm": 1, "ai.onnx:Add": 2,
                                       "ai.onnx:Div": 1, "ai.onnx:Erf": 1, "ai.onnx:Mul": 2,
                                       "ai.onnx:ReduceMean": 1}
    up = next(n for n in result.model.graph.node if n.name == "up")
    assert up.input[0] == "x" and up.input[2] == "b_up" and list(up.output) == ["up_r"]
    assert helper.get_attribute_value(next(a for a in up.attribute if a.name == "activation")) == b"Relu"
    register_schemas()
    onnx.checker.check_model(result.model, full_check=True)

    check_rewrite(result)  # the C++ ops against onnxruntime's MatMul on the same weights, both outputs
    x = tokens(1)
    want = make_session(result.float_model).run(None, {"x": x})
    assert_outputs_close(ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, {"x": x}), want)
    assert_outputs_close(make_session(result.model).run(None, {"x": x}), want)

    exported = export_float(result.model)
    assert histogram(exported)["ai.onnx:MatMul"] == 3 and histogram(exported)["ai.onnx:Gemm"] == 1
    assert not any(n.domain == "com.inq" for n in exported.graph.node)
    assert_outputs_close(make_session(exported).run(None, {"x": x}), want)
    session = InferenceSession(result.model.SerializeToString())  # stock onnxruntime, no op library
    assert session.inq_activations == "float"
    assert_outputs_close(session.run(None, {"x": x}), want)


def test_integer_mode_and_qdq_export_of_matmul_layers():
    x = tokens(2, count=24)
    result = quantize_model(transformer_block_model(), QuantizeConfig(bits=4, retrain=False, activations="int8"),
                            Dataset({"x": x}, None))
    assert result.activation_mode.integer_nodes == ["up", "mid", "down", "head"]
    reference = ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, {"x": x})
    assert_outputs_close(make_session(result.model).run(None, {"x": x}), reference)
    qdq = export_qdq(result.model)
    assert qdq.quantized == ["head"]
    assert sorted(qdq.notes) == [f"{name} (MatMul) stays float: the QDQ form covers Conv and Gemm layers only"
                                 for name in ("down", "mid", "up")]


def _matmul_add(bias_shape=(4,), output_matmul=False, add_activation=False):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="linear"),
             helper.make_node("Add", ["h", "x" if add_activation else "b"], ["y"], name="add")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])]
    if output_matmul:
        outputs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 3, 4]))
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])], outputs,
                      {"w": weights(rng, 4, 4), "b": weights(rng, *bias_shape)})


@pytest.mark.parametrize("kwargs", [{"bias_shape": (1, 4)}, {"bias_shape": (3, 4)}, {"output_matmul": True},
                                    {"add_activation": True}],
                         ids=["bias_1n", "bias_mn", "matmul_output_is_a_graph_output", "add_of_activations"])
def test_add_stays_separate_unless_it_is_a_plain_bias(kwargs):
    model = _matmul_add(**kwargs)
    result = quantize_model(model, QuantizeConfig(retrain=False))
    assert [(layer.node, layer.bias, layer.bias_add) for layer in result.layers] == [("linear", None, None)]
    assert histogram(result.model) == {"com.inq:ShiftMatMul": 1, "ai.onnx:Add": 1}
    check_rewrite(result)


def test_matmul_layers_left_float_say_why():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w3"], ["a"], name="batched"),
             helper.make_node("MatMul", ["a", "w"], ["b"], name="excluded"),
             helper.make_node("Gather", ["w", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["b", "w"], ["c"], name="tied"),
             helper.make_node("MatMul", ["c", "w2"], ["d"], name="kept"),
             helper.make_node("MatMul", ["d", "d_t"], ["y"], name="activations")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4]),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, [2]),
                               helper.make_tensor_value_info("d_t", TensorProto.FLOAT, [2, 4, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 4]),
                        helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 4])],
                       {"w3": weights(rng, 2, 4, 4), "w": weights(rng, 4, 4), "w2": weights(rng, 4, 4)})
    layers, skipped = match_layers(normalize_model(model), exclude=["excluded"])
    assert [layer.node for layer in layers] == ["kept"]
    # A product of two activations is no layer: not listed at all.
    assert {s.node: s.reason for s in skipped} == {
        "batched": "MatMul weight must be 2-D (rank 3)",
        "excluded": "excluded by the user",
        "tied": "weight also feeds node embed (Gather)"}


GEMM_VARIANTS = {
    # name: (attributes, A shape, weight shape, C shape or None)
    "trans_a": ({"transA": 1}, (6, 4), (6, 5), (5,)),
    "trans_b": ({"transB": 1}, (4, 6), (5, 6), None),
    "trans_ab_alpha": ({"transA": 1, "transB": 1, "alpha": 0.5}, (6, 4), (5, 6), (1, 5)),
    "bias_scalar": ({}, (4, 6), (6, 5), ()),
    "bias_mn_beta": ({"beta": 0.5}, (4, 6), (6, 5), (4, 5)),
    "bias_m1": ({}, (4, 6), (6, 5), (4, 1)),
}


@pytest.mark.parametrize("case", list(GEMM_VARIANTS))
def test_gemm_variants_are_rewritten_exactly(case):
    attrs, a_shape, w_shape, c_shape = GEMM_VARIANTS[case]
    rng = np.random.default_rng(len(case))
    inits = {"w": weights(rng, *w_shape)}
    if c_shape is not None:
        inits["c"] = weights(rng, *c_shape)
    node = helper.make_node("Gemm", ["x", "w", *(["c"] if c_shape is not None else [])], ["y"], name="fc", **attrs)
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(a_shape))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5])], inits)
    result = quantize_model(model, QuantizeConfig(retrain=False))
    assert result.layers[0].channel_axis == (0 if attrs.get("transB") else 1)
    assert histogram(result.model) == {"com.inq:ShiftGemm": 1}
    x = rng.standard_normal(a_shape).astype(np.float32)
    want = make_session(result.float_model).run(None, {"x": x})
    assert_outputs_close(make_session(result.model).run(None, {"x": x}), want)
    assert_outputs_close(ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, {"x": x}), want)
    exported = export_float(result.model)
    assert {a.name: helper.get_attribute_value(a) for a in exported.graph.node[0].attribute} == attrs
    assert_outputs_close(make_session(exported).run(None, {"x": x}), want)
