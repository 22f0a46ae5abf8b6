"""Models past protobuf's 2 GB limit: the steps that serialize a model (onnx.checker, shape inference, the
version converter, onnxruntime sessions) work on a copy whose large tensors are held aside or written beside it.

A held tensor keeps its name, type and dims and refers to external data at a location no file has; the graph
steps read only those, and the data is put back afterwards.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .graph_edit import copy_model
from .model_io import SINGLE_FILE_LIMIT, save_model, tensor_bytes

__all__ = ["LARGE_MODEL_BYTES", "is_large", "held_copy", "held_array", "restore_tensors", "check_model",
           "infer_shapes", "session_source"]

# At this many bytes of tensors a model no longer serializes in one piece (protobuf's 2 GB, with room for the
# graph); tests lower it to run the large-model paths on small models.
LARGE_MODEL_BYTES = SINGLE_FILE_LIMIT
# Tensors held aside: the large ones (the graph steps never need their values).
HELD_MIN_BYTES = 1 << 20
_HELD_LOCATION = "inq-onnx-held-tensor"


def is_large(model: onnx.ModelProto) -> bool:
    return tensor_bytes(model) >= LARGE_MODEL_BYTES


def _is_held(tensor: onnx.TensorProto) -> bool:
    return (tensor.data_location == onnx.TensorProto.EXTERNAL
            and any(e.key == "location" and e.value == _HELD_LOCATION for e in tensor.external_data))


# Types whose elements are not whole bytes (or not fixed-size): never held, their stored form differs from
# numpy's.
_NOT_HELD = {getattr(onnx.TensorProto, name) for name in ("STRING", "INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
             if hasattr(onnx.TensorProto, name)}


def _held_bytes(tensor: onnx.TensorProto) -> int:
    """The bytes of a tensor's data by its dims and type (no copy of the data is made to tell); 0 for tensors
    that are never held."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type in _NOT_HELD:
        return 0
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):  # an unknown type is the tensor check's to refuse, not held here
        return 0
    count = int(np.prod(tensor.dims, dtype=object))  # exact for any dims (malformed ones included)
    return count * itemsize if count > 0 else 0


def _held_stand_in(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """What a held tensor leaves in the model: its name, type and dims, its data at a location no file has."""
    stand_in = onnx.TensorProto()
    stand_in.name, stand_in.data_type = tensor.name, tensor.data_type
    stand_in.dims.extend(tensor.dims)
    stand_in.data_location = onnx.TensorProto.EXTERNAL
    entry = stand_in.external_data.add()
    entry.key, entry.value = "location", _HELD_LOCATION
    return stand_in


def _raw_bytes(tensor: onnx.TensorProto) -> bytes:
    return (tensor.raw_data if tensor.HasField("raw_data")
            else numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data)


def held_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, bytes]]:
    """A copy of `model` whose initializers of HELD_MIN_BYTES or more are held (each keeps its name, type and
    dims, not its data), and their data by name (raw bytes): the copy never holds a large tensor in protobuf
    form."""
    held: dict[str, bytes] = {}

    def hold(tensor):
        held[tensor.name] = _raw_bytes(tensor)
        return _held_stand_in(tensor)
    copied = copy_model(model, {t.name: (lambda t=t: hold(t)) for t in model.graph.initializer
                                if _held_bytes(t) >= HELD_MIN_BYTES})
    return copied, held


def held_array(tensor: onnx.TensorProto, data: bytes) -> np.ndarray:
    """The value of held tensor `tensor` (its stand-in) from its held `data`."""
    full = onnx.TensorProto()
    full.name, full.data_type = tensor.name, tensor.data_type
    full.dims.extend(tensor.dims)
    full.raw_data = data
    return numpy_helper.to_array(full)


def restore_tensors(model: onnx.ModelProto, held: dict[str, bytes]) -> None:
    """In place: the held tensors get their data back (those the graph steps dropped stay dropped); `held` is
    emptied as they do, so no tensor is in memory twice for longer than its own copy."""
    for tensor in model.graph.initializer:
        if tensor.name in held and _is_held(tensor):
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
            tensor.raw_data = held.pop(tensor.name)
    held.clear()


def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose tensors of HELD_MIN_BYTES or more are held (their data never copied)."""
    return copy_model(model, {t.name: (lambda t=t: _held_stand_in(t)) for t in model.graph.initializer
                              if _held_bytes(t) >= HELD_MIN_BYTES})


def _has_large_tensor(model: onnx.ModelProto) -> bool:
    return any(_held_bytes(t) >= HELD_MIN_BYTES or _is_held(t) for t in model.graph.initializer)


def _stand_ins(light: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a light model for onnx.checker: each held tensor becomes one element of its type (the checker
    verifies the graph's structure, not that weights fit their nodes)."""
    light = copy.deepcopy(light)
    for tensor in light.graph.initializer:
        if _is_held(tensor):
            name, data_type = tensor.name, tensor.data_type
            tensor.CopyFrom(numpy_helper.from_array(
                np.zeros(1, onnx.helper.tensor_dtype_to_np_dtype(data_type)), name))
    return light


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """onnx.checker.check_model, without serializing large tensors (and so also for a model past 2 GB): the
    structure is checked on stand-ins for them and, with `full_check`, shapes inferred strictly on a copy with
    them held. (Their bytes against their dims are the normalize pass's check.)"""
    if not _has_large_tensor(model):
        onnx.checker.check_model(model, full_check=full_check)
        return
    light = _light_copy(model)
    onnx.checker.check_model(_stand_ins(light))
    if full_check:
        onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True)


def infer_shapes(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """onnx.shape_inference.infer_shapes, run on a copy with the large tensors held aside (shape inference
    serializes the model, and reads only small constants such as shapes); the result carries the held copies
    (for its value_info, not its weights)."""
    return onnx.shape_inference.infer_shapes(_light_copy(model) if _has_large_tensor(model) else model, **options)


def session_source(model: onnx.ModelProto) -> tuple[bytes | str, tempfile.TemporaryDirectory | None]:
    """What onnxruntime.InferenceSession takes for `model`: its bytes, or for a model past 2 GB the path of a
    copy written with external data into a temporary folder (returned too: keep it while the session lives)."""
    if not is_large(model):
        return model.SerializeToString(), None
    folder = tempfile.TemporaryDirectory(prefix="inq-onnx-")
    path = Path(folder.name) / "model.onnx"
    save_model(model, path)
    return str(path), folder
