"""Structural passes: the checker, graph inputs that are initializers, node names, inferred shapes, and the
attributes of the layers inq-onnx rewrites, so that a malformed model is refused with its reason."""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import helper

from .. import large_models
from ..errors import ModelError

__all__ = ["check_model", "check_text", "check_tensors", "check_input_dims", "fill_output_shapes",
           "drop_initializer_inputs", "drop_identities", "name_nodes", "infer_shapes", "check_layers"]


def _first_line(exc: Exception, limit: int = 240) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = re.sub(r"\[\w+Error\] (Inference error\(s\): )?", "", line)
    # "(op_type:Conv, node name: c1): W has ..." -> "node c1 (Conv): W has ..."
    line = re.sub(r"^\(op_type:(\w+), node name: ([^)]*)\):\s*", r"node \2 (\1): ", line)
    return line[:limit] + ("..." if len(line) > limit else "")


def fill_output_shapes(model: onnx.ModelProto) -> list[str]:
    """onnx.checker wants a shape on every graph output; some converters leave it out. Infer the missing ones."""
    missing = [o for o in model.graph.output if o.type.HasField("tensor_type") and
               not o.type.tensor_type.HasField("shape")]
    if not missing:
        return []
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the checker reports what is wrong
        return []
    shapes = {o.name: o.type for o in inferred.graph.output}
    for output in missing:
        if output.name in shapes and shapes[output.name].tensor_type.HasField("shape"):
            output.type.CopyFrom(shapes[output.name])
    return []


def check_model(model: onnx.ModelProto) -> list[str]:
    """onnx.checker's verdict as a ModelError: dangling or cyclic inputs, duplicate outputs, unknown ops, ...
    (on stand-ins for the tensors of a model past 2 GB, large_models.check_model)."""
    try:
        large_models.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"the model does not pass onnx.checker: {_first_line(exc)}") from None
    return []


def check_text(model: onnx.ModelProto) -> list[str]:
    """Names that are text: protobuf hands strings that are not UTF-8 over as bytes, which nothing downstream reads."""
    graph = model.graph
    for index, node in enumerate(graph.node):
        names = [node.name, node.op_type, node.domain, *node.input, *node.output, *(a.name for a in node.attribute)]
        if any(isinstance(name, bytes) for name in names):
            raise ModelError(f"node {index} ({node.op_type!r}) has a name that is not UTF-8 text")
    for value in [*graph.input, *graph.output, *graph.initializer, *graph.value_info]:
        if isinstance(value.name, bytes):
            raise ModelError(f"the graph has a value or initializer named {value.name[:40]!r}, not UTF-8 text")
    return []


# Dims past this are no tensor anyone runs; onnxruntime and numpy would fail on them far from the cause.
MAX_DIM = 2**31 - 1


def check_tensors(model: onnx.ModelProto) -> list[str]:
    """Initializers of a known type whose stored bytes fit their dims exactly (the checker lets some through)."""
    for tensor in model.graph.initializer:
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"initializer {tensor.name} has an unknown data type {tensor.data_type}") from None
        if any(d < 0 or d > MAX_DIM for d in tensor.dims):
            raise ModelError(f"initializer {tensor.name} has dims {list(tensor.dims)}")
        count = int(np.prod(tensor.dims, dtype=object))
        if tensor.HasField("raw_data") and dtype.kind != "O" and tensor.data_type not in _SUB_BYTE:
            if len(tensor.raw_data) != count * dtype.itemsize:
                raise ModelError(f"initializer {tensor.name} holds {len(tensor.raw_data)} bytes, its dims "
                                 f"{list(tensor.dims)} of {dtype} need {count * dtype.itemsize}")
    return []


_SUB_BYTE = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
             if hasattr(onnx.TensorProto, name)}


def check_input_dims(model: onnx.ModelProto) -> list[str]:
    """Graph inputs and outputs with dims onnxruntime can run: none negative or past MAX_DIM."""
    for value in [*model.graph.input, *model.graph.output]:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and not 0 <= dim.dim_value <= MAX_DIM:
                raise ModelError(f"{value.name} has dimension {dim.dim_value} on axis {axis}")
    return []


def drop_initializer_inputs(model: onnx.ModelProto) -> list[str]:
    """Initializers also listed as graph inputs (as IR < 4 required) stay constants: they leave the inputs."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dropped = len(graph.input) - len(inputs)
    if not dropped:
        return []
    del graph.input[:]
    graph.input.extend(inputs)
    return [f"{dropped} initializer(s) also listed as graph inputs (as IR < 4 files list them) are treated as "
            f"constants"]


def drop_identities(model: onnx.ModelProto) -> list[str]:
    """Identity nodes between two ops are dropped (their readers read the Identity's input), so that patterns
    such as Conv → Add → Identity → BatchNormalization (Paddle's export) are seen as written. An Identity that
    produces a graph output stays."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.input) == 1
                and len(node.output) == 1 and node.output[0] not in outputs):
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
            continue
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        kept.append(node)
    if not alias:
        return []
    del graph.node[:]
    graph.node.extend(kept)
    dropped = set(alias)
    infos = [v for v in graph.value_info if v.name not in dropped]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return [f"{len(alias)} Identity node(s) removed"]


def name_nodes(model: onnx.ModelProto) -> list[str]:
    """Give unnamed or duplicate-named nodes a unique `<OpType>_<index>` name (used by --exclude and reports)."""
    seen: set[str] = set()
    renamed = 0
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            renamed += bool(node.name)
            name = f"{node.op_type}_{index}"
            while name in seen:
                name += "_"
            node.name = name
        seen.add(node.name)
    return [f"{renamed} node(s) with a duplicate name renamed"] if renamed else []


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes inferred in strict mode (dynamic dims stay symbolic): a weight of the wrong type, non-positive
    strides or pads of the wrong length are ModelErrors naming the node."""
    del model.graph.value_info[:]  # stale hints from the exporter are inferred again
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"the model is inconsistent: {_first_line(exc)}") from None


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _conv_problem(node: onnx.NodeProto, shapes: dict) -> str | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    group = attrs.get("group", 1)
    weight, data = shapes.get(node.input[1]), shapes.get(node.input[0])
    if group < 1:
        return f"group is {group}"
    if weight is None or not weight:
        return None
    if weight[0] is not None and weight[0] % group:
        return f"{weight[0]} output channels do not split into {group} groups"
    if data and len(data) > 1 and data[1] is not None and weight[1] is not None and data[1] != weight[1] * group:
        return f"input has {data[1]} channels, the weight takes {weight[1]} x group {group}"
    kernel = attrs.get("kernel_shape")
    if kernel is not None and list(kernel) != [d for d in weight[2:]]:
        return f"kernel_shape {list(kernel)} does not match the weight's {weight[2:]}"
    return None


def check_layers(model: onnx.ModelProto) -> list[str]:
    """What shape inference lets through but onnxruntime refuses at run time, for Conv nodes."""
    shapes = _shapes(model)
    for node in model.graph.node:
        if node.op_type == "Conv" and node.domain in ("", "ai.onnx") and len(node.input) > 1:
            problem = _conv_problem(node, shapes)
            if problem:
                raise ModelError(f"node {node.name} (Conv): {problem}")
    return []


