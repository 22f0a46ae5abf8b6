"""Export: com.inq nodes back to standard Conv/Gemm with decoded float weights, for runtimes without the ops."""

from __future__ import annotations

import copy

import onnx
from onnx import helper, numpy_helper

from .errors import ModelError
from .packed_nodes import STANDARD_OP, packed_weight, shift_nodes
from .schemas import DOMAIN, PACKING_ATTRIBUTES

__all__ = ["export_float", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("float",)


def export_float(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every ShiftConv/ShiftGemm is the standard op with its decoded float32 weight."""
    if not shift_nodes(model):
        raise ModelError("the model has no ShiftConv/ShiftGemm nodes: nothing to export")
    model = copy.deepcopy(model)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    decoded: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type not in STANDARD_OP:
            nodes.append(node)
            continue
        packed_name = node.input[1]
        if packed_name not in decoded:
            weight = packed_weight(node, initializers).decode()
            name = f"{packed_name}_float"
            graph.initializer.append(numpy_helper.from_array(weight, name))
            decoded[packed_name] = name
        standard = helper.make_node(STANDARD_OP[node.op_type], [node.input[0], decoded[packed_name], *node.input[2:]],
                                    list(node.output), name=node.name)
        standard.attribute.extend(copy.deepcopy(a) for a in node.attribute if a.name not in PACKING_ATTRIBUTES)
        nodes.append(standard)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(n.domain == DOMAIN for n in graph.node):
        kept_opsets = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept_opsets)
    # The inq.* metadata describes the packed model; a float export is no longer one.
    kept_meta = [p for p in model.metadata_props if not p.key.startswith("inq.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept_meta)
    onnx.checker.check_model(model)
    return model
