"""Turns an inference model into one onnxruntime-training 1.19 can differentiate (pure `model -> model` steps).

Each function returns a new model and leaves its argument untouched:

- `prepare_forward_model`: IR version <= 10, ai.onnx opset in [12, 21], initializers removed from the graph inputs,
  every non-batch input dim fixed to the data's shape (ORT's MaxPool gradient crashes on symbolic spatial dims),
  ops without a gradient in ORT decomposed into ops with one (`decompose`), inference-mode Dropout made
  an Identity and BatchNormalization an inference-mode Mul/Add (ORT would train both in training mode), shapes
  inferred.
- `strip_trailing_softmax`: the first output becomes the logits feeding a trailing Softmax/LogSoftmax.
- `keep_outputs`: keeps only some graph outputs and drops the nodes nothing needs any more.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inq_onnx.errors import DataError, ModelError
from inq_onnx.training._ort_import import MAX_IR_VERSION, MAX_ONNX_OPSET
from inq_onnx.training.decompose import Context, decompose

__all__ = ["BATCH_DIM", "MIN_ONNX_OPSET", "prepare_forward_model", "strip_trailing_softmax", "keep_outputs",
           "consumed_names", "graph_input_names", "onnx_opset", "value_shapes"]

BATCH_DIM = "N"
# SoftmaxCrossEntropyLoss needs opset 12; Clip takes min/max as inputs from opset 11.
MIN_ONNX_OPSET = 12


def onnx_opset(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset version."""
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    raise ModelError("the model imports no ai.onnx opset")


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    """Names of the graph inputs that are real inputs, not initializers listed as inputs (IR < 4 style)."""
    initializers = {init.name for init in model.graph.initializer}
    return [inp.name for inp in model.graph.input if inp.name not in initializers]


