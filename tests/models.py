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


def transformer_block_model(seed: int = 0, tokens: int = 5, width: int = 8, hidden: int = 16, classes: int = 3,
                            layer_norm: bool = False) -> onnx.ModelProto:
    """A transformer-style MLP block as PyTorch exports nn.Linear on (N, tokens, width): MatMul + Add(bias),
    Relu, MatMul + Add, Erf-based Gelu, MatMul + Add, a residual Add, [LayerNormalization], mean over the tokens,
    then a 2-D MatMul + Add head. Outputs: the logits (N, classes) and the block's output (N, tokens, width)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "w_up"], ["up"], name="up"),
        helper.make_node("Add", ["up", "b_up"], ["up_b"], name="up_bias"),
        helper.make_node("Relu", ["up_b"], ["up_r"], name="up_relu"),
        helper.make_node("MatMul", ["up_r", "w_mid"], ["mid"], name="mid"),
        helper.make_node("Add", ["b_mid", "mid"], ["mid_b"], name="mid_bias"),
        # Gelu as exporters write it: x * 0.5 * (1 + erf(x / sqrt 2))
        helper.make_node("Div", ["mid_b", "sqrt2"], ["g_div"], name="gelu_div"),
        helper.make_node("Erf", ["g_div"], ["g_erf"], name="gelu_erf"),
        helper.make_node("Add", ["g_erf", "one"], ["g_add"], name="gelu_add"),
        helper.make_node("Mul", ["mid_b", "g_add"], ["g_mul"], name="gelu_mul"),
        helper.make_node("Mul", ["g_mul", "half"], ["gelu"], name="gelu_half"),
        helper.make_node("MatMul", ["gelu", "w_down"], ["down"], name="down"),
        helper.make_node("Add", ["down", "b_down"], ["down_b"], name="down_bias"),
        helper.make_node("Add", ["down_b", "x"], ["block" if not layer_norm else "res"], name="residual"),
    ]
    init = {"w_up": weights(rng, width, hidden), "b_up": weights(rng, hidden, scale=0.1),
            "w_mid": weights(rng, hidden, hidden, scale=0.2), "b_mid": weights(rng, hidden, scale=0.1),
            "w_down": weights(rng, hidden, width, scale=0.2), "b_down": weights(rng, width, scale=0.1),
            "w_head": weights(rng, width, classes), "b_head": weights(rng, classes, scale=0.1),
            "sqrt2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
            "half": np.array(0.5, np.float32)}
    if layer_norm:
        nodes.append(helper.make_node("LayerNormalization", ["res", "ln_scale", "ln_bias"], ["block"], name="norm",
                                      axis=-1, epsilon=1e-5))
        init.update(ln_scale=1.0 + weights(rng, width, scale=0.1), ln_bias=weights(rng, width, scale=0.1))
    nodes += [
        helper.make_node("ReduceMean", ["block"], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_head"], ["head"], name="head"),
        helper.make_node("Add", ["head", "b_head"], ["logits"], name="head_bias"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", tokens, width])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
                       helper.make_tensor_value_info("block", TensorProto.FLOAT, ["N", tokens, width])], init)


def batch_norm_stats(rng: np.random.Generator, channels: int, spread: float = 0.0) -> dict[str, np.ndarray]:
    """BatchNormalization scale/bias/mean/var; |scale| spans 2^-spread..1 across channels, signs mixed."""
    magnitude = np.exp2(-rng.uniform(0.0, spread, channels)) if spread else rng.uniform(0.5, 1.5, channels)
    return {"scale": (magnitude * rng.choice([-1.0, 1.0], channels, p=[0.2, 0.8])).astype(np.float32),
            "bias": weights(rng, channels, scale=0.1), "mean": weights(rng, channels, scale=0.2),
            "var": rng.uniform(0.3, 2.0, channels).astype(np.float32)}


def _calibrate_batch_norms(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Set each BatchNormalization's mean/var to the statistics of its input on random data, in graph order,
    as training leaves them (running statistics)."""
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(seed).standard_normal((64, 2, 6, 6)).astype(np.float32)
    init = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
        value = ReferenceEvaluator(probe).run([node.input[0]], {"x": x})[0]
        axes = tuple(a for a in range(value.ndim) if a != 1)
        init[node.input[3]].CopyFrom(numpy_helper.from_array(value.mean(axis=axes).astype(np.float32),
                                                             node.input[3]))
        init[node.input[4]].CopyFrom(numpy_helper.from_array(value.var(axis=axes).astype(np.float32),
                                                             node.input[4]))
    return model


def batch_norm_model(seed: int = 0, channels: int = 8, blocks: int = 2, spread: float = 0.0,
                     depthwise: bool = False, gemm_batch_norm: bool = True) -> onnx.ModelProto:
    """(Conv → BatchNormalization → Relu) × blocks → Flatten → Gemm [→ BatchNormalization] on (N, 2, 6, 6).

    The first Conv has no bias. `spread`: the BN scales span 2^-spread..1 across channels. `depthwise`: the
    Convs after the first are depthwise, and every BN holds the statistics of its input on random data; a
    depthwise layer then normalizes the small channels of the layer before back up, so its folded weights spread
    the other way (the per-tensor failure of folded MobileNets).
    """
    rng = np.random.default_rng(seed)
    nodes, init, src, cin = [], {}, "x", 2
    for i in range(blocks):
        bias = [f"b{i}"] if i else []
        group = channels if depthwise and i else 1
        nodes += [helper.make_node("Conv", [src, f"w{i}", *bias], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1],
                                   group=group),
                  helper.make_node("BatchNormalization", [f"c{i}", *(f"bn{i}.{k}" for k in
                                                                     ("scale", "bias", "mean", "var"))],
                                   [f"n{i}"], name=f"bn{i}", epsilon=1e-3),
                  helper.make_node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}")]
        init[f"w{i}"] = weights(rng, channels, cin // group, 3, 3)
        if i:
            init[f"b{i}"] = weights(rng, channels, scale=0.1)
        stats = batch_norm_stats(rng, channels, spread if not (depthwise and i) else 0.0)
        init.update({f"bn{i}.{k}": v for k, v in stats.items()})
        src, cin = f"r{i}", channels
    classes = 5
    nodes += [helper.make_node("Flatten", [src], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["g" if gemm_batch_norm else "logits"], name="fc",
                               transB=1, beta=0.5)]
    init.update({"w_fc": weights(rng, classes, channels * 36, scale=0.1), "b_fc": weights(rng, classes, scale=0.1)})
    if gemm_batch_norm:
        nodes.append(helper.make_node("BatchNormalization", ["g", *(f"bn_fc.{k}" for k in
                                                                  ("scale", "bias", "mean", "var"))],
                                      ["logits"], name="bn_fc"))
        init.update({f"bn_fc.{k}": v for k, v in batch_norm_stats(rng, classes).items()})
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                       [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], init)
    return _calibrate_batch_norms(model, seed) if depthwise else model


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
