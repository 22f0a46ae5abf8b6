"""Ops onnxruntime-training 1.19 cannot differentiate, rewritten into equal ops that it can (training copy only).

Each rule takes the graph editor, the node and a `Context` and returns the replacement nodes, or None to keep
the node. Found by trying every op on a tiny model with onnxruntime-training 1.19.2: no gradient for
HardSigmoid, HardSwish, Elu, Selu, Celu, Softplus, Softsign, Mish, PRelu, Sum, Mean, GlobalMaxPool;
LayerNormalization differentiates only with its optional Mean/InvStdDev outputs present; Clip's gradient
ignores bounds that are computed. Ops still without a gradient after this (ReduceMax, LRN, Resize, Einsum, ...)
make the training graph fail with an error naming the op and the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import onnx
from onnx import helper

__all__ = ["Context", "DECOMPOSITIONS", "decompose"]


class Editor(Protocol):
    """What the rules need from the graph editor: fresh names, constants and new nodes."""

    def fresh(self, base: str) -> str: ...

    def constant(self, base: str, value, dtype=np.float32) -> str: ...

    def node(self, op_type: str, inputs: list[str], output: str | None, base: str) -> tuple[onnx.NodeProto, str]: ...


@dataclass(frozen=True)
class Context:
    constants: frozenset[str]  # initializer names
    shapes: dict  # value name -> dims (int, symbol or None each)


class _Builder:
    """Appends nodes for one decomposition; `op` returns the new value's name (or writes `output`)."""

    def __init__(self, editor: Editor, node: onnx.NodeProto):
        self.editor, self.base, self.nodes = editor, node.name or node.output[0], []

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs) -> str:
        new, name = self.editor.node(op_type, list(inputs), output, self.base)
        new.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
        self.nodes.append(new)
        return name

    def const(self, name: str, value: float) -> str:
        return self.editor.constant(f"{self.base}/{name}", value)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _hard_sigmoid(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto]:
    """HardSigmoid(x) = Clip(alpha*x + beta, 0, 1); HardSwish(x) = x * HardSigmoid_{1/6, 1/2}(x)."""
    attrs = _attrs(node)
    if node.op_type == "HardSigmoid":
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    else:
        alpha, beta = 1.0 / 6.0, 0.5
    b = _Builder(editor, node)
    x, y = node.input[0], node.output[0]
    shifted = b.op("Add", b.op("Mul", x, b.const("alpha", alpha)), b.const("beta", beta))
    if node.op_type == "HardSigmoid":
        b.op("Clip", shifted, b.const("zero", 0.0), b.const("one", 1.0), output=y)
    else:
        b.op("Mul", x, b.op("Clip", shifted, b.const("zero", 0.0), b.const("one", 1.0)), output=y)
    return b.nodes


def _clip(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto] | None:
    """Clip with a computed bound: Min(Max(x, min), max), whose gradient reaches the bounds too."""
    bounds = [name for name in node.input[1:3]]
    if all(not name or name in context.constants for name in bounds):
        return None
    b = _Builder(editor, node)
    value = node.input[0]
    steps = [(op, name) for op, name in zip(("Max", "Min"), bounds) if name]
    for i, (op, name) in enumerate(steps):
        value = b.op(op, value, name, output=node.output[0] if i == len(steps) - 1 else None)
    return b.nodes


def _exponential_linear(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto]:
    """Elu, Selu, Celu: gamma * (Relu(x) + alpha * (Exp(Min(x, 0) / s) - 1)); Exp only sees x <= 0."""
    attrs = _attrs(node)
    alpha = attrs.get("alpha", {"Elu": 1.0, "Celu": 1.0, "Selu": 1.67326319217681884765625}[node.op_type])
    gamma = attrs.get("gamma", 1.05070102214813232421875) if node.op_type == "Selu" else 1.0
    b = _Builder(editor, node)
    x = node.input[0]
    negative = b.op("Min", x, b.const("zero", 0.0))
    if node.op_type == "Celu":
        negative = b.op("Div", negative, b.const("alpha", alpha))
    curve = b.op("Mul", b.op("Sub", b.op("Exp", negative), b.const("one", 1.0)), b.const("alpha", alpha))
    if gamma == 1.0:
        b.op("Add", b.op("Relu", x), curve, output=node.output[0])
    else:
        b.op("Mul", b.op("Add", b.op("Relu", x), curve), b.const("gamma", gamma), output=node.output[0])
    return b.nodes


