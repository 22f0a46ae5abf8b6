"""Calibration/training data, checked early: an .npz with one array per model input and optional int `labels`,
an image folder (see images.py), or input dicts from Python (onnxruntime's calibration-reader convention).

`open_data` gives any of them as a DataSource (sources.py) that retraining and validation read batch by batch:
an .npz is held in memory, an image folder is decoded a batch at a time, and input dicts are read again for
every pass when the Python object allows it (a one-shot iterator is read into memory, or refused where
retraining would need to read it several times).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import helper

from .errors import ConfigError, DataError, ModelError
from .sources import Batch, DataSource, IterableSource

__all__ = ["Dataset", "load_dataset", "load_data", "open_data", "data_batches", "is_data_path", "check_dataset",
           "check_source", "model_inputs", "LABELS_KEY"]

LABELS_KEY = "labels"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints for fixed dims, None or a name for symbolic ones


@dataclass
class Dataset(DataSource):
    """Arrays in memory, one per model input, and the labels (or None)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.inputs.items()}

    def take(self, index: np.ndarray | slice) -> Batch:
        return Batch(self.batch(index), None if self.labels is None else self.labels[index])

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.inputs.items()}

    def dtypes(self) -> dict[str, np.dtype]:
        return {k: v.dtype for k, v in self.inputs.items()}

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        arrays = [(name, self.inputs[name]) for name in sorted(self.inputs)]
        for name, array in arrays + ([(LABELS_KEY, self.labels)] if self.labels is not None else []):
            array = np.ascontiguousarray(array)
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that are not initializers."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type == onnx.TensorProto.UNDEFINED:
            raise ModelError(f"model input {value.name} is not a tensor of a known element type")
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


def _input_specs(names: Iterable[str], model: onnx.ModelProto) -> list[InputSpec]:
    """The model's inputs, when `names` (the data's arrays) are exactly those."""
    specs = model_inputs(model)
    names = set(names)
    expected = {s.name for s in specs}
    missing = sorted(expected - names)
    extra = sorted(names - expected)
    if missing:
        raise DataError(f"data lacks model input(s) {', '.join(missing)} (data has: {', '.join(sorted(names))})")
    if extra:
        raise DataError(f"data has array(s) {', '.join(extra)} that are not model inputs "
                        f"(inputs: {', '.join(sorted(expected))}; labels go under '{LABELS_KEY}')")
    return specs


