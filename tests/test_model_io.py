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
