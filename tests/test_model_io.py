"""Model files: loading with clear errors, atomic writes that keep modes and never replace special files."""

import os

import pytest

from inq_onnx.errors import InqError, ModelError
from inq_onnx.model_io import atomic_write, default_output_path, load_model, model_sha256, save_model

from models import conv_gemm_model


def test_atomic_write_keeps_old_file_and_leaves_no_temp_on_failure(tmp_path):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(TypeError):
        atomic_write(target, object())  # fails inside the write
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_replaced_file_keeps_its_mode_and_new_files_follow_the_umask(tmp_path):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o640
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "fresh.onnx", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "fresh.onnx").stat().st_mode & 0o777 == 0o644


def test_special_files_are_never_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InqError, match="exists and is not a regular file"):
        atomic_write(fifo, b"data")
    assert not fifo.is_file() and fifo.exists()


def test_save_and_load_round_trip(tmp_path):
    model = conv_gemm_model()
    save_model(model, tmp_path / "m.onnx")
    assert load_model(tmp_path / "m.onnx") == model
    assert len(model_sha256(tmp_path / "m.onnx")) == 64


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\xff\xff\xff")
    with pytest.raises(ModelError, match="is not a readable ONNX model"):
        load_model(tmp_path / "bad.onnx")
    with pytest.raises(InqError, match="output folder does not exist"):
        atomic_write(tmp_path / "nope" / "x.onnx", b"")


@pytest.mark.parametrize("source, output", [("a/model.onnx", "a/model.inq.onnx"), ("net", "net.inq.onnx")])
def test_default_output_path(source, output):
    assert str(default_output_path(source)) == output
