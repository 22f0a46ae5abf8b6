"""Deployment with stock onnxruntime only: the op library loads and matches standard ops on decoded weights."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import inq_onnx
from inq_onnx.export import export_float
from inq_onnx.pipeline import QuantizeConfig, quantize_model

from models import conv_gemm_model, random_inputs

pytestmark = pytest.mark.runtime


def session(model, with_library):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if with_library:
        so.register_custom_ops_library(inq_onnx.get_library_path())
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def test_environment_has_no_training_runtime():
    assert importlib.util.find_spec("onnxruntime") is not None
    with pytest.raises(ImportError):
        import onnxruntime.training.api  # noqa: F401


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_quantized_model_runs_in_stock_onnxruntime(bits):
    result = quantize_model(conv_gemm_model(seed=bits), QuantizeConfig(bits=bits, retrain=False))
    x = random_inputs(bits, 32)
    got = session(result.model, True).run(None, {"x": x})[0]
    want = session(export_float(result.model), False).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_model_quantized_in_training_environment_deploys():
    share = os.environ.get("INQ_TEST_ARTIFACTS")
    if not share:
        pytest.skip("INQ_TEST_ARTIFACTS not set: tests/run.sh sets it to hand over a retrained model")
    share = Path(share)
    val = np.load(share / "digits_val.npz")
    quantized = session(share / "digits_cnn.inq.onnx", True).run(None, {"image": val["image"]})[0]
    original = session(share / "digits_cnn.onnx", False).run(None, {"image": val["image"]})[0]
    accuracy = lambda logits: float(np.mean(logits.argmax(1) == val["labels"]))  # noqa: E731
    assert accuracy(quantized) >= accuracy(original) - 0.01
