"""Constant folding: nodes whose inputs are all constants become initializers, so that weights computed by
constant subgraphs (Constant, ConstantOfShape, Identity, Cast, Reshape, Transpose, Mul, Concat, ...) are found
like stored ones."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..large_models import held_array

__all__ = ["fold_constants", "MAX_FOLDED_BYTES"]

# A fold materializes its output: a tiny ConstantOfShape or Expand may describe gigabytes. Weights are far
# smaller than this; bigger outputs stay nodes (with a note).
MAX_FOLDED_BYTES = 256 << 20
# Inputs up to this many elements go to shape inference with their values (shapes, axes, repeats).
_SMALL_INPUT = 1024
# Not functions of their inputs, or not tensors in, tensors out.
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
               "Dropout", "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "SequenceInsert",
               "SequenceAt", "SequenceErase", "SequenceLength", "SplitToSequence", "ConcatFromSequence",
               "Optional", "OptionalGetElement", "OptionalHasElement"}


def _names_used(graph: onnx.GraphProto) -> set[str]:
    """Every value a node of `graph` or of its subgraphs reads, and the graph outputs."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                used |= _names_used(sub)
    return used


def _foldable(node: onnx.NodeProto, constants: dict, outputs: set[str]) -> bool:
    return (node.domain in ("", "ai.onnx") and node.op_type not in _NOT_FOLDED
            and all(not name or name in constants for name in node.input)
            and not any(name in outputs for name in node.output)
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute))


def _single_node_model(node: onnx.NodeProto, values: dict[str, np.ndarray], opsets) -> onnx.ModelProto:
    """The node alone, its constant inputs as graph inputs (the small ones also as initializers, for shape
    inference to read shapes and axes)."""
    names = [name for name in dict.fromkeys(node.input) if name]
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(values[name].dtype),
                                            values[name].shape) for name in names]
    small = [numpy_helper.from_array(values[name], name) for name in names if values[name].size <= _SMALL_INPUT]
    graph = helper.make_graph([node], "fold", inputs, [helper.make_value_info(o, onnx.TypeProto())
                                                        for o in node.output if o], small)
    return helper.make_model(graph, opset_imports=opsets)


def _output_bytes(model: onnx.ModelProto) -> int | None:
    """Bytes of the node's outputs from shape inference, None when a shape is unknown."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # the node is left as it is; the model's own check reports what is wrong
        return None
    total = 0
    for output in inferred.graph.output:
        tensor = output.type.tensor_type
        if not output.type.HasField("tensor_type") or not tensor.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if any(d < 0 for d in dims):
            return None
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
        total += int(np.prod(dims, dtype=object)) * itemsize
    return total


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], opsets) -> tuple[list[np.ndarray] | None, str]:
    """The node's outputs, or None and why not."""
    from onnx.reference import ReferenceEvaluator

    model = _single_node_model(node, values, opsets)
    size = _output_bytes(model)
    if size is None:
        return None, "its output size is unknown before running it"
    if size > MAX_FOLDED_BYTES:
        return None, f"its output would take {size / 2**20:.0f} MiB (limit {MAX_FOLDED_BYTES >> 20} MiB)"
    try:
        results = ReferenceEvaluator(model).run(None, {name: values[name] for name in node.input if name})
    except Exception as exc:  # an op the reference evaluator lacks, or values it rejects
        return None, f"it cannot be evaluated ({type(exc).__name__}: {str(exc).strip()[:120]})"
    arrays = [np.asarray(r) for r in results]
    if sum(a.nbytes for a in arrays) > MAX_FOLDED_BYTES or any(a.dtype == object for a in arrays):
        return None, "its output is not a tensor of the expected size"
    return arrays, ""


def fold_constants(model: onnx.ModelProto, held: Mapping[str, bytes] | None = None) -> list[str]:
    """Fold, in place, every node whose inputs are all constants; notes say what was folded and what was not.
    `held`: the data of initializers held aside (large_models.held_copy), by name."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    held = held or {}
    # Tensors whose data is elsewhere and not held here are not folded; held ones are read when a node needs them.
    constants: dict[str, onnx.TensorProto | np.ndarray] = {
        name: t for name, t in initializers.items() if t.data_location != onnx.TensorProto.EXTERNAL or name in held}
    outputs = {o.name for o in graph.output}
    values: dict[str, np.ndarray] = {}
    opsets = list(model.opset_import)
    kept, folded, left = [], {}, []
    for node in graph.node:
        if not _foldable(node, constants, outputs):
            kept.append(node)
            continue
        for name in node.input:
            if name and name not in values:
                value = constants[name]
                values[name] = (value if isinstance(value, np.ndarray) else
                                held_array(value, held[name]) if name in held else numpy_helper.to_array(value))
        arrays, why = _evaluate(node, values, opsets)
        if arrays is None:
            left.append(f"{node.name} ({node.op_type}): {why}")
            kept.append(node)
            continue
        for name, array in zip(node.output, arrays):
            if name:
                values[name] = constants[name] = array
        folded[node.op_type] = folded.get(node.op_type, 0) + 1
    if not folded:
        return _left_note(left)
    del graph.node[:]
    graph.node.extend(kept)
    used = _names_used(graph)
    added = [name for name, value in constants.items() if name not in initializers and name in used]
    graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in added)
    # Initializers only the folded nodes read (ConstantOfShape's shape, a Reshape's target) are dropped.
    read_by_folded = {name for name in values if name in initializers and name not in used}
    for index in reversed([i for i, t in enumerate(graph.initializer) if t.name in read_by_folded]):
        del graph.initializer[index]  # in place: re-adding the kept ones would copy every tensor
    ops = ", ".join(f"{count} {op}" for op, count in sorted(folded.items(), key=lambda item: -item[1]))
    notes = [f"folded {sum(folded.values())} constant node(s) ({ops}) into {len(added)} initializer(s)"]
    return notes + _left_note(left)


def _left_note(left: list[str], shown: int = 3) -> list[str]:
    if not left:
        return []
    more = f"; ... ({len(left) - shown} more)" if len(left) > shown else ""
    return [f"{len(left)} constant node(s) left unfolded: {'; '.join(left[:shown])}{more}"]
