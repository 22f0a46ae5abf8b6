"""Load and normalize: a checked copy of the model with constants as initializers and every node named."""

from __future__ import annotations

import copy

import onnx
from onnx import numpy_helper

from .errors import ModelError

__all__ = ["normalize_model"]


def _fold_constants(graph: onnx.GraphProto) -> None:
    """Constant nodes holding a tensor become initializers, so weights given either way are found alike."""
    kept = []
    for node in graph.node:
        value = [a for a in node.attribute if a.name == "value"] if node.op_type == "Constant" else []
        if node.domain in ("", "ai.onnx") and value and len(node.output) == 1:
            tensor = numpy_helper.from_array(numpy_helper.to_array(value[0].t), node.output[0])
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give unnamed or duplicate-named nodes a unique `<OpType>_<index>` name (used by --exclude and reports)."""
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            name = f"{node.op_type}_{index}"
            while name in seen:
                name += "_"
            node.name = name
        seen.add(node.name)


def _fill_output_shapes(model: onnx.ModelProto) -> None:
    """onnx.checker wants a shape on every graph output; some converters leave it out. Infer the missing ones."""
    missing = [o for o in model.graph.output if o.type.HasField("tensor_type") and
               not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the checker below reports what is wrong
        return
    shapes = {o.name: o.type for o in inferred.graph.output}
    for output in missing:
        if output.name in shapes and shapes[output.name].tensor_type.HasField("shape"):
            output.type.CopyFrom(shapes[output.name])


def normalize_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A normalized copy; the caller's model is left as it is."""
    model = copy.deepcopy(model)
    _fill_output_shapes(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ModelError(f"the model does not pass onnx.checker: {first_line}") from None
    graph = model.graph
    _fold_constants(graph)
    # Old models list initializers as graph inputs too, which makes them overridable, not constant.
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(inputs)
    _name_nodes(graph)
    if model.ir_version < 4:
        model.ir_version = 4
    return model
