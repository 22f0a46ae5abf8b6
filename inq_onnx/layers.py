"""Which Conv, Gemm and MatMul nodes INQ quantizes, and for those it leaves float, why not."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import onnx

from .errors import ConfigError

__all__ = ["Layer", "SkippedNode", "match_layers", "QUANTIZABLE_OPS", "FLOAT_OPS"]

QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
# Ops with a constant weight that are never rewritten: reported as float layers with this reason.
FLOAT_OPS = {"ConvTranspose": "ConvTranspose is not rewritten (no com.inq kernel for it); it stays float"}


@dataclass(frozen=True)
class Layer:
    """A Conv, Gemm or MatMul node whose constant weight INQ quantizes."""

    node: str
    op_type: str
    weight: str
    bias: str | None
    shape: tuple[int, ...]
    channel_axis: int  # the weight axis of output channels: Conv 0, Gemm 1 (0 when transB), MatMul 1
    # MatMul: the Add node whose constant (N,) operand is the layer's bias; the rewrite folds it into the layer.
    bias_add: str | None = None


@dataclass(frozen=True)
class SkippedNode:
    node: str
    op_type: str
    reason: str


def _attribute(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _not_constant(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> str:
    """Why a weight is not a constant, in words that group alike across nodes (no node names)."""
    if len(node.input) < 2 or not node.input[1]:
        return "the node has no weight input"
    producer = producers.get(node.input[1])
    if producer is None:
        return "weight is a graph input, not a constant"
    return f"weight is not constant (computed by {producer.op_type})"


def _check(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], consumers: dict[str, list],
           excluded: set[str], outputs: set[str], producers: dict[str, onnx.NodeProto]) -> str | None:
    """None when the node qualifies, else the reason it does not."""
    if node.name in excluded:
        return "excluded by the user"
    if node.op_type == "MatMul" and node.input[0] in initializers and node.input[1] not in initializers:
        return "the constant is MatMul's first operand (W·x); only x·W with a constant W is rewritten"
    if len(node.input) < 2 or node.input[1] not in initializers:
        return _not_constant(node, producers)
    weight = initializers[node.input[1]]
    if weight.data_type != onnx.TensorProto.FLOAT:
        return f"weight is {onnx.TensorProto.DataType.Name(weight.data_type)}, not FLOAT"
    rank = len(weight.dims)
    if node.op_type == "Conv" and rank not in (3, 4):
        return f"only 1-D and 2-D convolutions are supported (weight rank {rank})"
    if node.op_type in ("Gemm", "MatMul") and rank != 2:
        return f"{node.op_type} weight must be 2-D (rank {rank})"
    others = [c for c in consumers[node.input[1]] if c.op_type != node.op_type or c.input[1] != node.input[1]]
    if others:
        return f"weight also feeds node {others[0].name} ({others[0].op_type})"
    if node.input[1] in outputs:
        return "weight is also a graph output"
    return None


def _bias_add(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], consumers: dict[str, list],
              outputs: set[str]) -> onnx.NodeProto | None:
    """The Add that only adds a constant float (N,) bias to the MatMul's output, which nothing else reads."""
    users = consumers[node.output[0]]
    if len(users) != 1 or node.output[0] in outputs:
        return None
    add = users[0]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
        return None
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    bias = initializers.get(other)
    n = initializers[node.input[1]].dims[1]
    if bias is None or other == node.output[0] or bias.data_type != onnx.TensorProto.FLOAT or list(bias.dims) != [n]:
        return None
    return add


def _candidates(graph: onnx.GraphProto, initializers) -> list[onnx.NodeProto]:
    """Conv and Gemm nodes, and MatMul nodes with a constant operand (a product of two activations is no layer)."""
    return [n for n in graph.node if n.op_type in QUANTIZABLE_OPS and n.domain in ("", "ai.onnx")
            and (n.op_type != "MatMul" or any(i in initializers for i in n.input))]


def match_layers(model: onnx.ModelProto, exclude: Iterable[str] = ()) -> tuple[list[Layer], list[SkippedNode]]:
    """Quantizable layers and skipped linear nodes, in graph order. `model` must be normalized."""
    graph = model.graph
    excluded = set(exclude)
    initializers = {t.name: t for t in graph.initializer}
    candidates = _candidates(graph, initializers)
    names = ", ".join(n.name for n in candidates) or "none"
    unknown = excluded - {n.name for n in graph.node}
    if unknown:
        raise ConfigError(f"--exclude names no node: {', '.join(sorted(unknown))} (Conv/Gemm/MatMul nodes: {names})")
    for node in graph.node:
        if node.name in excluded and node not in candidates:
            raise ConfigError(f"--exclude: {node.name} is a {node.op_type} node; only Conv, Gemm and MatMul nodes "
                              f"with a constant weight are quantized (Conv/Gemm/MatMul nodes: {names})")
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for name in n.input:
            consumers[name].append(n)
    outputs = {o.name for o in graph.output}
    producers = {name: n for n in graph.node for name in n.output}
    layers, skipped = [], []
    for node in graph.node:
        if node.op_type in FLOAT_OPS and node.domain in ("", "ai.onnx") and node.input[1:2] and \
                node.input[1] in initializers:
            skipped.append(SkippedNode(node.name, node.op_type, FLOAT_OPS[node.op_type]))
    reasons = {node.name: _check(node, initializers, consumers, excluded, outputs, producers) for node in candidates}
    # A weight shared by several nodes is quantized for all of them or for none.
    for node in candidates:
        if reasons[node.name] is None:
            floats = [c for c in consumers[node.input[1]] if c is not node and reasons.get(c.name) is not None]
            if floats:
                reasons[node.name] = f"weight is shared with node {floats[0].name}, which stays float"
    for node in candidates:
        reason = reasons[node.name]
        if reason is not None:
            skipped.append(SkippedNode(node.name, node.op_type, reason))
            continue
        shape = tuple(initializers[node.input[1]].dims)
        axis = 0 if node.op_type == "Conv" or _attribute(node, "transB", 0) else 1
        bias = node.input[2] if node.op_type != "MatMul" and len(node.input) > 2 and node.input[2] else None
        add = _bias_add(node, initializers, consumers, outputs) if node.op_type == "MatMul" else None
        if add is not None:
            bias = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        layers.append(Layer(node.name, node.op_type, node.input[1], bias, shape, axis, add.name if add else None))
    return layers, skipped
