"""Normalization: constant subgraphs folded, old opsets and IR versions converted, malformed models refused."""

import collections
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.errors import ModelError
from inq_onnx.normalize import MAX_FOLDED_BYTES, TARGET_OPSET, normalize
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.runtime import make_session

from models import conv_gemm_model, constant_subgraph_model, make_model, opset6_gemm_model, random_inputs, weights


def histogram(model):
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def opset_of(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_constant_subgraphs_become_initializers_and_every_layer_is_quantized():
    model = constant_subgraph_model()
    normalized = normalize(model)
    assert histogram(normalized.model) == {"Conv": 2, "Relu": 1, "Flatten": 1, "Gemm": 1}
    assert opset_of(normalized.model) == TARGET_OPSET and normalized.model.ir_version == 8
    assert normalized.notes[0] == "converted from opset 9 to opset 17"
    assert any(n.startswith("folded 10 constant node(s) (3 Constant,") for n in normalized.notes)
    # the folded weights have the shapes the layers take; the inputs they were computed from are gone
    shapes = {t.name: tuple(t.dims) for t in normalized.model.graph.initializer}
    assert shapes == {"w1": (4, 2, 3, 3), "b1": (4,), "w2": (4, 1, 3, 3), "w3": (36, 5), "b3": (5,)}
    x = random_inputs(0, 8)
    expected = make_session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(make_session(normalized.model).run(None, {"x": x})[0], expected, rtol=1e-6, atol=1e-7)

    result = quantize_model(model, QuantizeConfig(bits=5, retrain=False))
    assert len(result.layers) == 3 and not result.skipped
    assert histogram(result.model) == {"ShiftConv": 2, "Flatten": 1, "ShiftGemm": 1}
    assert result.normalization == normalized.notes
    assert check_rewrite(result)[0].max_abs_diff < 1e-5


def test_opset6_gemm_with_broadcast_is_converted_and_its_initializer_inputs_stay_constants():
    result = quantize_model(opset6_gemm_model(), QuantizeConfig(bits=5, retrain=False))
    (gemm,) = result.model.graph.node
    assert gemm.op_type == "ShiftGemm" and "broadcast" not in {a.name for a in gemm.attribute}
    assert [i.name for i in result.model.graph.input] == ["x"]
    assert result.normalization == [
        "converted from opset 6 to opset 17", "IR version 3 raised to 8",
        "2 initializer(s) also listed as graph inputs (as IR < 4 files list them) are treated as constants"]
    onnx.checker.check_model(result.model, full_check=True)
    assert check_rewrite(result)[0].max_abs_diff < 1e-5


def test_op_without_conversion_is_named():
    node = helper.make_node("GRU", ["x", "w", "r"], ["y"], name="rnn", hidden_size=2)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 2])],
        [numpy_helper.from_array(np.zeros((1, 6, 2), np.float32), "w"),
         numpy_helper.from_array(np.zeros((1, 6, 2), np.float32), "r")])
    graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 6, 2]) for n in ("w", "r")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    with pytest.raises(ModelError, match=r"^cannot convert the model from opset 6 to 17: op GRU \(node rnn\) has no "
                                         r"conversion$"):
        normalize(model)


@pytest.mark.parametrize("opset, expected", [(18, 18), (21, 21), (22, 21)])
def test_newer_opsets_are_kept_up_to_21(opset, expected):
    model = conv_gemm_model()
    model.opset_import[0].version = opset
    model.ir_version = 10
    normalized = normalize(model)
    assert opset_of(normalized.model) == expected
    assert normalized.notes == ([] if opset == expected else [f"converted from opset {opset} to opset 21"])


def test_dynamic_dimensions_are_kept_and_shapes_inferred():
    normalized = normalize(conv_gemm_model()).model
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(normalized.graph.input[0]) == ["N", 2, 6, 6]
    inferred = {v.name: dims(v) for v in normalized.graph.value_info}
    assert inferred["c1"] == ["N", 4, 6, 6] and inferred["c2"] == ["N", 4, 3, 3] and inferred["f"] == ["N", 36]


