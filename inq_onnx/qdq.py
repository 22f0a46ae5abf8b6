"""QuantizeLinear/DequantizeLinear around standard Conv/Gemm: exact int8 power-of-two weights, u8 activations."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import large_models
from .errors import ModelError
from .graph_edit import drop_unused_initializers

__all__ = ["QdqResult", "insert_qdq", "int8_weight", "activation_qparams", "MIN_OPSET"]

MIN_OPSET = 13  # per-axis DequantizeLinear
_INT32 = np.iinfo(np.int32)


@dataclass
class QdqResult:
    model: onnx.ModelProto
    quantized: list[str] = field(default_factory=list)  # node names now between Q/DQ
    notes: list[str] = field(default_factory=list)  # why the other candidate layers stayed float


class _Float(Exception):
    """Internal: a layer cannot be quantized exactly; the message says why."""


def int8_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, per-channel float32 scales) with weight == q * scale exactly, scales powers of two.

    Each channel's scale is its smallest nonzero magnitude, so its weights become 0 or ±2^j; raises _Float
    when some channel needs a value outside -128..127 (or the weight is not 0 or ±2^k).
    """
    rows = np.moveaxis(np.asarray(weight, dtype=np.float32), axis, 0)
    flat = rows.reshape(len(rows), -1)
    mantissa, exponent = np.frexp(np.abs(flat))
    nonzero = flat != 0
    if np.any(mantissa[nonzero] != 0.5) or not np.all(np.isfinite(flat)):
        raise _Float("its weights are not all 0 or ±2^k")
    exponent = exponent.astype(np.int64) - 1  # |w| = 2^exponent
    smallest = np.where(nonzero, exponent, np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(np.int64).max)
    smallest = np.where(nonzero.any(axis=1), smallest, 0)
    q = np.ldexp(flat.astype(np.float64), -smallest[:, None])
    bad = np.flatnonzero((q > 127).any(axis=1) | (q < -128).any(axis=1))
    if bad.size:
        c = int(bad[0])
        raise _Float(f"output channel {c} needs int8 values {q[c].min():+.0f}..{q[c].max():+.0f} at scale "
                     f"2^{int(smallest[c])} (its smallest level), beyond -128..127 ({bad.size} of {len(flat)} "
                     f"channels)")
    scales = np.ldexp(np.float32(1), smallest).astype(np.float32)
    return np.moveaxis(q.astype(np.int8).reshape(rows.shape), 0, axis), scales


