"""Reading and writing model files: clear errors on bad files, atomic writes, content hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import onnx

from .errors import InqError, ModelError

__all__ = ["load_model", "save_model", "atomic_write", "model_sha256", "default_output_path"]


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load a model with its external data; ModelError when missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types on corrupt files
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def model_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file in the same folder, renamed into place: never a half-written file."""
    path = Path(path)
    if not path.parent.exists():
        raise InqError(f"output folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Serialize and write atomically. Models over protobuf's 2 GB limit are out of scope for now."""
    try:
        data = model.SerializeToString()
    except ValueError as exc:
        raise ModelError(f"cannot serialize the model: {exc}") from None
    atomic_write(path, data)


def default_output_path(source: str | os.PathLike, suffix: str = ".inq.onnx") -> Path:
    """model.onnx -> model.inq.onnx beside it."""
    source = Path(source)
    stem = source.name[: -len(".onnx")] if source.name.endswith(".onnx") else source.name
    return source.with_name(stem + suffix)
