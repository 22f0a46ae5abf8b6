"""Fold inference-mode BatchNormalization into the Conv or Gemm before it: k·(Wx + b − mean) + β, k = γ/√(var+ε).

The folded layer computes the same function to float rounding, and its weight W·k (per output channel) is what
INQ quantizes: the deployed weights include the BN scale and no BN node is left to run.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_edit import drop_unused_initializers

__all__ = ["FoldedBatchNorm", "BatchNormReport", "fold_batchnorm"]

_STANDARD = ("", "ai.onnx")


@dataclass(frozen=True)
class FoldedBatchNorm:
    batchnorm: str  # the BatchNormalization node, now gone
    layer: str  # the Conv/Gemm node that took it in


@dataclass
class BatchNormReport:
    folded: list[FoldedBatchNorm] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (BatchNormalization node, why it stays)
    # Conv nodes whose following Add of a per-channel constant became their bias (as Paddle exports a Conv's
    # bias), so that a BatchNormalization after the Add folds too.
    bias_adds: list[str] = field(default_factory=list)

    def summary(self) -> str | None:
        """What happened to the model's BatchNormalization nodes, in one line; None when it has none."""
        parts = []
        if self.folded:
            pairs = ", ".join(f"{f.batchnorm} into {f.layer}" for f in self.folded[:3])
            more = f", ... ({len(self.folded) - 3} more)" if len(self.folded) > 3 else ""
            parts.append(f"{len(self.folded)} folded into the layer before ({pairs}{more})")
        if self.bias_adds and self.folded:
            parts.append(f"{len(self.bias_adds)} bias Add(s) taken into the Conv before them")
        if self.kept:
            node, reason = self.kept[0]
            more = f"; {len(self.kept) - 1} more" if len(self.kept) > 1 else ""
            parts.append(f"{len(self.kept)} kept ({node}: {reason}{more})")
        return "; ".join(parts) or None


def _attribute(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _float_constant(name: str, initializers: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    tensor = initializers.get(name)
    if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT:
        return None
    return numpy_helper.to_array(tensor).astype(np.float64)


def _channel_factors(node: onnx.NodeProto, initializers) -> tuple[np.ndarray, np.ndarray] | str:
    """(k, shift) with BN(x) = k·x + shift per channel, or the reason the node cannot be folded."""
    if len([o for o in node.output if o]) > 1 or _attribute(node, "training_mode", 0):
        return "training mode (batch statistics)"
    if not _attribute(node, "spatial", 1):  # opset < 9: statistics per (C, H, W), not per channel
        return "spatial=0 (statistics per position)"
    values = [_float_constant(name, initializers) for name in node.input[1:5]]
    if len(values) < 4 or any(v is None for v in values):
        return "scale, bias, mean or variance is not a constant float initializer"
    scale, bias, mean, var = values
    if any(v.ndim != 1 or v.shape != scale.shape for v in values):
        return "scale, bias, mean and variance are not 1-D of one length"
    with np.errstate(all="ignore"):
        k = scale / np.sqrt(var + _attribute(node, "epsilon", 1e-5))
        shift = bias - mean * k
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(shift))):
        return "its factors are not finite (variance + epsilon <= 0?)"
    return k, shift


def _layer_check(layer: onnx.NodeProto, channels: int, initializers, consumers, graph_outputs) -> str | None:
    """None when the BN's statistics can go into this Conv/Gemm, else why not."""
    if len(consumers[layer.output[0]]) > 1 or layer.output[0] in graph_outputs:
        return f"the output of {layer.name} is also read elsewhere"
    weight = initializers.get(layer.input[1]) if len(layer.input) > 1 else None
    if weight is None or weight.data_type != onnx.TensorProto.FLOAT:
        return f"the weight of {layer.name} is not a constant float initializer"
    bias = layer.input[2] if len(layer.input) > 2 else ""
    if bias and _float_constant(bias, initializers) is None:
        return f"the bias of {layer.name} is not a constant float initializer"
    if layer.op_type == "Gemm":
        if len(weight.dims) != 2:
            return f"the weight of {layer.name} has rank {len(weight.dims)}"
        out_channels = weight.dims[0] if _attribute(layer, "transB", 0) else weight.dims[1]
    else:
        if len(weight.dims) < 3:
            return f"the weight of {layer.name} has rank {len(weight.dims)}"
        out_channels = weight.dims[0]
    if out_channels != channels:
        return f"{layer.name} has {out_channels} output channels, the BatchNormalization {channels}"
    return None


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _set_tensor(graph: onnx.GraphProto, name: str, value: np.ndarray, initializers, replace: bool,
                taken: set[str], new_name: str | None = None) -> str:
    """Overwrite initializer `name` with `value`, or with `replace` add a new one (named `new_name`, else after
    `name`) and leave `name` to its other readers; returns the name used."""
    tensor = numpy_helper.from_array(value.astype(np.float32))
    if not replace:
        tensor.name = name
        initializers[name].CopyFrom(tensor)
        return name
    tensor.name = _unique(new_name or f"{name}_bnfold", taken)
    graph.initializer.append(tensor)
    initializers[tensor.name] = graph.initializer[-1]
    return tensor.name


