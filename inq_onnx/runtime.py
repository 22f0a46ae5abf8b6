"""Running models with onnxruntime: the op library's path and sessions that know the com.inq ops."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from .errors import ModelError, RuntimeUnavailableError
from .schemas import DOMAIN

__all__ = ["get_library_path", "make_session", "run_batched"]

_LIBRARY_NAME = {"win32": "inq_onnx_ops.dll", "darwin": "libinq_onnx_ops.dylib"}.get(sys.platform,
                                                                                       "libinq_onnx_ops.so")


def get_library_path() -> str:
    """Path of the compiled com.inq op library, for `SessionOptions.register_custom_ops_library`.

    INQ_ONNX_LIBRARY overrides the packaged library (for development builds).
    """
    override = os.environ.get("INQ_ONNX_LIBRARY")
    path = Path(override) if override else Path(__file__).with_name(_LIBRARY_NAME)
    if not path.is_file():
        raise RuntimeUnavailableError(
            f"the op library is missing at {path}; reinstall inq-onnx with `pip install .` so it is built")
    return str(path)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeUnavailableError(
            "onnxruntime is not installed: pip install 'inq-onnx[runtime]' (or '[train]')") from None
    return onnxruntime


def make_session(model: onnx.ModelProto | str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session; registers the op library when the model uses com.inq ops."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    proto = model if isinstance(model, onnx.ModelProto) else None
    if proto is None or any(n.domain == DOMAIN for n in proto.graph.node):
        options.register_custom_ops_library(get_library_path())
    source = proto.SerializeToString() if proto is not None else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load the model: {str(exc).strip().splitlines()[0]}") from None


def run_batched(session, inputs: Mapping[str, np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """All outputs for all samples, run in batches along axis 0."""
    count = len(next(iter(inputs.values())))
    chunks: list[list[np.ndarray]] = []
    for start in range(0, count, batch_size):
        feed = {k: v[start:start + batch_size] for k, v in inputs.items()}
        chunks.append(session.run(None, feed))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
