"""Small edits of an ONNX graph that several transformations share, written so that a large tensor is never
held twice: protobuf copies a message on every extend or append, so the edits delete in place and the copies
leave out what the caller replaces."""

from __future__ import annotations

from typing import Callable, Mapping

import onnx
from google.protobuf.descriptor import FieldDescriptor

__all__ = ["drop_unused_initializers", "copy_model"]


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Initializers that no node reads and no graph output names are removed (the order of the rest is kept)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for index in reversed([i for i, t in enumerate(graph.initializer) if t.name not in used]):
        del graph.initializer[index]


def _is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)  # newer protobuf; `label` in older ones
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _copy_fields(source, target, skip: str | None = None) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if _is_repeated(field):
            getattr(target, field.name).extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def copy_model(model: onnx.ModelProto,
               replace: Mapping[str, Callable[[], onnx.TensorProto | None]] | None = None) -> onnx.ModelProto:
    """A deep copy of `model` in which each initializer named in `replace` is not copied but made by
    replace[name]() (None leaves it out), in its place in the list."""
    replace = replace or {}
    copied = onnx.ModelProto()
    _copy_fields(model, copied, skip="graph")
    if model.HasField("graph"):
        _copy_fields(model.graph, copied.graph, skip="initializer")
        for tensor in model.graph.initializer:
            if tensor.name not in replace:
                copied.graph.initializer.add().CopyFrom(tensor)
                continue
            made = replace[tensor.name]()
            if made is not None:
                copied.graph.initializer.add().CopyFrom(made)
    return copied
