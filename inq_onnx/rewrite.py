"""Rewrite: quantized Conv/Gemm nodes become com.inq ShiftConv/ShiftGemm with bit-packed weights."""

from __future__ import annotations

import copy
from typing import Mapping

import onnx
from onnx import helper, numpy_helper

from . import packing, schemas
from .errors import ModelError
from .fusion import fuse as fuse_following_ops
from .layers import Layer
from .quantizer import LayerLevels

__all__ = ["rewrite_model", "REPLACEMENT_OP"]

REPLACEMENT_OP = {"Conv": schemas.SHIFT_CONV, "Gemm": schemas.SHIFT_GEMM}


def _packed_name(weight: str, bits: int, taken: set[str]) -> str:
    name = f"{weight}_inq{bits}"
    while name in taken:
        name += "_"
    return name


def _replacement(node: onnx.NodeProto, layer: Layer, levels: LayerLevels, packed: str) -> onnx.NodeProto:
    new = helper.make_node(REPLACEMENT_OP[node.op_type], [node.input[0], packed, *node.input[2:3]],
                           list(node.output), name=node.name, domain=schemas.DOMAIN,
                           bits=levels.bits, weight_shape=list(layer.shape), exponent_base=levels.exponent_base)
    # The standard op's own attributes (pads, group, transB, alpha, ...) keep their meaning unchanged.
    new.attribute.extend(copy.deepcopy(a) for a in node.attribute)
    return new


def rewrite_model(model: onnx.ModelProto, layers: list[Layer], levels: Mapping[str, LayerLevels],
                  metadata: Mapping[str, str] | None = None, fuse: bool = True) -> onnx.ModelProto:
    """A copy of `model` with each layer's node replaced; its weight must already be INQ levels.

    `levels` maps a layer's weight name to its levels. The float weights that no node uses any more are dropped.
    With `fuse`, a residual Add and a Relu/Clip after a replaced node are fused into it (`fusion.RULES`).
    """
    model = copy.deepcopy(model)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    by_node = {layer.node: layer for layer in layers}
    taken = set(initializers) | {v for n in graph.node for v in (*n.input, *n.output)}
    packed_names: dict[str, str] = {}
    new_nodes = []
    for node in graph.node:
        layer = by_node.get(node.name)
        if layer is None:
            new_nodes.append(node)
            continue
        layer_levels = levels[layer.weight]
        if layer.weight not in packed_names:
            weight = numpy_helper.to_array(initializers[layer.weight])
            try:
                data = packing.pack_weight(weight, layer_levels.bits, layer_levels.exponent_base,
                                           layer.channel_axis)
            except Exception as exc:
                raise ModelError(f"cannot pack the weight of node {node.name}: {exc}") from None
            name = _packed_name(layer.weight, layer_levels.bits, taken)
            taken.add(name)
            graph.initializer.append(numpy_helper.from_array(data, name))
            packed_names[layer.weight] = name
        new_nodes.append(_replacement(node, layer, layer_levels, packed_names[layer.weight]))
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(o.domain == schemas.DOMAIN for o in model.opset_import):
        model.opset_import.append(schemas.opset_import())
    schemas.register_schemas()
    if fuse:  # after the opset import: the rules need shape inference through the com.inq ops
        fuse_following_ops(model)

    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)

    for key, value in (metadata or {}).items():
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, str(value)

    onnx.checker.check_model(model, full_check=True)
    return model