def value_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Shape of every typed value in the graph: an int, a symbol or None per dim."""
    shapes = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in tensor_type.shape.dim]
    return shapes


def prepare_forward_model(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """A copy of `model` that onnxruntime-training 1.19 can load and differentiate, with concrete non-batch shapes."""
    prepared = copy.deepcopy(model)
    _check_no_functions(prepared)
    initializer_names = {init.name for init in prepared.graph.initializer}
    kept_inputs = [inp for inp in prepared.graph.input if inp.name not in initializer_names]
    del prepared.graph.input[:]
    prepared.graph.input.extend(kept_inputs)

    opset = onnx_opset(prepared)
    if opset < MIN_ONNX_OPSET or opset > MAX_ONNX_OPSET:
        prepared = _convert_opset(prepared, min(max(opset, MIN_ONNX_OPSET), MAX_ONNX_OPSET))
    prepared.ir_version = MAX_IR_VERSION

    _fix_input_shapes(prepared, input_shapes)
    del prepared.graph.value_info[:]
    declared_outputs = {out.name: copy.deepcopy(out) for out in prepared.graph.output}
    for out in prepared.graph.output:  # re-inferred below, so that a batch dim fixed in the model becomes symbolic
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    prepared = _infer_shapes(prepared)
    _rewrite_for_training(prepared)
    del prepared.graph.value_info[:]
    prepared = _infer_shapes(prepared)
    for out in prepared.graph.output:
        if out.type.HasField("tensor_type") and not out.type.tensor_type.HasField("shape"):
            out.CopyFrom(declared_outputs[out.name])
    _check_pool_shapes(prepared)
    return prepared


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ModelError(f"shape inference failed on the training copy of the model: {exc}") from exc


def strip_trailing_softmax(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """Makes the first output the logits if it comes from a Softmax/LogSoftmax over the class axis.

    Returns the new model and the op type removed (None when the first output is left as is).
    """
    output_name = model.graph.output[0].name
    producer = next((node for node in model.graph.node if output_name in node.output), None)
    if producer is None or producer.op_type not in ("Softmax", "LogSoftmax"):
        return model, None
    consumers = [node for node in model.graph.node if output_name in node.input]
    other_outputs = [out for out in model.graph.output[1:] if out.name == output_name]
    rank = len(value_shapes(model).get(output_name, []))
    axis = next((attr.i for attr in producer.attribute if attr.name == "axis"), -1 if onnx_opset(model) >= 13 else 1)
    if consumers or other_outputs or rank != 2 or axis not in (1, -1):
        return model, None
    stripped = copy.deepcopy(model)
    logits_name = producer.input[0]
    stripped.graph.node.remove(next(node for node in stripped.graph.node if output_name in node.output))
    logits_info = next((info for info in stripped.graph.value_info if info.name == logits_name), None)
    new_output = copy.deepcopy(logits_info) if logits_info is not None else copy.deepcopy(stripped.graph.output[0])
    new_output.name = logits_name
    stripped.graph.output[0].CopyFrom(new_output)
    return stripped, producer.op_type


def keep_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy with only the graph outputs `names` (in that order) and the nodes they depend on."""
    pruned = copy.deepcopy(model)
    by_name = {out.name: out for out in pruned.graph.output}
    outputs = [copy.deepcopy(by_name[name]) for name in names]
    del pruned.graph.output[:]
    pruned.graph.output.extend(outputs)

    needed = set(names)
    kept = []
    for node in reversed(pruned.graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(_node_inputs(node))
    kept.reverse()
    del pruned.graph.node[:]
    pruned.graph.node.extend(kept)
    return pruned


def consumed_names(model: onnx.ModelProto) -> set[str]:
    """Every value name some node of the graph (or of its subgraphs) reads."""
    return set().union(*(_node_inputs(node) for node in model.graph.node))


def _node_inputs(node: onnx.NodeProto) -> set[str]:
    """The node's inputs, including the outer-scope values its subgraphs (If/Loop/Scan bodies) read."""
    names = {name for name in node.input if name}
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                names.update(_node_inputs(inner))
    return names


def _check_no_functions(model: onnx.ModelProto) -> None:
    if len(model.functions):
        raise ModelError("models with local functions are not supported for training; inline them first "
                         "(onnx.inliner.inline_local_functions)")


def _convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    try:
        return onnx.version_converter.convert_version(model, target)
    except Exception as exc:  # the converter raises plain RuntimeError/ValueError on unsupported ops
        raise ModelError(f"cannot convert the model from opset {onnx_opset(model)} to opset {target}, which "
                         f"onnxruntime-training 1.19 needs: {exc}") from exc


def _fix_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Batch dim symbolic (BATCH_DIM), every other dim fixed to the data's per-sample shape."""
    names = graph_input_names(model)
    missing = [name for name in names if name not in input_shapes]
    extra = [name for name in input_shapes if name not in names]
    if missing or extra:
        raise DataError(f"the data's inputs do not match the model's: model inputs {names}, "
                        f"data inputs {sorted(input_shapes)}")
    for inp in model.graph.input:
        if inp.name not in input_shapes:
            continue
        sample_shape = tuple(int(d) for d in input_shapes[inp.name])
        if not inp.type.HasField("tensor_type"):
            raise ModelError(f"input {inp.name!r} is not a tensor")
        dims = inp.type.tensor_type.shape.dim
        if inp.type.tensor_type.HasField("shape") and len(dims) != len(sample_shape) + 1:
            raise DataError(f"input {inp.name!r} has rank {len(dims)} in the model but the data's samples have "
                            f"shape {sample_shape} (rank {len(sample_shape)} plus the batch dim expected)")
        for i, (dim, size) in enumerate(zip(list(dims)[1:], sample_shape), start=1):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise DataError(f"input {inp.name!r}: dim {i} is {dim.dim_value} in the model but {size} in the data")
        new_shape = [BATCH_DIM, *sample_shape]
        inp.type.tensor_type.ClearField("shape")
        for size in new_shape:
            dim = inp.type.tensor_type.shape.dim.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


class _Editor:
    """Fresh names and scalar/vector constants for rewriting a graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.taken = {name for node in graph.node for name in [*node.input, *node.output, node.name]}
        self.taken.update(init.name for init in graph.initializer)
        self.taken.update(inp.name for inp in graph.input)

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def constant(self, base: str, value, dtype=np.float32) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str | None, base: str) -> tuple[onnx.NodeProto, str]:
        output = output or self.fresh(f"{base}/{op_type.lower()}")
        return helper.make_node(op_type, inputs, [output], name=self.fresh(f"{base}/{op_type}")), output


def _rewrite_for_training(model: onnx.ModelProto) -> None:
    """Replaces ops ORT-training cannot differentiate, or would differentiate in training mode, by equivalents.

    Ops without a gradient (HardSigmoid, Elu, ...): equal differentiable ops (`decompose`). Inference-mode Dropout
    is the identity but its gradient needs the mask output: Identity. ORT turns BatchNormalization into its
    training form (batch statistics); keep the inference semantics (running statistics, as in the exported
    model) with Mul/Add on folded scale and shift.
    """
    graph = model.graph
    editor = _Editor(graph)
    shapes = value_shapes(model)
    context = Context(frozenset(init.name for init in graph.initializer), shapes)
    new_nodes = []
    for node in graph.node:
        replacement = decompose(editor, node, context)
        if replacement is None and node.domain in ("", "ai.onnx"):
            if node.op_type == "Dropout" and _dropout_is_identity(node, graph):
                replacement = [helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)]
            elif node.op_type == "BatchNormalization":
                replacement = _inference_batch_norm(editor, node, shapes.get(node.input[0]))
        new_nodes.extend([node] if replacement is None else replacement)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _dropout_is_identity(node: onnx.NodeProto, graph: onnx.GraphProto) -> bool:
    """Dropout without a true training_mode input and whose mask output nobody reads."""
    if len(node.output) > 1 and node.output[1]:
        return False
    if len(node.input) > 2 and node.input[2]:
        training_mode = next((init for init in graph.initializer if init.name == node.input[2]), None)
        return training_mode is not None and not numpy_helper.to_array(training_mode).any()
    return True


def _inference_batch_norm(editor: _Editor, node: onnx.NodeProto, x_shape) -> list[onnx.NodeProto] | None:
    """y = x * s + (bias - mean * s), s = scale / sqrt(var + epsilon), reshaped to (C, 1, ..., 1)."""
    attrs = {attr.name: attr for attr in node.attribute}
    if (len([out for out in node.output if out]) > 1 or ("training_mode" in attrs and attrs["training_mode"].i)
            or x_shape is None or len(x_shape) < 2):
        return None
    epsilon = attrs["epsilon"].f if "epsilon" in attrs else 1e-5
    x, scale, bias, mean, var = node.input[:5]
    base = node.name or node.output[0]
    nodes = []

    def add(op_type: str, inputs: list[str], output: str | None = None) -> str:
        new_node, name = editor.node(op_type, inputs, output, base)
        nodes.append(new_node)
        return name

    std = add("Sqrt", [add("Add", [var, editor.constant(f"{base}/epsilon", epsilon)])])
    factor = add("Div", [scale, std])
    shift = add("Sub", [bias, add("Mul", [mean, factor])])
    channel_shape = editor.constant(f"{base}/channel_shape", [-1] + [1] * (len(x_shape) - 2), np.int64)
    scaled = add("Mul", [x, add("Reshape", [factor, channel_shape])])
    add("Add", [scaled, add("Reshape", [shift, channel_shape])], node.output[0])
    return nodes


def _check_pool_shapes(model: onnx.ModelProto) -> None:
    """ORT 1.19 segfaults differentiating MaxPool with symbolic spatial dims: refuse instead of crashing."""
    shapes = value_shapes(model)
    for node in model.graph.node:
        if node.op_type != "MaxPool":
            continue
        shape = shapes.get(node.input[0])
        if shape is None or any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            raise ModelError(f"cannot infer concrete dims for the input of MaxPool node {node.name!r} "
                             f"(got {shape}); onnxruntime-training 1.19 cannot differentiate MaxPool without them")