def activation_qparams(low: float, high: float) -> tuple[np.float32, np.uint8]:
    """u8 asymmetric scale and zero point covering [min(low, 0), max(high, 0)], as MinMax calibration does."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = np.float32((high - low) / 255.0)
    if not np.isfinite(scale):
        raise ModelError(f"activation range [{low}, {high}] is not finite")
    if scale == 0:
        scale = np.float32(1.0)
    return scale, np.uint8(np.clip(np.round(-low / float(scale)), 0, 255))


class _Builder:
    """Collects the new nodes and initializers of one QDQ graph; names stay unique."""

    def __init__(self, model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]]):
        self.graph = model.graph
        self.ranges = ranges
        self.inits = {t.name: t for t in model.graph.initializer}
        self.names = set(self.inits) | {n for node in model.graph.node for n in (*node.input, *node.output)}
        self.names |= {v.name for v in model.graph.input}
        self.new_inits: list[onnx.TensorProto] = []
        self.quantized: dict[str, tuple[str, np.float32, np.uint8]] = {}  # tensor -> (DQ output, scale, zp)
        self.weights: dict[tuple[str, int], str] = {}  # (float weight, channel axis) -> DQ output

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def constant(self, base: str, array: np.ndarray) -> str:
        name = self.unique(base)
        self.new_inits.append(numpy_helper.from_array(array, name))
        return name

    def qparams(self, tensor: str) -> tuple[np.float32, np.uint8]:
        if tensor not in self.ranges:
            raise _Float(f"no activation range for tensor {tensor!r}")
        return activation_qparams(*self.ranges[tensor])

    def qdq_pair(self, source: str, target: str, scale, zp) -> list[onnx.NodeProto]:
        """Q(source) -> DQ -> target with the given parameters."""
        s, z = self.constant(f"{target}_scale", np.asarray(scale)), self.constant(f"{target}_zero_point",
                                                                                 np.asarray(zp))
        q = self.unique(f"{target}_quantized")
        return [helper.make_node("QuantizeLinear", [source, s, z], [q], name=self.unique(f"{target}_QuantizeLinear")),
                helper.make_node("DequantizeLinear", [q, s, z], [target],
                                 name=self.unique(f"{target}_DequantizeLinear"))]


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _weight_axis(node: onnx.NodeProto) -> int:
    return 0 if node.op_type == "Conv" or _attributes(node).get("transB", 0) else 1


def _removable(activation: onnx.NodeProto, builder: _Builder, scale, zp) -> bool:
    """True when Q with (scale, zp) already clamps like `activation` (Relu, Clip with constant bounds)."""
    low, high = float(scale) * (0 - int(zp)), float(scale) * (255 - int(zp))
    if activation.op_type == "Relu":
        return low >= 0
    if activation.op_type != "Clip":
        return False
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        name = activation.input[i] if len(activation.input) > i else ""
        if name and name not in builder.inits:
            return False
        bounds.append(float(numpy_helper.to_array(builder.inits[name])) if name else default)
    return bounds[0] <= low and high <= bounds[1]


def insert_qdq(model: onnx.ModelProto, layers: set[str], ranges: Mapping[str, tuple[float, float]],
               strict: bool = False) -> QdqResult:
    """A copy of the float `model` whose Conv/Gemm nodes named in `layers` take int8 weights through
    DequantizeLinear and u8 activations through QuantizeLinear/DequantizeLinear pairs, bias int32 at scale
    x_scale * w_scale: the groups onnxruntime fuses into QLinearConv / QGemm. A Relu or Clip right after a
    layer is dropped when the output's u8 range already clamps the same way. Layers that cannot be exact stay
    float with a note, or raise ModelError when `strict`."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ModelError(f"QDQ export needs opset {MIN_OPSET} or newer (per-channel DequantizeLinear); the model "
                         f"has opset {opset}")
    model = copy.deepcopy(model)
    builder = _Builder(model, ranges)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    result = QdqResult(model)
    dropped: set[str] = set()  # outputs of the activations whose clamp the u8 range took over
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type in ("Relu", "Clip") and node.output[0] in dropped:
            continue
        if node.name not in layers or node.op_type not in ("Conv", "Gemm"):
            if node.name in layers:  # the MatMul of a ShiftMatMul: onnxruntime fuses per-tensor weights only
                result.notes.append(f"{node.name} ({node.op_type}) stays float: the QDQ form covers Conv and Gemm "
                                    f"layers only")
            nodes.append(node)
            continue
        try:
            plan = _plan_layer(node, builder, consumers, outputs)
        except _Float as reason:
            if strict:
                raise ModelError(f"layer {node.name} ({node.op_type}) cannot be exported to int8 exactly: "
                                 f"{reason}") from None
            result.notes.append(f"{node.name} ({node.op_type}) stays float: {reason}")
            nodes.append(node)
            continue
        nodes.extend(_apply(node, plan, builder))
        if plan.activation is not None:
            dropped.add(plan.activation.output[0])
        result.quantized.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(builder.new_inits)
    drop_unused_initializers(model.graph)
    large_models.check_model(model)
    return result


@dataclass
class _Plan:
    x: tuple[str, np.float32, np.uint8] | None  # an existing DQ output for the input, or None: add one
    x_scale: np.float32
    x_zp: np.uint8
    weight: np.ndarray
    scales: np.ndarray
    bias: np.ndarray | None
    y: str  # the tensor the output Q/DQ writes (the layer's output, or the dropped activation's)
    y_scale: np.float32
    y_zp: np.uint8
    activation: onnx.NodeProto | None


