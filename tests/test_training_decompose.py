"""Ops onnxruntime-training 1.19 cannot differentiate, trained through their decompositions: the forward pass
equals the original op, and the gradients equal float64 central differences of the original model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.errors import ModelError, RuntimeUnavailableError
from inq_onnx.training._ort_import import load_ort_training

pytestmark = pytest.mark.train
try:
    load_ort_training()
    from inq_onnx.training.ort_backend import OrtGradientBackend
except RuntimeUnavailableError:
    OrtGradientBackend = None

FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE

# op: (nodes from "h" (N, 5) to "a" (N, 5), extra initializers, opset)
MIDDLE = {
    "Elu": ([helper.make_node("Elu", ["h"], ["a"], name="op", alpha=0.7)], {}, 17),
    "Selu": ([helper.make_node("Selu", ["h"], ["a"], name="op")], {}, 17),
    "Celu": ([helper.make_node("Celu", ["h"], ["a"], name="op", alpha=1.3)], {}, 17),
    "Softplus": ([helper.make_node("Softplus", ["h"], ["a"], name="op")], {}, 17),
    "Softsign": ([helper.make_node("Softsign", ["h"], ["a"], name="op")], {}, 17),
    "Mish": ([helper.make_node("Mish", ["h"], ["a"], name="op")], {}, 18),
    "PRelu": ([helper.make_node("PRelu", ["h", "slope"], ["a"], name="op")],
              {"slope": [0.1, -0.2, 0.3, 0.05, 0.25]}, 17),
    "Sum": ([helper.make_node("Sum", ["h", "h", "c"], ["a"], name="op")], {"c": [0.5, -1.0, 0.0, 2.0, 0.1]}, 17),
    "Mean": ([helper.make_node("Mean", ["h", "c"], ["a"], name="op")], {"c": [0.5, -1.0, 0.0, 2.0, 0.1]}, 17),
    # Bounds computed from the activations: the gradient must reach them (ORT's own Clip gradient drops it).
    "Clip-computed-bounds": ([helper.make_node("ReduceMean", ["h"], ["m"], name="mean", keepdims=0),
                              helper.make_node("Sub", ["m", "width"], ["low"], name="low"),
                              helper.make_node("Add", ["m", "width"], ["high"], name="high"),
                              helper.make_node("Clip", ["h", "low", "high"], ["a"], name="op")],
                             {"width": 0.3}, 17),
    "LayerNormalization": ([helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["a"], name="op",
                                             axis=-1)],
                           {"gamma": [1.0, 0.5, 2.0, 1.5, 0.8], "beta": [0.1, -0.2, 0.0, 0.3, 0.2]}, 17),
}


def linear_model(op: str, elem_type: int) -> onnx.ModelProto:
    """Gemm → op → Gemm on (N, 6): both layers' gradients pass through (or start at) the op."""
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    rng = np.random.default_rng(5)
    middle, extra, opset = MIDDLE[op]
    values = {"w1": rng.standard_normal((6, 5)) / np.sqrt(6), "b1": rng.standard_normal(5) * 0.3,
              "w2": rng.standard_normal((5, 3)) / np.sqrt(5), "b2": rng.standard_normal(3) * 0.1, **extra}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"), *middle,
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", elem_type, ["N", 6])],
                              [helper.make_tensor_value_info("y", elem_type, ["N", 3])],
                              [numpy_helper.from_array(np.asarray(v, dtype), k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if elem_type == FLOAT:  # Celu's schema is float-only; the float64 copy serves the reference evaluator
        onnx.checker.check_model(model, full_check=True)
    return model


def pooling_model(op: str, elem_type: int) -> onnx.ModelProto:
    """Conv → GlobalMaxPool → Flatten → Gemm on (N, 2, 4, 4)."""
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    rng = np.random.default_rng(6)
    values = {"w1": rng.standard_normal((3, 2, 3, 3)) / 4, "b1": rng.standard_normal(3) * 0.1,
              "w2": rng.standard_normal((3, 3)), "b2": rng.standard_normal(3) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalMaxPool", ["c"], ["p"], name="op"),
             helper.make_node("Flatten", ["p"], ["a"], name="flatten"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", elem_type, ["N", 2, 4, 4])],
                              [helper.make_tensor_value_info("y", elem_type, ["N", 3])],
                              [numpy_helper.from_array(np.asarray(v, dtype), k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


CASES = {**{op: (linear_model, (6,)) for op in MIDDLE}, "GlobalMaxPool": (pooling_model, (2, 4, 4))}


def reference_loss(model64, params, x, target) -> float:
    model = onnx.ModelProto()
    model.CopyFrom(model64)
    for init in model.graph.initializer:
        if init.name in params:
            init.CopyFrom(numpy_helper.from_array(params[init.name], init.name))
    (y,) = ReferenceEvaluator(model).run(None, {"x": x.astype(np.float64)})
    return float(np.mean((y - target) ** 2))


@pytest.mark.parametrize("op", list(CASES))
def test_decomposed_op_trains_like_the_original(op, tmp_path):
    build, sample_shape = CASES[op]
    model32, model64 = build(op, FLOAT), build(op, DOUBLE)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, *sample_shape)).astype(np.float32)
    target = rng.standard_normal((5, 3)).astype(np.float32)
    trainable = ["w1", "b1", "w2"]
    with OrtGradientBackend(model32, trainable, "distillation", {"x": sample_shape}, workdir=tmp_path) as backend:
        kept = [n for n in backend._forward.graph.node if n.op_type == op.split("-")[0]]
        # Decomposed; LayerNormalization stays, its Mean and InvStdDev outputs named for the gradient.
        assert [len(n.output) for n in kept] == ([3] if op == "LayerNormalization" else [])
        predicted = backend.predict({"x": x})[0]
        loss, grads = backend.loss_and_gradients({"x": x}, [target])
        params = {name: value.astype(np.float64) for name, value in backend.get_parameters().items()}
    np.testing.assert_allclose(predicted, ReferenceEvaluator(model32).run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(reference_loss(model64, params, x, target), rel=1e-5)
    eps = 1e-6
    for name in trainable:
        value = params[name]
        for flat in rng.choice(value.size, size=min(3, value.size), replace=False):
            index = np.unravel_index(flat, value.shape)
            plus, minus = value.copy(), value.copy()
            plus[index] += eps
            minus[index] -= eps
            numeric = (reference_loss(model64, {**params, name: plus}, x, target)
                       - reference_loss(model64, {**params, name: minus}, x, target)) / (2 * eps)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-3, abs=1e-5), (name, index)


def test_an_op_still_without_gradient_names_the_op_the_node_and_the_way_out(tmp_path):
    model = linear_model("Elu", FLOAT)
    node = next(n for n in model.graph.node if n.name == "op")
    node.op_type = "Shrink"
    del node.attribute[:]
    with pytest.raises(ModelError) as error:
        OrtGradientBackend(model, ["w1", "b1", "w2"], "distillation", {"x": (6,)}, workdir=tmp_path)
    message = str(error.value)
    for fragment in ("no gradient for Shrink", "node 'op'", "fc1", "--no-retrain", "--exclude"):
        assert fragment in message, message
    assert "\n" not in message and len(message) < 400