def test_a_huge_constant_is_left_unfolded_with_a_note_and_never_built():
    """ConstantOfShape of 16 GiB: folding would exhaust memory, so the node stays and the note says why."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="zeros",
                              value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("ReduceMax", ["big"], ["m"], name="max", keepdims=0),
             helper.make_node("Gemm", ["x", "w"], ["g"], name="fc"),
             helper.make_node("Add", ["g", "m"], ["y"], name="add")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                       {"big_shape": np.array([1 << 16, 1 << 16], np.int64), "w": weights(rng, 3, 4)})
    start = time.perf_counter()
    normalized = normalize(model)
    assert time.perf_counter() - start < 5
    assert histogram(normalized.model) == {"ConstantOfShape": 1, "ReduceMax": 1, "Gemm": 1, "Add": 1}
    assert normalized.notes == [f"1 constant node(s) left unfolded: zeros (ConstantOfShape): its output would take "
                                f"16384 MiB (limit {MAX_FOLDED_BYTES >> 20} MiB)"]


def _graph(nodes, initializers=None, x=(1, 4), y=(1, 4)):
    """An unchecked model: the point is what normalize says about it."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
                              [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _conv(weight, **attributes):
    return _graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attributes)], {"w": weight},
                  x=(1, 2, 5, 5), y=("N", "C", "H", "W"))


W = np.ones((3, 2, 3, 3), np.float32)


@pytest.mark.parametrize("model, message", [
    (lambda: _conv(W.astype(np.int32)), "node conv (Conv): W typestr: T, has unsupported type: tensor(int32)"),
    (lambda: _conv(W, strides=[0, 1]), "node conv (Conv): Attribute strides must only contain positive values"),
    (lambda: _conv(W, pads=[1, 1, 1]), "node conv (Conv): Attribute pads has incorrect size"),
    (lambda: _conv(W, group=3), "node conv (Conv): input has 2 channels, the weight takes 2 x group 3"),
    (lambda: _conv(W, kernel_shape=[2, 2]), "kernel_shape [2, 2] does not match the weight's [3, 3]"),
    (lambda: _conv(np.ones((3, 2, 3), np.float32)), "Number of spatial dimensions in the weight tensor (1)"),
    (lambda: _graph([helper.make_node("Relu", ["z"], ["y"], name="r")]), "does not pass onnx.checker: Nodes in a "
                                                                          "graph must be topologically sorted"),
    (lambda: _graph([helper.make_node("Relu", ["y"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]),
     "topologically sorted"),
    (lambda: _graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["y"])]),
     "does not pass onnx.checker"),
    (lambda: _graph([helper.make_node("Add", ["x", "c"], ["y"])], {"c": np.ones((1, 4), np.float32)[:, :0]}),
     "the model is inconsistent"),
])
def test_malformed_models_are_refused_with_the_reason(model, message):
    with pytest.raises(ModelError) as caught:
        normalize(model())
    assert message in str(caught.value) and len(str(caught.value)) < 400 and "\n" not in str(caught.value)


def test_names_that_are_not_text_and_nan_weights_are_model_errors():
    model = conv_gemm_model()
    data = model.SerializeToString().replace(b"conv_dw", b"conv\xff\xfe\xfd")  # same length, not UTF-8
    with pytest.raises(ModelError, match=r"^node 2 \('Conv'\) has a name that is not UTF-8 text$"):
        normalize(onnx.load_from_string(data))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((4, 2, 3, 3), np.nan, np.float32), "w1"))
    with pytest.raises(ModelError, match=r"^the weight of node conv1 \(w1\) contains NaN or Inf$"):
        quantize_model(model, QuantizeConfig(retrain=False))


def test_identity_nodes_are_dropped_but_one_that_makes_a_graph_output_stays():
    nodes = [helper.make_node("Identity", ["x"], ["a"], name="i0"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["y"], name="i1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    result = normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    assert [(n.op_type, list(n.input)) for n in result.model.graph.node] == [("Relu", ["x"]), ("Identity", ["r"])]
    assert "1 Identity node(s) removed" in result.notes
