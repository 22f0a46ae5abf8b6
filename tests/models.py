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


def residual_model(seed: int = 0, channels: int = 4) -> onnx.ModelProto:
    """Patterns the rewrite fuses, and look-alikes it must leave alone, on (N, 4, 6, 6):

    stem: Conv → Relu; block: Conv → Add(stem output) → Relu; then Conv → Clip(0, 6) (constant bounds);
    Conv → Clip(x_min) with a bound from the graph input (not fused); Conv whose output is also a graph output
    → Relu (not fused); Conv → Add of a (1, C, 1, 1) constant (broadcast, not fused); Gemm → Relu.
    """
    rng = np.random.default_rng(seed)
    c = channels

    def conv(name, src, dst):
        return helper.make_node("Conv", [src, f"w_{name}", f"b_{name}"], [dst], name=name, pads=[1, 1, 1, 1])

    nodes = [
        conv("stem", "x", "s"), helper.make_node("Relu", ["s"], ["s_r"], name="stem_relu"),
        conv("block", "s_r", "b"), helper.make_node("Add", ["b", "s_r"], ["b_sum"], name="block_add"),
        helper.make_node("Relu", ["b_sum"], ["b_r"], name="block_relu"),
        conv("six", "b_r", "k"), helper.make_node("Clip", ["k", "zero", "six"], ["k_c"], name="six_clip"),
        conv("dyn", "k_c", "d"), helper.make_node("Clip", ["d", "x_min"], ["d_c"], name="dyn_clip"),
        conv("tap", "d_c", "t"), helper.make_node("Relu", ["t"], ["t_r"], name="tap_relu"),
        conv("bcast", "t_r", "e"), helper.make_node("Add", ["e", "shift"], ["e_s"], name="bcast_add"),
        helper.make_node("Flatten", ["e_s"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["g"], name="fc", transB=1),
        helper.make_node("Relu", ["g"], ["y"], name="fc_relu"),
    ]
    init = {"zero": np.array(0.0, np.float32), "six": np.array(0.6, np.float32),
            "shift": weights(rng, 1, c, 1, 1), "w_fc": weights(rng, 3, c * 36, scale=0.1),
            "b_fc": weights(rng, 3, scale=0.1)}
    for name in ("stem", "block", "six", "dyn", "tap", "bcast"):
        init[f"w_{name}"] = weights(rng, c, 2 if name == "stem" else c, 3, 3)
        init[f"b_{name}"] = weights(rng, c, scale=0.1)
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6]),
                              helper.make_tensor_value_info("x_min", TensorProto.FLOAT, [])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                       helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", c, 6, 6])], init)


def constant_subgraph_model(seed: int = 0, opset: int = 9) -> onnx.ModelProto:
    """conv_gemm_model's layers with weights computed by constant subgraphs, as opset-9 converters wrote them:

    conv1's weight is Reshape(flat initializer, Constant shape); conv_dw's is Add(ConstantOfShape(0), raw);
    fc's is Transpose(Cast(float64 initializer)) and its bias Squeeze(Unsqueeze(raw)).
    """
    rng = np.random.default_rng(seed)
    c, classes = 4, 5
    shape = numpy_helper.from_array(np.array([c, 2, 3, 3], np.int64))
    nodes = [
        helper.make_node("Constant", [], ["w1_shape"], value=shape),
        helper.make_node("Reshape", ["w1_flat", "w1_shape"], ["w1"]),
        helper.make_node("ConstantOfShape", ["w2_shape"], ["w2_zero"],
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("Add", ["w2_zero", "w2_raw"], ["w2"]),
        helper.make_node("Cast", ["w3_f64"], ["w3_t"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["w3_t"], ["w3"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["b3_raw"], ["b3_u"], axes=[0]),
        helper.make_node("Squeeze", ["b3_u"], ["b3"], axes=[0]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=c, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"]),
    ]
    init = {"w1_flat": weights(rng, c * 2 * 9), "b1": weights(rng, c, scale=0.1),
            "w2_shape": np.array([c, 1, 3, 3], np.int64), "w2_raw": weights(rng, c, 1, 3, 3),
            "w3_f64": weights(rng, classes, c * 9, scale=0.2).astype(np.float64), "b3_raw": weights(rng, classes)}
    graph = helper.make_graph(nodes, "exported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=4)
    onnx.checker.check_model(model, full_check=True)
    return model


def opset6_gemm_model(seed: int = 0) -> onnx.ModelProto:
    """IR 3, opset 6: Gemm with the old `broadcast` attribute, initializers also listed as graph inputs."""
    rng = np.random.default_rng(seed)
    init = {"w": weights(rng, 4, 3), "b": weights(rng, 4, scale=0.1)}
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", broadcast=1, transB=1)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])] + [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in init.items()]
    graph = helper.make_graph([node], "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    onnx.checker.check_model(model)
    return model