def _check_shape(spec: InputSpec, shape: tuple[int, ...]) -> None:
    """The data's shape (samples first) against the model input's rank and fixed dims."""
    if spec.shape and len(spec.shape) != len(shape):
        raise DataError(f"input {spec.name}: data has shape {shape}, the model takes rank {len(spec.shape)} "
                        f"{tuple(d if isinstance(d, int) and d else '?' for d in spec.shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape[1:], shape[1:]), start=1):
        if isinstance(want, int) and want > 0 and want != got:
            raise DataError(f"input {spec.name}: data has shape {shape}, the model needs {want} on axis {axis}")


def _check_labels(labels: np.ndarray, count: int, model: onnx.ModelProto) -> np.ndarray:
    """Integer labels, one per sample, within the model's classes; as int64."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers, got {labels.dtype}")
    if labels.ndim != 1 or len(labels) != count:
        raise DataError(f"labels must be 1-D with one entry per sample ({count}), got shape {labels.shape}")
    width = _output_width(model)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (width is not None and high >= width):
        raise DataError(f"labels range {low}..{high}, the model's output has "
                        f"{width if width is not None else 'an unknown number of'} classes")
    return labels.astype(np.int64)


def check_dataset(dataset: Dataset, model: onnx.ModelProto) -> Dataset:
    """Check names, shapes, dtypes, finiteness and labels against the model; float64 data becomes float32."""
    specs = _input_specs(dataset.inputs, model)
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
        _check_shape(spec, array.shape)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise DataError(f"input {spec.name}: data contains NaN or Inf")
        inputs[spec.name] = array
    labels = dataset.labels
    return Dataset(inputs, _check_labels(labels, count, model) if labels is not None else None)


def check_source(source: DataSource, model: onnx.ModelProto) -> DataSource:
    """A Dataset checked by check_dataset; a source that reads batches on demand checked on what it knows up front
    (names, dtypes, sample shapes, labels), its batches being checked as they are read."""
    if isinstance(source, Dataset):
        return check_dataset(source, model)
    shapes, dtypes = source.sample_shapes(), source.dtypes()
    for spec in _input_specs(shapes, model):
        if dtypes[spec.name] != spec.dtype:
            raise DataError(f"input {spec.name}: data is {dtypes[spec.name]}, the model takes {spec.dtype}")
        _check_shape(spec, (len(source), *shapes[spec.name]))
    if source.labels is not None:
        _check_labels(source.labels, len(source), model)
    return source


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
        for batch in ImageFolder(source, preprocess or Preprocess(), name).batches(batch_size):
            yield batch.inputs
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


def _passes(source: Any) -> Callable[[], Iterator] | None:
    """For input dicts from Python: a function that starts a fresh pass over them, or None when they can be read
    once only (an iterator, a generator, a reader without rewind())."""
    if hasattr(source, "get_next"):
        if not callable(getattr(source, "rewind", None)):
            return None

        def again():
            source.rewind()
            return _reader_batches(source)

        return again
    if callable(source):
        return lambda: _reader_batches(source())
    if isinstance(source, (dict, str, bytes)) or not isinstance(source, Iterable):
        raise DataError(f"data must be a path, a Dataset, an iterable of input dicts, a function returning one, "
                        f"or a reader with get_next(), got {type(source).__name__}")
    if iter(source) is source:
        return None
    return lambda: _reader_batches(source)


def _fit_batch(item: Any, position: int, model: onnx.ModelProto) -> Batch:
    """One input dict from Python as a checked Batch."""
    arrays = _as_batch(item, position)
    labels = arrays.pop(LABELS_KEY, None)
    if not arrays:
        raise DataError(f"batch {position} holds no input arrays")
    try:
        checked = check_dataset(Dataset(arrays, labels), model)
    except DataError as exc:
        raise DataError(f"batch {position}: {exc}") from None
    return Batch(checked.inputs, checked.labels)


def open_data(source: Any, model: onnx.ModelProto, preprocess=None, *, retraining: bool = False) -> DataSource:
    """The data as a DataSource read batch by batch where it can be, checked against `model` as far as reading
    it needs (check_source checks the rest; quantize_model against the normalized model).

    An .npz file or a Dataset is held in memory, unchecked; an image folder (decoded with `preprocess`) is read a batch at
    a time. Input dicts from Python (with optional 'labels') are read again for every pass when they can be: a
    list or other object whose __iter__ starts over, a function returning a fresh iterable, or a reader with
    get_next() and rewind() (rewound before every pass). A first pass counts and checks them. A one-shot
    iterator (a generator, iter(...), a reader without rewind()) is read into memory, or, when `retraining`,
    refused: retraining reads the data several times.
    """
    if isinstance(source, DataSource) and not isinstance(source, Dataset):
        return check_source(source, model)
    if is_data_path(source) and Path(source).is_dir():
        from .images import ImageFolder, Preprocess, check_model_takes_images

        specs = model_inputs(model)
        name = check_model_takes_images([spec.name for spec in specs])
        dtype = specs[0].dtype if np.issubdtype(specs[0].dtype, np.floating) else np.dtype(np.float32)
        return check_source(ImageFolder(source, preprocess or Preprocess(), name, dtype), model)
    if is_data_path(source) or isinstance(source, Dataset):
        return load_data(source, model, preprocess)
    passes = _passes(source)
    if passes is not None:
        return IterableSource(passes, lambda item, position: _fit_batch(item, position, model))
    if retraining:
        kind = "a reader without rewind()" if hasattr(source, "get_next") else "a one-shot iterator"
        raise DataError(f"the data is {kind}, and retraining reads it several times (once per epoch, and to "
                        f"check the model around it): give a list, an object whose __iter__ starts over, a "
                        f"function returning a fresh iterator, or a reader with get_next() and rewind()")
    return load_data(source, model)
