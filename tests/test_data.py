"""Data files: loading .npz archives and checking them against the model's inputs and outputs."""

import numpy as np
import pytest

from inq_onnx.data import Dataset, check_dataset, load_dataset
from inq_onnx.errors import DataError

from models import conv_gemm_model


def good(count=8):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((count, 2, 6, 6)).astype(np.float32),
            "labels": rng.integers(0, 5, count)}


def test_good_data_passes_and_float64_becomes_float32(tmp_path):
    arrays = good()
    arrays["x"] = arrays["x"].astype(np.float64)
    np.savez(tmp_path / "d.npz", **arrays)
    checked = check_dataset(load_dataset(tmp_path / "d.npz"), conv_gemm_model())
    assert checked.inputs["x"].dtype == np.float32 and checked.labels.dtype == np.int64 and len(checked) == 8


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(y=a.pop("x")), "lacks model input"),
    (lambda a: a.update(extra=np.zeros((8, 1), np.float32)), "extra that are not model inputs"),
    (lambda a: a.update(x=a["x"][:, :1]), r"needs 2 on axis 1"),
    (lambda a: a.update(x=a["x"][:, 0]), "model takes rank 4"),
    (lambda a: a.update(x=a["x"].astype(np.int32)), "data is int32, the model takes float32"),
    (lambda a: a["x"].__setitem__((0, 0, 0, 0), np.nan), "NaN or Inf"),
    (lambda a: a.update(labels=np.full(8, 5)), "labels range 5..5, the model's output has 5 classes"),
    (lambda a: a.update(labels=np.full(8, -1)), "labels range -1..-1"),
    (lambda a: a.update(labels=np.zeros(8, np.float32)), "labels must be integers"),
    (lambda a: a.update(labels=np.zeros(7, np.int64)), "one entry per sample"),
    (lambda a: a.update(x=a["x"][:0], labels=a["labels"][:0]), "no samples"),
])
def test_bad_data(change, message):
    arrays = good()
    change(arrays)
    labels = arrays.pop("labels", None)
    with pytest.raises(DataError, match=message):
        check_dataset(Dataset(arrays, labels), conv_gemm_model())


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_dataset(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "only_labels.npz", labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="holds no input arrays"):
        load_dataset(tmp_path / "only_labels.npz")
