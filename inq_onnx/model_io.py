"""Reading and writing model files: clear errors on bad files, atomic writes, content hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import onnx

from .errors import InqError, ModelError

__all__ = ["load_model", "save_model", "atomic_write", "check_output_path", "model_sha256", "default_output_path"]


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load a model with its external data; ModelError when missing or not ONNX."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"{path} is not a file")
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


def check_output_path(path: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """An output path that is not one of the inputs and, if it exists, is a regular file we may replace."""
    if not str(path).strip():
        raise InqError("the output path is empty")
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InqError(f"output {path} exists and is not a regular file")
    for source in inputs:
        if path.exists() and Path(source).exists() and path.resolve() == Path(source).resolve():
            raise InqError(f"the output path {path} is an input; choose another with -o")
    if not path.parent.is_dir():
        raise InqError(f"output folder does not exist: {path.parent}")
    return path


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file in the same folder, renamed into place: never a half-written file.

    The new file gets the mode of the file it replaces, or the umask's default for a new file.
    """
    path = check_output_path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InqError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InqError(f"cannot write {path}: {exc.strerror or exc}") from None
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