def _fold(graph, layer, k, shift, initializers, consumers, graph_outputs, taken) -> None:
    """Scale the weight's output channels by k and set the bias so the layer computes k·layer(x) + shift."""
    weight = numpy_helper.to_array(initializers[layer.input[1]]).astype(np.float64)
    bias_name = layer.input[2] if len(layer.input) > 2 else ""
    bias = numpy_helper.to_array(initializers[bias_name]).astype(np.float64) if bias_name else np.zeros(())
    axis = 0
    if layer.op_type == "Gemm":
        axis = 0 if _attribute(layer, "transB", 0) else 1
        # alpha·A·B + beta·C: alpha stays on the product, beta goes into the new bias (beta 1 from now on).
        bias = bias * _attribute(layer, "beta", 1.0)
        for a in [a for a in layer.attribute if a.name == "beta"]:
            layer.attribute.remove(a)
    view = [1] * weight.ndim
    view[axis] = k.size
    new_weight = weight * k.reshape(view)
    new_bias = bias * k + shift  # channels are the last axis of a Gemm's C as of a Conv's bias

    def shared(name: str) -> bool:
        return len(consumers[name]) > 1 or name in graph_outputs

    layer.input[1] = _set_tensor(graph, layer.input[1], new_weight, initializers, shared(layer.input[1]), taken)
    # A bias that broadcast (a Gemm's scalar C) gets a new tensor of the channels' shape.
    replace = not bias_name or shared(bias_name) or bias.shape != new_bias.shape
    new_name = _set_tensor(graph, bias_name, new_bias, initializers, replace, taken,
                           None if bias_name else f"{layer.name}_bias")
    if bias_name:
        layer.input[2] = new_name
    else:
        layer.input.append(new_name)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def _per_channel(value: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """`value` as (channels,) when adding it to an (N, channels, ...) tensor of `rank` dims adds one number per
    channel (shapes (C, 1, 1), (1, C, 1, 1), ...), else None."""
    if value.ndim > rank:
        return None
    full = (1,) * (rank - value.ndim) + value.shape
    if full[0] != 1 or full[1] != channels or any(d != 1 for d in full[2:]):
        return None
    return value.reshape(channels)


def _fold_bias_adds(graph, initializers, producers, consumers, graph_outputs, taken) -> list[str]:
    """Conv + Add of a per-channel constant → the Conv with that constant in its bias; returns the Convs."""
    folded, removed = [], []
    for add in graph.node:
        if add.op_type != "Add" or add.domain not in _STANDARD or len(add.input) != 2:
            continue
        for index in (0, 1):
            conv, constant = producers.get(add.input[index]), add.input[1 - index]
            if conv is None or conv.op_type != "Conv" or conv.domain not in _STANDARD:
                continue
            weight = initializers.get(conv.input[1]) if len(conv.input) > 1 else None
            value = _float_constant(constant, initializers)
            if (weight is None or value is None or len(consumers[conv.output[0]]) != 1
                    or conv.output[0] in graph_outputs):
                continue
            channels = _per_channel(value, len(weight.dims), weight.dims[0])
            bias_name = conv.input[2] if len(conv.input) > 2 else ""
            bias = _float_constant(bias_name, initializers) if bias_name else np.zeros(weight.dims[0])
            if channels is None or bias is None or bias.shape != channels.shape:
                continue
            shared = bool(bias_name) and (len(consumers[bias_name]) > 1 or bias_name in graph_outputs)
            new_name = _set_tensor(graph, bias_name, bias + channels, initializers, not bias_name or shared, taken,
                                   None if bias_name else f"{conv.name}_bias")
            if bias_name:
                conv.input[2] = new_name
            else:
                conv.input.append(new_name)
            conv.output[0] = add.output[0]
            producers[add.output[0]] = conv
            removed.append(add)
            folded.append(conv.name)
            break
    for add in removed:
        graph.node.remove(add)
    return folded


def fold_batchnorm(model: onnx.ModelProto, in_place: bool = False) -> tuple[onnx.ModelProto, BatchNormReport]:
    """A copy of `model` (`model` itself with `in_place`) with each foldable BatchNormalization folded into the
    Conv/Gemm that feeds it.

    Foldable: inference form (one output, training_mode 0), constant float scale/bias/mean/var, and an input
    that only a Conv or Gemm with a constant float weight (and bias, if any) produces and nothing else reads.
    In a model with BatchNormalization, a Conv's following Add of a per-channel constant becomes its bias first.
    The layer's output takes the BN's output name, so the rest of the graph is unchanged. Other BN nodes stay,
    with the reason in the report.
    """
    if not in_place:
        model = copy.deepcopy(model)
    graph = model.graph
    report = BatchNormReport()
    initializers = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output if o}
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    taken = set(initializers) | set(producers) | {i.name for i in graph.input}
    if any(n.op_type == "BatchNormalization" for n in graph.node):
        report.bias_adds = _fold_bias_adds(graph, initializers, producers, consumers, graph_outputs, taken)
        consumers = _consumers(graph)  # the bias Adds are gone
    removed = []
    for node in graph.node:
        if node.op_type != "BatchNormalization" or node.domain not in _STANDARD:
            continue
        layer = producers.get(node.input[0])
        if layer is None or layer.op_type not in ("Conv", "Gemm") or layer.domain not in _STANDARD:
            report.kept.append((node.name, "its input does not come from a Conv or Gemm"))
            continue
        factors = _channel_factors(node, initializers)
        reason = factors if isinstance(factors, str) else _layer_check(layer, factors[0].size, initializers,
                                                                        consumers, graph_outputs)
        if reason is not None:
            report.kept.append((node.name, reason))
            continue
        _fold(graph, layer, *factors, initializers, consumers, graph_outputs, taken)
        folded_value = layer.output[0]
        layer.output[0] = node.output[0]
        producers[node.output[0]] = layer
        removed.append((node, folded_value))
        report.folded.append(FoldedBatchNorm(node.name, layer.name))
    for node, value in removed:
        graph.node.remove(node)
    gone = {value for _, value in removed}
    kept_info = [v for v in graph.value_info if v.name not in gone]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    drop_unused_initializers(graph)
    return model, report
