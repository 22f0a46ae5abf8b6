"""Rewrite: quantized Conv/Gemm/MatMul nodes become com.inq ShiftConv/ShiftGemm/ShiftMatMul with bit-packed
weights."""

from __future__ import annotations

import copy
from typing import Mapping

import onnx
from onnx import helper, numpy_helper

from . import large_models, packing, schemas
from .errors import ModelError
from .fusion import fuse as fuse_following_ops
from .graph_edit import copy_model, drop_unused_initializers
from .layers import Layer
from .quantizer import LayerLevels

__all__ = ["rewrite_model", "REPLACEMENT_OP"]

# A MatMul whose input is known to be 2-D becomes a ShiftGemm instead (`_replacement`).
REPLACEMENT_OP = {"Conv": schemas.SHIFT_CONV, "Gemm": schemas.SHIFT_GEMM, "MatMul": schemas.SHIFT_MATMUL}


def _packed_name(weight: str, bits: int, taken: set[str]) -> str:
    name = f"{weight}_inq{bits}"
    while name in taken:
        name += "_"
    return name


def _input_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every value shape inference can tell."""
    try:
        inferred = large_models.infer_shapes(model, strict_mode=False)
    except Exception:  # unknown ranks only make the rewrite pick the general op
        return {}
    g = inferred.graph
    return {v.name: len(v.type.tensor_type.shape.dim) for v in (*g.input, *g.value_info, *g.output)
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}


def _read_names(graph: onnx.GraphProto) -> dict[str, set[str]]:
    """The nodes (by name, subgraphs' included) that read each value."""
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name)
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                for name, nodes in _read_names(sub).items():
                    readers.setdefault(name, set()).update(nodes)
    return readers


def _replaced_only(model: onnx.ModelProto, layers: list[Layer]) -> set[str]:
    """Weights that only the replaced nodes read: the copy leaves them out (they go, packed) rather than copy
    them first."""
    replaced = {layer.node for layer in layers} | {layer.bias_add for layer in layers if layer.bias_add}
    readers = _read_names(model.graph)
    outputs = {o.name for o in model.graph.output}
    return {layer.weight for layer in layers
            if layer.weight not in outputs and readers.get(layer.weight, set()) <= replaced}


def _replacement(node: onnx.NodeProto, layer: Layer, levels: LayerLevels, packed: str, outputs: list[str],
                 input_rank: int | None) -> onnx.NodeProto:
    op = REPLACEMENT_OP[node.op_type]
    inputs = [node.input[0], packed, *node.input[2:3]]
    if node.op_type == "MatMul":
        # x·W + b on a 2-D x is Gemm's product with C = b: ShiftGemm, which the integer QDQ export also covers.
        op = schemas.SHIFT_GEMM if input_rank == 2 else schemas.SHIFT_MATMUL
        inputs = [node.input[0], packed, *([layer.bias] if layer.bias else [])]
    new = helper.make_node(op, inputs, outputs, name=node.name, domain=schemas.DOMAIN,
                           bits=levels.bits, weight_shape=list(layer.shape), exponent_base=levels.exponent_base)
    # The standard op's own attributes (pads, group, transB, alpha, ...) keep their meaning unchanged.
    new.attribute.extend(copy.deepcopy(a) for a in node.attribute)
    return new


def rewrite_model(model: onnx.ModelProto, layers: list[Layer], levels: Mapping[str, LayerLevels],
                  metadata: Mapping[str, str] | None = None, fuse: bool = True) -> onnx.ModelProto:
    """A copy of `model` with each layer's node replaced; its weight must already be INQ levels (the copy never
    holds the float weights that only those nodes read).

    `levels` maps a layer's weight name to its levels. The float weights that no node uses any more are dropped.
    A MatMul layer's bias Add (`Layer.bias_add`) becomes part of its replacement. With `fuse`, a residual Add
    and a Relu/Clip after a replaced node are fused into it (`fusion.RULES`).
    """
    ranks = _input_ranks(model) if any(layer.op_type == "MatMul" for layer in layers) else {}
    source = {t.name: t for t in model.graph.initializer}
    model = copy_model(model, {name: lambda: None for name in _replaced_only(model, layers)})
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    by_node = {layer.node: layer for layer in layers}
    folded = {layer.bias_add: layer for layer in layers if layer.bias_add}
    nodes_by_name = {n.name: n for n in graph.node}
    taken = set(initializers) | {v for n in graph.node for v in (*n.input, *n.output)}
    packed_names: dict[str, str] = {}
    new_nodes = []
    for node in graph.node:
        if node.name in folded:
            continue
        layer = by_node.get(node.name)
        if layer is None:
            new_nodes.append(node)
            continue
        layer_levels = levels[layer.weight]
        if layer.weight not in packed_names:
            weight = numpy_helper.to_array(source[layer.weight])
            try:
                data = packing.pack_weight(weight, layer_levels.bits, layer_levels.exponent_base,
                                           layer.channel_axis)
            except Exception as exc:
                raise ModelError(f"cannot pack the weight of node {node.name}: {exc}") from None
            name = _packed_name(layer.weight, layer_levels.bits, taken)
            taken.add(name)
            graph.initializer.append(numpy_helper.from_array(data, name))
            packed_names[layer.weight] = name
        outputs = list(nodes_by_name[layer.bias_add].output) if layer.bias_add else list(node.output)
        new_nodes.append(_replacement(node, layer, layer_levels, packed_names[layer.weight], outputs,
                                      ranks.get(node.input[0])))
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(o.domain == schemas.DOMAIN for o in model.opset_import):
        model.opset_import.append(schemas.opset_import())
    schemas.register_schemas()
    drop_unused_initializers(graph)  # the float weights: shape inference in the rules then sees a small model
    if fuse:  # after the opset import: the rules need shape inference through the com.inq ops
        fuse_following_ops(model)
        drop_unused_initializers(graph)  # the Clip bounds fused away

    for key, value in (metadata or {}).items():
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, str(value)

    large_models.check_model(model, full_check=True)
    return model
