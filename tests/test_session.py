"""inq_onnx.InferenceSession: com.inq models run as onnxruntime's own float or int8 graphs, without the library."""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import inq_onnx
from inq_onnx.calibrate import ACTIVATIONS_KEY, RANGES_KEY, activation_ranges, ranges_metadata
from inq_onnx.errors import ConfigError, ModelError
from inq_onnx.export import export_float, export_qdq
from inq_onnx.pipeline import QuantizeConfig, quantize_model

from models import conv_gemm_model, random_inputs

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    return quantize_model(conv_gemm_model(seed=7, channels=8), QuantizeConfig(bits=4, retrain=False)).model


def with_ranges(model, x, activations="int8"):
    """The model as a convert step with --activations int8 would store it: ranges and mode in metadata."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    ranges = activation_ranges(export_float(model), {"x": x})
    model.metadata_props.add(key=RANGES_KEY, value=ranges_metadata(ranges))
    model.metadata_props.add(key=ACTIVATIONS_KEY, value=activations)
    return model


def plain(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_is_an_onnxruntime_session_exported_from_the_package():
    assert issubclass(inq_onnx.InferenceSession, ort.InferenceSession)
    # Loaded on attribute access only: `from inq_onnx import *` must not need onnxruntime.
    assert "InferenceSession" not in inq_onnx.__all__


def test_float_mode_matches_export_float(model, tmp_path):
    x = random_inputs(1, 32)
    want = plain(export_float(model), x)
    path = tmp_path / "model.inq.onnx"
    onnx.save(model, path)
    for source in (model, model.SerializeToString(), path, str(path)):
        session = inq_onnx.InferenceSession(source, providers=["CPUExecutionProvider"])
        assert session.inq_activations == "float" and session.inq_notes == []
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, rtol=1e-6, atol=1e-6)


def test_int8_mode_is_the_qdq_export_exactly(model):
    x = random_inputs(2, 32)
    stored = with_ranges(model, random_inputs(3, 64))
    want = plain(export_qdq(stored).model, x)
    for activations in ("auto", "int8"):
        session = inq_onnx.InferenceSession(stored, activations=activations)
        assert session.inq_activations == "int8"
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], want)
    session = inq_onnx.InferenceSession(stored, activations="float")
    np.testing.assert_allclose(session.run(None, {"x": x})[0], plain(export_float(model), x), rtol=1e-6, atol=1e-6)


def test_int8_session_runs_qlinearconv(model):
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        inq_onnx.InferenceSession(with_ranges(model, random_inputs(3, 64)), options)
        ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 2 and ops.count("QGemm") == 1, ops


def test_auto_runs_float_unless_the_metadata_says_int8(model):
    stored = with_ranges(model, random_inputs(3, 64), activations="float")
    assert inq_onnx.InferenceSession(stored).inq_activations == "float"
    assert inq_onnx.InferenceSession(stored, activations="int8").inq_activations == "int8"


def test_behaves_like_onnxruntimes_session(model):
    x = random_inputs(4, 8)
    session = inq_onnx.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert session.get_providers() == ["CPUExecutionProvider"]
    values = session.run_with_ort_values(["logits"], {"x": ort.OrtValue.ortvalue_from_numpy(x)})
    np.testing.assert_array_equal(values[0].numpy(), session.run(["logits"], {"x": x})[0])


def test_a_model_without_com_inq_nodes_passes_through(tmp_path):
    float_model = conv_gemm_model(seed=8)
    x = random_inputs(5, 8)
    path = tmp_path / "float.onnx"
    onnx.save(float_model, path)
    session = inq_onnx.InferenceSession(str(path), activations="int8")
    assert session.inq_activations == "unchanged"
    assert session._model_path == str(path)  # onnxruntime loaded the file itself
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], plain(float_model, x))


@pytest.mark.parametrize("source, kwargs, error, message", [
    ("model", {"activations": "int4"}, ConfigError, "activations must be one of auto, float, int8"),
    ("model", {"activations": "int8"}, ModelError, r"activations='int8' needs activation ranges"),
    (b"not a model", {}, ModelError, "not an ONNX model"),
    (3, {}, ModelError, "expected a path, bytes or onnx.ModelProto, got int"),
    ("missing.onnx", {}, ModelError, "model file not found"),
])
def test_errors(model, source, kwargs, error, message):
    with pytest.raises(error, match=message):
        inq_onnx.InferenceSession(model if source == "model" else source, **kwargs)
