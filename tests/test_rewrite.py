"""Rewrite: Conv/Gemm become ShiftConv/ShiftGemm with packed weights, or stay float with a stated reason."""

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.errors import ConfigError, ModelError
from inq_onnx.export import export_float
from inq_onnx.layers import match_layers
from inq_onnx.normalize import normalize_model
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.schemas import register_schemas

from models import conv_gemm_model, make_model, random_inputs, weights


def histogram(model):
    return collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_rewrite_replaces_every_conv_and_gemm(bits):
    model = conv_gemm_model()
    result = quantize_model(model, QuantizeConfig(bits=bits, retrain=False))
    rewritten = result.model
    assert len(result.layers) == 3 and not result.skipped
    # The Relu after conv1 is fused into its ShiftConv.
    assert histogram(rewritten) == {"com.inq:ShiftConv": 2, "com.inq:ShiftGemm": 1, "ai.onnx:Flatten": 1}
    conv1 = next(n for n in rewritten.graph.node if n.name == "conv1")
    assert helper.get_attribute_value(next(a for a in conv1.attribute if a.name == "activation")) == b"Relu"
    register_schemas()
    onnx.checker.check_model(rewritten, full_check=True)
    # No float weight is left; packed weights take ceil(n * b / 8) bytes.
    sizes = {t.name: (t.data_type, int(np.prod(t.dims))) for t in rewritten.graph.initializer}
    assert {"w1", "w2", "w3"}.isdisjoint(sizes)
    packed = [v for k, v in sizes.items() if k.endswith(f"_inq{bits}")]
    assert sorted(n for _, n in packed) == sorted(-(-c * bits // 8) for c in (4 * 2 * 9, 4 * 9, 5 * 36))
    assert all(t == TensorProto.UINT8 for t, _ in packed)
    meta = {p.key: p.value for p in rewritten.metadata_props}
    assert meta["inq.bits"] == str(bits) and meta["inq.mode"] == "one-shot"
    x = random_inputs(bits)
    expected = ReferenceEvaluator(result.float_model).run(None, {"x": x})[0]
    actual = ReferenceEvaluator(rewritten, new_ops=REFERENCE_OPS).run(None, {"x": x})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_rewritten_model_equals_float_model_with_same_weights_in_reference_evaluator():
    result = quantize_model(conv_gemm_model(seed=3), QuantizeConfig(bits=4, retrain=False))
    x = random_inputs(1)
    expected = ReferenceEvaluator(result.float_model).run(None, {"x": x})[0]
    actual = ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, {"x": x})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_export_float_restores_standard_ops_with_decoded_weights():
    result = quantize_model(conv_gemm_model(seed=4), QuantizeConfig(bits=5, retrain=False))
    exported = export_float(result.model)
    assert histogram(exported) == {"ai.onnx:Conv": 2, "ai.onnx:Gemm": 1, "ai.onnx:Relu": 1, "ai.onnx:Flatten": 1}
    assert all(o.domain != "com.inq" for o in exported.opset_import)
    float_weights = {t.name: numpy_helper.to_array(t) for t in result.float_model.graph.initializer}
    exported_weights = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    for node_before, node_after in zip(result.float_model.graph.node, exported.graph.node):
        if node_before.op_type in ("Conv", "Gemm"):
            assert np.array_equal(exported_weights[node_after.input[1]], float_weights[node_before.input[1]])


def test_exclude_keeps_node_float_and_says_why():
    result = quantize_model(conv_gemm_model(), QuantizeConfig(bits=5, retrain=False, exclude=("fc",)))
    assert histogram(result.model)["ai.onnx:Gemm"] == 1
    assert [(s.node, s.reason) for s in result.skipped] == [("fc", "excluded by the user")]


def test_exclude_unknown_node():
    with pytest.raises(ConfigError, match="names no node: nope .*conv1, conv_dw, fc"):
        quantize_model(conv_gemm_model(), QuantizeConfig(retrain=False, exclude=("nope",)))


def test_non_constant_and_3d_weights_are_skipped_with_reasons():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w_in"], ["a"], name="dynamic"),
             helper.make_node("Conv", ["v", "w3d"], ["b"], name="conv3d")]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [3, 2, 3, 3]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2, 4, 4, 4])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 3, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 3, 3, 3])],
        {"w3d": weights(rng, 3, 2, 2, 2, 2)})
    layers, skipped = match_layers(normalize_model(model))
    assert layers == []
    assert {s.node: s.reason for s in skipped} == {
        "dynamic": "weight is a graph input, not a constant",
        "conv3d": "only 1-D and 2-D convolutions are supported (weight rank 5)"}
    with pytest.raises(ModelError, match="nothing to quantize: 1 Conv node: weight is a graph input, not a constant: "
                                         "dynamic; 1 Conv node: only 1-D"):
        quantize_model(model, QuantizeConfig(retrain=False))


def test_constant_node_weights_and_unnamed_nodes_are_normalized():
    rng = np.random.default_rng(0)
    w = weights(rng, 3, 4)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
             helper.make_node("Gemm", ["x", "w"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], {})
    result = quantize_model(model, QuantizeConfig(bits=6, retrain=False))
    assert [layer.node for layer in result.layers] == ["Gemm_1"]  # named by its index in the file
    assert histogram(result.model) == {"com.inq:ShiftGemm": 1}


def test_excluding_one_user_of_a_shared_weight_keeps_all_its_users_float():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="a"),
             helper.make_node("Gemm", ["h", "w"], ["y"], name="b"),
             helper.make_node("Gemm", ["y", "v"], ["z"], name="c")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                       [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])],
                       {"w": weights(rng, 4, 4), "v": weights(rng, 4, 4)})
    result = quantize_model(model, QuantizeConfig(bits=5, retrain=False, exclude=("b",)))
    assert [layer.node for layer in result.layers] == ["c"]
    assert {s.node: s.reason for s in result.skipped} == {
        "a": "weight is shared with node b, which stays float", "b": "excluded by the user"}
    float_w = [t for t in result.model.graph.initializer if t.name == "w"]
    assert np.array_equal(numpy_helper.to_array(float_w[0]), numpy_helper.to_array(model.graph.initializer[0]))


def test_shared_weight_is_packed_once():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="a"),
             helper.make_node("Gemm", ["h", "w"], ["y"], name="b")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], {"w": weights(rng, 4, 4)})
    result = quantize_model(model, QuantizeConfig(bits=5, retrain=False))
    assert histogram(result.model) == {"com.inq:ShiftGemm": 2}
    assert len(result.model.graph.initializer) == 1


def test_outputs_without_shape_get_inferred_shapes():
    model = conv_gemm_model()
    model.graph.output[0].type.tensor_type.ClearField("shape")
    result = quantize_model(model, QuantizeConfig(retrain=False))
    dims = [d.dim_value or d.dim_param for d in result.model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["N", 5]
