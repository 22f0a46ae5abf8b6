"""Running models with onnxruntime: the op library's path and sessions that know the com.inq ops."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx

from . import large_models
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


def make_session(model: onnx.ModelProto | str | os.PathLike, threads: int | None = None, spinning: bool = True):
    """An onnxruntime CPU session; registers the op library when the model uses com.inq ops.

    `spinning=False` stops idle pool threads from spinning: needed when several sessions take turns (timing them
    side by side), or one session's spinning threads steal the cores from the next.
    """
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    if any(n.domain == DOMAIN for n in proto.graph.node):
        options.register_custom_ops_library(get_library_path())
    # A model past 2 GB is handed over as a file with external data (kept while the session lives).
    source, folder = large_models.session_source(proto)
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        if folder is not None:
            session._inq_external_data = folder
        return session
    except Exception as exc:  # onnxruntime raises its own exception types
        message = str(exc).strip()
    match = re.search(r"max supported IR version: (\d+)", message)
    if match and proto.ir_version > int(match.group(1)):
        # A newer onnx stamps a newer IR version than this onnxruntime reads, though the graph rarely needs it.
        older = onnx.ModelProto()
        older.CopyFrom(proto)
        older.ir_version = int(match.group(1))
        try:
            return ort.InferenceSession(older.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            message = str(exc).strip()
    raise ModelError(f"onnxruntime {ort.__version__} cannot load the model: {_first_line(message)}")


def _first_line(message: str, limit: int = 300) -> str:
    """onnxruntime's sentence, without its source location and C++ signature."""
    message = message.strip()
    first = message.splitlines()[0] if message else "unknown error"
    first = re.sub(r"\S*onnxruntime_src/\S+:\d+ .*?\) (?=[A-Z])", "", first)
    return first[:limit] + ("..." if len(first) > limit else "")


def _fixed_batch(session) -> int | None:
    """The batch size a session's inputs fix on axis 0, if they fix one."""
    sizes = {i.shape[0] for i in session.get_inputs() if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0}
    return sizes.pop() if len(sizes) == 1 else None


def run_batched(session, inputs: Mapping[str, np.ndarray], batch_size: int = 256,
                progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """All outputs for all samples, run in batches along axis 0; `progress(samples)` after each batch.

    A model whose inputs fix the batch (often 1, as exporters write) runs in batches of exactly that size; a
    short last batch is padded with copies of its last sample and the padding dropped from the outputs.
    """
    count = len(next(iter(inputs.values())))
    fixed = _fixed_batch(session)
    step = fixed or batch_size
    chunks: list[list[np.ndarray]] = []
    for start in range(0, count, step):
        feed = {k: v[start:start + step] for k, v in inputs.items()}
        real = len(next(iter(feed.values())))
        if fixed and real < fixed:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], fixed - real, axis=0)]) for k, v in feed.items()}
        try:
            outputs = session.run(None, feed)
        except Exception as exc:  # onnxruntime's own types: the model or the data does not fit what it runs
            raise ModelError(f"onnxruntime cannot run the model: {_first_line(str(exc))}") from None
        chunks.append([o[:real] if fixed and o.ndim and len(o) == fixed else o for o in outputs])
        if progress is not None:
            progress(real)
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
