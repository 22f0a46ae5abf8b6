"""`inq_onnx.InferenceSession`: onnxruntime's session over a com.inq model expanded to standard float or int8 ops."""

from __future__ import annotations

import os
import tempfile

import onnx

from .calibrate import ACTIVATIONS_KEY, metadata_ranges, metadata_value
from .errors import ConfigError, ModelError, RuntimeUnavailableError
from .export import export_float, export_qdq
from .model_io import load_model, save_model
from .packed_nodes import shift_nodes

try:
    import onnxruntime as _ort
except ImportError:
    raise RuntimeUnavailableError(
        "inq_onnx.InferenceSession needs onnxruntime: pip install 'inq-onnx[runtime]'") from None

__all__ = ["InferenceSession", "expand_model", "ACTIVATIONS"]

ACTIVATIONS = ("auto", "float", "int8")


def expand_model(model: onnx.ModelProto, activations: str = "auto") -> tuple[onnx.ModelProto | None, str, list[str]]:
    """(standard-op model, mode, notes) for a com.inq model; (None, "unchanged", []) for a model without one.

    `auto` means int8 when the model's metadata `inq.activations` is "int8", float otherwise. int8 takes its
    activation ranges from the metadata `inq.activation_ranges`; layers int8 cannot hold exactly stay float
    and are named in the notes.
    """
    if activations not in ACTIVATIONS:
        raise ConfigError(f"activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}")
    if not shift_nodes(model):
        return None, "unchanged", []
    if activations == "auto":
        activations = "int8" if metadata_value(model, ACTIVATIONS_KEY) == "int8" else "float"
    if activations == "float":
        return export_float(model), "float", []
    if metadata_ranges(model) is None:
        raise ModelError("activations='int8' needs activation ranges in the model's metadata "
                         "(inq.activation_ranges): use a model converted with --activations int8, or write a "
                         "QDQ model with `inq-onnx export --format qdq --data`")
    exported = export_qdq(model)
    return exported.model, "int8", exported.notes


def _load(model) -> tuple[onnx.ModelProto, object]:
    """The model as a proto, and what onnxruntime should load when it passes through unchanged."""
    if isinstance(model, onnx.ModelProto):
        return model, model.SerializeToString()
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            return onnx.load_from_string(bytes(model)), model
        except Exception as exc:  # protobuf raises several unrelated types on corrupt bytes
            raise ModelError(f"the bytes are not an ONNX model ({type(exc).__name__}: {exc})") from None
    if isinstance(model, (str, os.PathLike)):
        return load_model(model), model
    raise ModelError(f"expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")


class InferenceSession(_ort.InferenceSession):
    """A drop-in for onnxruntime.InferenceSession that runs com.inq models without the op library.

    A subclass: after construction every method and attribute is onnxruntime's own (run, get_inputs,
    get_outputs, get_providers, run_with_ort_values, io_binding, ...). The com.inq model is expanded in memory
    into standard Conv/Gemm with float weights (`activations="float"`) or the int8 QDQ graph
    (`activations="int8"`, ranges from the model's metadata), so onnxruntime applies its own fusions and
    kernels; `"auto"` picks int8 when the metadata says `inq.activations` is "int8". A model without com.inq
    nodes passes through unchanged. `inq_activations` tells which form runs ("float", "int8" or
    "unchanged") and `inq_notes` which layers stayed float in the int8 form.
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, *,
                 activations: str = "auto", **kwargs):
        proto, source = _load(path_or_bytes)
        expanded, self.inq_activations, self.inq_notes = expand_model(proto, activations)
        del proto
        if expanded is None:
            super().__init__(source, sess_options, providers, provider_options, **kwargs)
            return
        # From a file, not bytes: onnxruntime's Python session keeps model bytes it is given for its whole life,
        # which would hold a second float copy of the weights.
        with tempfile.TemporaryDirectory(prefix="inq-onnx-") as tmp:
            path = os.path.join(tmp, "expanded.onnx")
            save_model(expanded, path)  # past 2 GB with its weights in a data file beside it
            del expanded
            super().__init__(path, sess_options, providers, provider_options, **kwargs)