def _softplus_of(b: _Builder, x: str, output: str | None = None) -> str:
    """log(1 + e^x) = Relu(x) + log(1 + e^-|x|): no overflow for large |x|."""
    tail = b.op("Log", b.op("Add", b.op("Exp", b.op("Neg", b.op("Abs", x))), b.const("one", 1.0)))
    return b.op("Add", b.op("Relu", x), tail, output=output)


def _softplus(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto]:
    b = _Builder(editor, node)
    _softplus_of(b, node.input[0], node.output[0])
    return b.nodes


def _mish(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto]:
    """x * tanh(softplus(x))."""
    b = _Builder(editor, node)
    b.op("Mul", node.input[0], b.op("Tanh", _softplus_of(b, node.input[0])), output=node.output[0])
    return b.nodes


def _softsign(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto]:
    """x / (1 + |x|)."""
    b = _Builder(editor, node)
    b.op("Div", node.input[0], b.op("Add", b.op("Abs", node.input[0]), b.const("one", 1.0)), output=node.output[0])
    return b.nodes


def _prelu(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto]:
    """Relu(x) + slope * Min(x, 0); slope broadcasts to x as in PRelu."""
    b = _Builder(editor, node)
    x, slope = node.input[:2]
    leak = b.op("Mul", b.op("Min", x, b.const("zero", 0.0)), slope)
    b.op("Add", b.op("Relu", x), leak, output=node.output[0])
    return b.nodes


def _sum_or_mean(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto]:
    """Sum/Mean of n inputs: a chain of broadcasting Adds (then times 1/n)."""
    b = _Builder(editor, node)
    inputs = [name for name in node.input if name]
    scale = node.op_type == "Mean" and len(inputs) > 1
    total = inputs[0]
    if len(inputs) == 1:
        b.op("Identity", total, output=node.output[0])
        return b.nodes
    for i, name in enumerate(inputs[1:], start=2):
        total = b.op("Add", total, name, output=node.output[0] if i == len(inputs) and not scale else None)
    if scale:
        b.op("Mul", total, b.const("inverse_count", 1.0 / len(inputs)), output=node.output[0])
    return b.nodes


def _global_max_pool(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto] | None:
    """MaxPool over the whole (concrete) spatial extent."""
    shape = context.shapes.get(node.input[0])
    if shape is None or len(shape) < 3 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return None
    b = _Builder(editor, node)
    b.op("MaxPool", node.input[0], output=node.output[0], kernel_shape=list(shape[2:]))
    return b.nodes


def _layer_norm(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto] | None:
    """LayerNormalization with its optional Mean and InvStdDev outputs named (the gradient reads them)."""
    outputs = list(node.output) + [""] * (3 - len(node.output))
    if all(outputs):
        return None
    base = node.name or node.output[0]
    outputs[1] = outputs[1] or editor.fresh(f"{base}/mean")
    outputs[2] = outputs[2] or editor.fresh(f"{base}/inv_std_dev")
    new = onnx.NodeProto()
    new.CopyFrom(node)
    del new.output[:]
    new.output.extend(outputs)
    return [new]


Rule = Callable[[Editor, onnx.NodeProto, Context], "list[onnx.NodeProto] | None"]
DECOMPOSITIONS: dict[str, Rule] = {
    "HardSigmoid": _hard_sigmoid, "HardSwish": _hard_sigmoid, "Clip": _clip,
    "Elu": _exponential_linear, "Selu": _exponential_linear, "Celu": _exponential_linear,
    "Softplus": _softplus, "Mish": _mish, "Softsign": _softsign, "PRelu": _prelu,
    "Sum": _sum_or_mean, "Mean": _sum_or_mean, "GlobalMaxPool": _global_max_pool,
    "LayerNormalization": _layer_norm,
}


def decompose(editor: Editor, node: onnx.NodeProto, context: Context) -> list[onnx.NodeProto] | None:
    """The node's differentiable replacement, or None when it is kept as it is."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in DECOMPOSITIONS:
        return None
    return DECOMPOSITIONS[node.op_type](editor, node, context)
