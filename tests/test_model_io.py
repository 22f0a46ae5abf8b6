"""Model files: loading with clear errors, atomic writes that keep modes and never replace special files."""

import copy
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from inq_onnx import model_io
from inq_onnx.cli.main import cli
from inq_onnx.errors import InqError, ModelError
from inq_onnx.model_io import atomic_write, default_output_path, load_model, model_sha256, save_model
from inq_onnx.runtime import make_session

from models import conv_gemm_model, constant_subgraph_model, random_inputs


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


def save_external(model, folder, location="weights.bin"):
    """The model with every tensor in one external data file beside it."""
    folder.mkdir(exist_ok=True)
    onnx.save(copy.deepcopy(model), folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    return folder / "m.onnx"


def weights_of(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_external_data_is_loaded(tmp_path):
    model = conv_gemm_model()
    loaded = load_model(save_external(model, tmp_path / "a"))
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in loaded.graph.initializer)
    assert {k: v.tolist() for k, v in weights_of(loaded).items()} == {k: v.tolist() for k, v in
                                                                     weights_of(model).items()}


def _point_to(path, location, offset=None):
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
        if entry.key == "offset" and offset is not None:
            entry.value = str(offset)
    onnx.save(model, path)


@pytest.mark.parametrize("location, message", [
    ("../outside.bin", "is outside the model's folder"),
    ("/etc/passwd", "is outside the model's folder"),
    ("escape_link", "is outside the model's folder"),  # a symlink inside the folder pointing out of it
    ("missing.bin", "external data file 'missing.bin' does not exist"),
])
def test_external_data_outside_the_folder_or_missing_is_refused(tmp_path, location, message):
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    path = save_external(conv_gemm_model(), tmp_path / "model")
    (tmp_path / "model" / "escape_link").symlink_to(tmp_path / "outside.bin")
    _point_to(path, location)
    with pytest.raises(ModelError, match=f"tensor w1's external data.*{message}" if "outside" in message else
                       message):
        load_model(path)


def test_external_data_beyond_its_file_is_refused(tmp_path):
    path = save_external(conv_gemm_model(), tmp_path / "model")
    _point_to(path, "weights.bin", offset=1 << 20)
    with pytest.raises(ModelError, match=r"tensor w1's external data \(offset 1048576, length 288\) lies outside"):
        load_model(path)


def test_save_writes_one_file_under_the_limit_and_a_data_file_over_it(tmp_path, monkeypatch):
    monkeypatch.setattr(model_io, "_EXTERNAL_MIN_BYTES", 256)
    model = conv_gemm_model()
    assert save_model(model, tmp_path / "one.onnx") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.onnx"]
    data = save_model(model, tmp_path / "two.onnx", single_file_limit=1000)
    assert data == tmp_path / "two.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.onnx", "two.onnx", "two.onnx.data"]
    graph_only = onnx.load(str(tmp_path / "two.onnx"), load_external_data=False)
    external = [t.name for t in graph_only.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external == ["w1", "w3"]  # 288 and 720 bytes; the biases stay in the graph
    assert {k: v.tolist() for k, v in weights_of(load_model(tmp_path / "two.onnx")).items()} == \
        {k: v.tolist() for k, v in weights_of(model).items()}


def test_cli_quantizes_an_external_data_model_and_says_which_files_it_writes(tmp_path, monkeypatch):
    path = save_external(constant_subgraph_model(), tmp_path / "model")
    result = CliRunner().invoke(cli, ["quantize", str(path), "--no-retrain", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Normalized: converted from opset 9 to opset 17" in result.output
    assert f"Wrote {tmp_path / 'model' / 'm.inq.onnx'} (one file)" in result.output
    monkeypatch.setattr(model_io, "SINGLE_FILE_LIMIT", 100)
    monkeypatch.setattr(model_io, "_EXTERNAL_MIN_BYTES", 16)
    result = CliRunner().invoke(cli, ["quantize", str(path), "--no-retrain", "--quiet", "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == 0, result.output
    assert f"Wrote {tmp_path / 'q.onnx'} with its weights in {tmp_path / 'q.onnx.data'}" in result.output
    x = random_inputs(0, 4)
    np.testing.assert_allclose(make_session(load_model(tmp_path / "q.onnx")).run(None, {"x": x})[0],
                               make_session(load_model(tmp_path / "model" / "m.inq.onnx")).run(None, {"x": x})[0])
