"""The real-export corpus, read independently of the tool: which layers an exported graph asks to rewrite, where
its class scores are, and the digits data shaped for its input. Shared by tests/test_real_exports.py and
tests/exports/summarize.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

LINEAR_OPS = ("Conv", "Gemm", "MatMul")
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def write_data(entry: dict, digits: dict, split: str, path: Path) -> Path:
    """The digits split as the model's input (its name, its per-sample shape) with labels."""
    x = digits[f"{split}_x"].reshape((-1, *entry["sample_shape"]))
    np.savez(path, **{entry["input"]: x, "labels": digits[f"{split}_labels"]})
    return path


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors that depend on no graph input: initializers (also those an IR < 4 file lists as inputs) and the
    outputs of deterministic nodes whose inputs are all constant (Constant, weight-norm arithmetic, ...)."""
    constant = {t.name for t in graph.initializer}
    for node in graph.node:  # graph order is topological (onnx.checker)
        if node.op_type not in RANDOM_OPS and all(not name or name in constant for name in node.input):
            constant.update(node.output)
    return constant


def tensor_types(model: onnx.ModelProto) -> dict[str, tuple[int, int | None]]:
    """Element type and rank of every tensor shape inference can see."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {t.name: (t.data_type, len(t.dims)) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        types.setdefault(value.name, (tensor.elem_type, len(tensor.shape.dim) if tensor.HasField("shape") else None))
    return types


def linear_layers_with_constant_weight(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Standard Conv (1-D or 2-D), Gemm, and MatMul `x @ W` (W 2-D) nodes whose float weight is constant."""
    graph = model.graph
    constant, types = constant_tensors(graph), tensor_types(model)
    layers = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in LINEAR_OPS or len(node.input) < 2:
            continue
        weight = node.input[1]
        elem_type, rank = types.get(weight, (None, None))
        if weight not in constant or elem_type != onnx.TensorProto.FLOAT:
            continue
        if node.op_type == "Conv" and rank not in (3, 4):
            continue
        if node.op_type == "MatMul" and (rank != 2 or node.input[0] in constant):
            continue
        layers.append(node)
    return layers


def class_scores(model: onnx.ModelProto) -> int:
    """Index of the output holding the 10 class scores (sklearn's comes after its int64 label)."""
    for index, output in enumerate(model.graph.output):
        tensor = output.type.tensor_type
        if tensor.elem_type == onnx.TensorProto.FLOAT and [d.dim_value for d in tensor.shape.dim][1:] == [10]:
            return index
    raise AssertionError(f"no (batch, 10) float output in {[o.name for o in model.graph.output]}")
