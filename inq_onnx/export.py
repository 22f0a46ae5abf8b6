"""Export: com.inq nodes back to standard Conv/Gemm/MatMul with decoded float weights, for runtimes without the
ops."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import large_models
from .errors import ConfigError, ModelError
from .graph_edit import drop_unused_initializers
from .integer_mode import float_mode_copy
from .packed_nodes import STANDARD_OP, packed_weight, shift_nodes
from .schemas import DOMAIN, FUSION_ATTRIBUTES, INTEGER_ATTRIBUTES, PACKING_ATTRIBUTES, POOL_ATTRIBUTES, SHIFT_MATMUL

__all__ = ["export_float", "export_qdq", "QdqExport", "QdqNote", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("float", "qdq")


class QdqNote(UserWarning):
    """A layer the QDQ form keeps float, and why (warned by api.export, printed by the CLI)."""


def _unfused(node: onnx.NodeProto, weight: str, taken: set[str], opset: int,
             constants: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """The standard nodes a com.inq node stands for: Conv/Gemm/MatMul, then Add of ShiftMatMul's bias, then Add
    of the summand, then Relu/Clip, then MaxPool.

    Intermediate values are named `<node>_op_out` / `<node>_bias_out` / `<node>_add_out` / `<node>_act_out`
    (made unique), so ranges recorded on one export apply to the next. Clip's bounds are appended to `constants`
    (opset 11+) or become attributes (older opsets).
    """
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    activation = attrs.get("activation", b"")
    activation = activation.decode() if isinstance(activation, bytes) else activation
    matmul = node.op_type == SHIFT_MATMUL
    bias = node.input[2] if matmul and len(node.input) > 2 and node.input[2] else None  # MatMul has no bias input
    summand = node.input[3] if len(node.input) > 3 and node.input[3] else None
    pool = [attrs.get(name) for name in POOL_ATTRIBUTES]
    steps = (["op"] + (["bias"] if bias else []) + (["add"] if summand else []) + (["act"] if activation else [])
             + (["pool"] if pool[0] else []))

    def fresh(suffix: str) -> str:
        name = f"{node.name}_{suffix}"
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    outputs = [fresh(f"{step}_out") for step in steps[:-1]] + [node.output[0]]
    inputs = [node.input[0], weight, *[i for i in node.input[2:3] if i and not matmul]]
    op = helper.make_node(STANDARD_OP[node.op_type], inputs, [outputs[0]], name=node.name)
    op.attribute.extend(copy.deepcopy(a) for a in node.attribute
                        if a.name not in (*PACKING_ATTRIBUTES, *FUSION_ATTRIBUTES, *POOL_ATTRIBUTES,
                                          *INTEGER_ATTRIBUTES))
    nodes = [op]
    if bias:
        nodes.append(helper.make_node("Add", [nodes[-1].output[0], bias], [outputs[len(nodes)]],
                                      name=f"{node.name}_bias"))
    if summand:
        nodes.append(helper.make_node("Add", [nodes[-1].output[0], summand], [outputs[len(nodes)]],
                                      name=f"{node.name}_add"))
    if activation == "Relu":
        nodes.append(helper.make_node("Relu", [nodes[-1].output[0]], [outputs[len(nodes)]], name=f"{node.name}_relu"))
    elif activation == "Clip":
        params = [float(v) for v in attrs.get("activation_params", ())]
        if len(params) != 2 or not params[0] <= params[1]:
            raise ModelError(f"node {node.name}: activation Clip needs activation_params [min, max] with min <= max, "
                             f"got {params}")
        low, high = params
        if opset < 11:
            clip = helper.make_node("Clip", [nodes[-1].output[0]], [outputs[len(nodes)]], name=f"{node.name}_clip",
                                    min=low, max=high)
        else:
            bounds = [fresh("clip_min"), fresh("clip_max")]
            constants += [numpy_helper.from_array(np.array(v, np.float32), b) for v, b in zip((low, high), bounds)]
            clip = helper.make_node("Clip", [nodes[-1].output[0], *bounds], [outputs[len(nodes)]],
                                    name=f"{node.name}_clip")
        nodes.append(clip)
    elif activation:
        raise ModelError(f"node {node.name}: unknown fused activation {activation!r}")
    if pool[0]:
        window = {k: list(v) for k, v in zip(("kernel_shape", "strides", "pads"), pool) if v is not None}
        nodes.append(helper.make_node("MaxPool", [nodes[-1].output[0]], [outputs[-1]], name=f"{node.name}_pool",
                                      **window))
    return nodes


def export_float(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every com.inq node is the standard op with its decoded float32 weight."""
    if not shift_nodes(model):
        raise ModelError("the model has no ShiftConv/ShiftGemm/ShiftMatMul nodes: nothing to export")
    model = float_mode_copy(model)  # no uint8 tensors between the nodes
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    decoded: dict[str, str] = {}
    taken = set(initializers) | {v for n in graph.node for v in (*n.input, *n.output, n.name)}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    constants: list[onnx.TensorProto] = []
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
        nodes.extend(_unfused(node, decoded[packed_name], taken, opset, constants))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    drop_unused_initializers(graph)
    if not any(n.domain == DOMAIN for n in graph.node):
        kept_opsets = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept_opsets)
    # The inq.* metadata describes the packed model; a float export is no longer one.
    kept_meta = [p for p in model.metadata_props if not p.key.startswith("inq.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept_meta)
    large_models.check_model(model)
    return model


@dataclass
class QdqExport:
    model: onnx.ModelProto
    quantized: list[str] = field(default_factory=list)  # layers that run as int8 (QLinearConv / QGemm)
    notes: list[str] = field(default_factory=list)  # layers kept float, and why
    ranges_from: str = ""  # "data", "ranges" or "metadata"


def export_qdq(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]] | None = None,
               inputs: Mapping[str, np.ndarray] | None = None, *, batch_size: int = 256,
               strict: bool = False) -> QdqExport:
    """The int8 QDQ form of a com.inq model: its exact INQ weights as int8 with power-of-two scales, u8
    activations with calibrated scales, for onnxruntime to fuse into QLinearConv / QGemm.

    Activation ranges (keyed by tensor names of `export_float(model)`) come from `ranges`, else from
    calibration on `inputs`, else from the model's `inq.activation_ranges` metadata. A layer whose weights
    int8 cannot hold exactly stays float with a note, or raises ModelError when `strict`.
    """
    from . import calibrate, qdq

    if ranges is not None and inputs is not None:
        raise ConfigError("give activation ranges or calibration inputs, not both")
    layers = {n.name for n in shift_nodes(model)}
    float_model = export_float(model)
    stored = calibrate.metadata_ranges(model)
    if ranges is not None:
        source = "ranges"
    elif inputs is not None:
        ranges, source = calibrate.activation_ranges(float_model, inputs, batch_size), "data"
    elif stored is not None:
        ranges, source = stored, "metadata"
    else:
        raise ModelError("QDQ export needs activation ranges: it needs --data or a model converted with "
                         "--activations int8")
    result = qdq.insert_qdq(float_model, layers, ranges, strict)
    return QdqExport(result.model, result.quantized, result.notes, source)
