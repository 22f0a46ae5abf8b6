"""Reading and writing model files: clear errors on bad files, external data kept inside the model's folder,
atomic writes (one file, or a model and its data file past protobuf's 2 GB limit), content hashes."""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path

from typing import Iterable, Iterator

import onnx
from onnx import external_data_helper

from .errors import InqError, ModelError

__all__ = ["load_model", "save_model", "atomic_write", "check_output_path", "model_sha256", "default_output_path",
           "tensor_bytes", "SINGLE_FILE_LIMIT", "EXTERNAL_DATA_SUFFIX"]

# protobuf cannot write a message of 2 GiB or more; below this the model is one file (with room for the graph).
SINGLE_FILE_LIMIT = 2**31 - 2**26
EXTERNAL_DATA_SUFFIX = ".data"
# Tensors at least this large go to the data file when one is written; small ones stay in the graph.
_EXTERNAL_MIN_BYTES = 1024
_ALIGNMENT = 4096  # data file offsets, so that runtimes can map tensors


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensors in node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _tensors(sub)


def _external_field(tensor: onnx.TensorProto, key: str) -> str | None:
    return next((entry.value for entry in tensor.external_data if entry.key == key), None)


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Every external-data reference names an existing file inside the model's folder, within its size."""
    folder = path.parent.resolve()
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = _external_field(tensor, "location")
        if not location:
            raise ModelError(f"{path}: tensor {tensor.name} has external data without a location")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelError(f"{path}: tensor {tensor.name}'s external data {location!r} is outside the model's "
                             f"folder; external data must sit beside the model")
        if not target.is_file():
            raise ModelError(f"{path}: tensor {tensor.name}'s external data file {location!r} does not exist")
        try:
            offset = int(_external_field(tensor, "offset") or 0)
            length = _external_field(tensor, "length")
            length = None if length is None else int(length)
        except ValueError:
            raise ModelError(f"{path}: tensor {tensor.name} has a non-numeric external data offset or length") \
                from None
        size = target.stat().st_size
        if offset < 0 or (length is not None and length < 0) or offset + (length or 0) > size:
            raise ModelError(f"{path}: tensor {tensor.name}'s external data (offset {offset}, length {length}) "
                             f"lies outside {location!r} ({size} bytes)")


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load a model with its external data; ModelError when missing, not ONNX, or its external data is missing
    or outside the model's folder."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"{path} is not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on corrupt files
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    _check_external_data(model, path)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # onnx's own checks of the same references, or an I/O error
        raise ModelError(f"{path}: cannot read its external data ({str(exc).strip()[:200]})") from None
    return model


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


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
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
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(chunk)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InqError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the tensors the model holds in memory (initializers, attributes, subgraphs), as serialized:
    ByteSize, since reading raw_data would copy each tensor."""
    return sum(t.ByteSize() for t in _tensors(model.graph))


def _with_external_data(model: onnx.ModelProto, location: str) -> tuple[onnx.ModelProto, list[bytes]]:
    """A copy whose large raw tensors refer to `location`, and the data file's pieces in order (aligned)."""
    model = copy.deepcopy(model)
    pieces: list[bytes] = []
    offset = 0
    for tensor in _tensors(model.graph):
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < _EXTERNAL_MIN_BYTES:
            continue
        padding = -offset % _ALIGNMENT
        data = tensor.raw_data
        pieces += [b"\0" * padding, data]
        offset += padding
        external_data_helper.set_external_data(tensor, location, offset, len(data))
        tensor.ClearField("raw_data")
        offset += len(data)
    return model, pieces


def save_model(model: onnx.ModelProto, path: str | os.PathLike, single_file_limit: int | None = None
               ) -> Path | None:
    """Write atomically: one file when the tensors stay under `single_file_limit` (SINGLE_FILE_LIMIT, protobuf's
    2 GB), else the graph at `path` and the large tensors in `<path>.data` beside it. Returns the data file's
    path when one was written."""
    path = check_output_path(path)
    limit = SINGLE_FILE_LIMIT if single_file_limit is None else single_file_limit
    data_path = None
    if tensor_bytes(model) >= limit:
        data_path = check_output_path(path.with_name(path.name + EXTERNAL_DATA_SUFFIX))
        model, pieces = _with_external_data(model, data_path.name)
        if not pieces:  # no tensor large enough to move
            data_path = None
    try:
        serialized = model.SerializeToString()
    except ValueError as exc:
        raise ModelError(f"cannot serialize the model: {exc}") from None
    if data_path is not None:
        atomic_write(data_path, pieces)
    try:
        atomic_write(path, serialized)
    except BaseException:
        if data_path is not None:  # no data file without its model
            data_path.unlink(missing_ok=True)
        raise
    return data_path


def default_output_path(source: str | os.PathLike, suffix: str = ".inq.onnx") -> Path:
    """model.onnx -> model.inq.onnx beside it."""
    source = Path(source)
    stem = source.name[: -len(".onnx")] if source.name.endswith(".onnx") else source.name
    return source.with_name(stem + suffix)
