"""Calibration/training data, checked early: an .npz with one array per model input and optional int `labels`,
an image folder (see images.py), or input dicts from Python (onnxruntime's calibration-reader convention)."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import onnx
from onnx import helper

from .errors import ConfigError, DataError

__all__ = ["Dataset", "load_dataset", "load_data", "data_batches", "is_data_path", "check_dataset", "model_inputs",
           "LABELS_KEY"]

LABELS_KEY = "labels"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints for fixed dims, None or a name for symbolic ones


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.inputs.items()}

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.inputs.items()}


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that are not initializers."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
    return specs


def _output_width(model: onnx.ModelProto) -> int | None:
    """Classes of the first output when it is (batch, classes) with a fixed class count."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value"):
        return dims[1].dim_value
    return None


def load_dataset(path: str | os.PathLike) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is not an .npz archive (a single array?); save one array per model input "
                            f"with numpy.savez(path, input_name=array, labels=labels)")
        with loaded as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc or type(exc).__name__})") from None
    labels = arrays.pop(LABELS_KEY, None)
    if not arrays:
        raise DataError(f"{path} holds no input arrays")
    return Dataset(arrays, labels)


def check_dataset(dataset: Dataset, model: onnx.ModelProto) -> Dataset:
    """Check names, shapes, dtypes, finiteness and labels against the model; float64 data becomes float32."""
    specs = model_inputs(model)
    expected = {s.name for s in specs}
    missing = sorted(expected - set(dataset.inputs))
    extra = sorted(set(dataset.inputs) - expected)
    if missing:
        raise DataError(f"data lacks model input(s) {', '.join(missing)} (data has: {', '.join(sorted(dataset.inputs))})")
    if extra:
        raise DataError(f"data has array(s) {', '.join(extra)} that are not model inputs "
                        f"(inputs: {', '.join(sorted(expected))}; labels go under '{LABELS_KEY}')")
    counts = {name: len(a) if a.ndim else 0 for name, a in dataset.inputs.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"arrays differ in sample count: {counts}")
    count = next(iter(counts.values()))
    if count == 0:
        raise DataError("data has no samples")
    inputs = {}
    for spec in specs:
        array = dataset.inputs[spec.name]
        if array.dtype != spec.dtype:
            if np.issubdtype(array.dtype, np.floating) and np.issubdtype(spec.dtype, np.floating):
                array = array.astype(spec.dtype)
            else:
                raise DataError(f"input {spec.name}: data is {array.dtype}, the model takes {spec.dtype}")
        if spec.shape and len(spec.shape) != array.ndim:
            raise DataError(f"input {spec.name}: data has shape {array.shape}, the model takes rank {len(spec.shape)} "
                            f"{tuple(d if isinstance(d, int) and d else '?' for d in spec.shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape[1:], array.shape[1:]), start=1):
            if isinstance(want, int) and want > 0 and want != got:
                raise DataError(f"input {spec.name}: data has shape {array.shape}, the model needs {want} on axis {axis}")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise DataError(f"input {spec.name}: data contains NaN or Inf")
        inputs[spec.name] = array
    labels = dataset.labels
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"labels must be integers, got {labels.dtype}")
        if labels.ndim != 1 or len(labels) != count:
            raise DataError(f"labels must be 1-D with one entry per sample ({count}), got shape {labels.shape}")
        width = _output_width(model)
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (width is not None and high >= width):
            raise DataError(f"labels range {low}..{high}, the model's output has "
                            f"{width if width is not None else 'an unknown number of'} classes")
        labels = labels.astype(np.int64)
    return Dataset(inputs, labels)


def is_data_path(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def _reader_batches(source: Any) -> Iterator[dict[str, np.ndarray]]:
    """Input dicts from a reader with get_next() (None when done, as onnxruntime's CalibrationDataReader) or an
    iterable of dicts."""
    if hasattr(source, "get_next"):
        while (batch := source.get_next()) is not None:
            yield batch
        return
    if isinstance(source, (dict, str, bytes)) or not isinstance(source, Iterable):
        raise DataError(f"data must be a path, a Dataset, an iterable of input dicts or a reader with get_next(), "
                        f"got {type(source).__name__}")
    yield from source


def _as_batch(batch: Any, position: int) -> dict[str, np.ndarray]:
    if not isinstance(batch, dict) or not batch:
        raise DataError(f"batch {position} of the data is {type(batch).__name__}, not a dict of input name -> array")
    arrays = {str(name): np.asarray(value) for name, value in batch.items()}
    if any(a.ndim == 0 for a in arrays.values()):
        raise DataError(f"batch {position}: every array needs a leading batch axis")
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"batch {position}: arrays differ in sample count: {counts}")
    return arrays


def data_batches(source: Any, model: onnx.ModelProto, preprocess=None, batch_size: int = 64
                 ) -> Iterator[dict[str, np.ndarray]]:
    """The data as input dicts of up to `batch_size` samples (labels under 'labels'), for consumers that stream:
    an image folder or a reader is decoded or read one batch at a time; an .npz is read whole, then sliced."""
    if is_data_path(source) and Path(source).is_dir():
        from .images import ImageFolder, Preprocess, check_model_takes_images

        name = check_model_takes_images([spec.name for spec in model_inputs(model)])
        folder = ImageFolder(source, preprocess or Preprocess(), name)
        yield from folder.batches(batch_size)
        return
    if is_data_path(source) or isinstance(source, Dataset):
        dataset = load_data(source, model, preprocess)
        for start in range(0, len(dataset), batch_size):
            yield {k: v[start:start + batch_size] for k, v in dataset.inputs.items()}
        return
    for position, batch in enumerate(_reader_batches(source)):
        yield _as_batch(batch, position)


def load_data(source: Any, model: onnx.ModelProto, preprocess=None) -> Dataset:
    """All of the data in memory, unchecked (check_dataset checks it): an .npz file, an image folder decoded
    with `preprocess` (one model input; sub-folders give labels), a Dataset, or input dicts (labels under
    'labels') from an iterable or a reader with get_next(), concatenated."""
    if isinstance(source, Dataset):
        return source
    if is_data_path(source):
        if Path(source).is_dir():
            from .images import ImageFolder, Preprocess, check_model_takes_images

            name = check_model_takes_images([spec.name for spec in model_inputs(model)])
            images, labels = ImageFolder(source, preprocess or Preprocess(), name).arrays()
            return Dataset({name: images}, labels)
        if preprocess is not None:
            raise ConfigError("image preprocessing options (--resize, --crop, --mean, ...) apply to an image folder "
                              f"given as --data, not to {source}")
        return load_dataset(source)
    chunks: dict[str, list[np.ndarray]] = {}
    for position, batch in enumerate(_reader_batches(source)):
        arrays = _as_batch(batch, position)
        if chunks and set(arrays) != set(chunks):
            raise DataError(f"batch {position} has arrays {sorted(arrays)}, the first batch {sorted(chunks)}")
        for name, array in arrays.items():
            chunks.setdefault(name, []).append(array)
    if not chunks:
        raise DataError("the data yielded no batches")
    try:
        arrays = {name: np.concatenate(parts) for name, parts in chunks.items()}
    except ValueError as exc:
        raise DataError(f"batches do not stack into one array per input ({exc})") from None
    labels = arrays.pop(LABELS_KEY, None)
    if not arrays:
        raise DataError("the data's batches hold no input arrays")
    return Dataset(arrays, labels)
