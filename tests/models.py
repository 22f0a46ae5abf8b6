"""Tiny models for the tests, built with onnx.helper and checked; seeded, nothing written to the tree."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime(-training) 1.19


def make_model(nodes, inputs, outputs, initializers, opsets=(("", OPSET),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def weights(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv_gemm_model(seed: int = 0, channels: int = 4, classes: int = 5, softmax: bool = False) -> onnx.ModelProto:
    """Conv(3x3, pad 1) → Relu → Conv(depthwise, stride 2) → Flatten → Gemm on (N, 2, 6, 6)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv_dw", group=channels, strides=[2, 2],
                         kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits" if not softmax else "g"], name="fc", transB=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["g"], ["logits"], name="softmax", axis=1))
    init = {"w1": weights(rng, channels, 2, 3, 3), "b1": weights(rng, channels, scale=0.1),
            "w2": weights(rng, channels, 1, 3, 3), "w3": weights(rng, classes, channels * 9, scale=0.2),
            "b3": weights(rng, classes, scale=0.1)}
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], init)


def random_inputs(seed: int, count: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 2, 6, 6)).astype(np.float32)


def fixed_batch_model(seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    """conv_gemm_model with the batch fixed (as exporters often write it)."""
    model = conv_gemm_model(seed)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.checker.check_model(model, full_check=True)
    return model


def features_first_model(seed: int = 0) -> onnx.ModelProto:
    """Two outputs: a feature map first, logits second."""
    model = conv_gemm_model(seed)
    model.graph.output.insert(0, helper.make_tensor_value_info("c1", TensorProto.FLOAT, ["N", 4, 6, 6]))
    onnx.checker.check_model(model, full_check=True)
    return model