def _plan_layer(node, builder: _Builder, consumers, outputs) -> _Plan:
    """Everything a layer's QDQ form needs, checked before anything is added; _Float when it cannot be exact."""
    attrs = _attributes(node)
    w_name = node.input[1]
    if w_name not in builder.inits:
        raise _Float(f"its weight {w_name!r} is not an initializer")
    weight = numpy_helper.to_array(builder.inits[w_name])
    q, scales = int8_weight(weight, _weight_axis(node))
    x = builder.quantized.get(node.input[0])
    x_scale, x_zp = (x[1], x[2]) if x else builder.qparams(node.input[0])
    bias = None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in builder.inits:
            raise _Float(f"its bias {node.input[2]!r} is not an initializer")
        b = numpy_helper.to_array(builder.inits[node.input[2]]).astype(np.float64)
        if b.shape != scales.shape or (node.op_type == "Gemm" and float(attrs.get("beta", 1.0)) != 1.0):
            raise _Float(f"its bias has shape {b.shape} (beta {attrs.get('beta', 1.0)}); int32 bias needs "
                         f"({len(scales)},) and beta 1")
        bias = np.round(b / (float(x_scale) * scales.astype(np.float64)))
        if np.abs(bias).max(initial=0) > _INT32.max:
            raise _Float("its bias overflows int32 at scale x_scale * w_scale")
    y = node.output[0]
    users = consumers.get(y, [])
    activation = users[0] if len(users) == 1 and y not in outputs and users[0].op_type in ("Relu", "Clip") else None
    if activation is not None:
        y_scale, y_zp = builder.qparams(activation.output[0])
        if not _removable(activation, builder, y_scale, y_zp):
            activation = None
    if activation is None:
        y_scale, y_zp = builder.qparams(y)
    return _Plan(x, x_scale, x_zp, q, scales, bias, activation.output[0] if activation is not None else y,
                 y_scale, y_zp, activation)


def _apply(node: onnx.NodeProto, plan: _Plan, builder: _Builder) -> list[onnx.NodeProto]:
    """The layer between its Q/DQ nodes, in execution order."""
    added: list[onnx.NodeProto] = []
    x_name = node.input[0]
    if plan.x is None:
        dq = builder.unique(f"{x_name}_dequantized")
        added += builder.qdq_pair(x_name, dq, plan.x_scale, plan.x_zp)
        builder.quantized[x_name] = (dq, plan.x_scale, plan.x_zp)
    node.input[0] = builder.quantized[x_name][0]
    axis = _weight_axis(node)
    w_name = node.input[1]
    if (w_name, axis) not in builder.weights:
        base = w_name[: -len("_float")] if w_name.endswith("_float") else w_name  # export_float's suffix
        values = builder.constant(f"{base}_int8", plan.weight)
        scale = builder.constant(f"{base}_scale", plan.scales)
        zero = builder.constant(f"{base}_zero_point", np.zeros(plan.scales.shape, np.int8))
        dq = builder.unique(f"{base}_dequantized")
        added.append(helper.make_node("DequantizeLinear", [values, scale, zero], [dq], axis=axis,
                                      name=builder.unique(f"{base}_DequantizeLinear")))
        builder.weights[w_name, axis] = dq
    node.input[1] = builder.weights[w_name, axis]
    if plan.bias is not None:
        b_name = node.input[2]
        values = builder.constant(f"{b_name}_int32", plan.bias.astype(np.int32))
        scale = builder.constant(f"{b_name}_scale", (plan.x_scale * plan.scales).astype(np.float32))
        zero = builder.constant(f"{b_name}_zero_point", np.zeros(plan.scales.shape, np.int32))
        dq = builder.unique(f"{b_name}_dequantized")
        added.append(helper.make_node("DequantizeLinear", [values, scale, zero], [dq], axis=0,
                                      name=builder.unique(f"{b_name}_DequantizeLinear")))
        node.input[2] = dq
    added.append(node)
    if plan.activation is None:  # the layer writes `<y>_float`; the DQ writes y for every consumer
        node.output[0] = builder.unique(f"{plan.y}_float")
    added += builder.qdq_pair(node.output[0], plan.y, plan.y_scale, plan.y_zp)
    builder.quantized[plan.y] = (plan.y, plan.y_scale, plan.y_zp)
    return added
