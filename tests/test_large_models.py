"""Models past protobuf's 2 GB: the graph steps run with the large tensors held aside, sessions load from a file.

The thresholds are lowered so that small models take the same paths (a real 2 GB model is too slow for CI).
"""

import numpy as np
import onnx
import pytest

from inq_onnx import large_models
from inq_onnx.model_info import model_info
from inq_onnx.normalize import normalize
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.runtime import make_session

from models import constant_subgraph_model, conv_gemm_model, random_inputs


@pytest.fixture
def large(monkeypatch):
    """Every model counts as past 2 GB; tensors of 256 bytes and more are held aside."""
    monkeypatch.setattr(large_models, "LARGE_MODEL_BYTES", 1)
    monkeypatch.setattr(large_models, "HELD_MIN_BYTES", 256)


def test_normalize_holds_large_tensors_through_the_passes_and_puts_them_back(large):
    model = constant_subgraph_model(opset=9)  # converted to 17 and folded with the weights held aside
    result = normalize(model)
    assert any("held aside" in note for note in result.notes)
    assert not [t.name for t in result.model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    held = {t.name for t in model.graph.initializer if len(t.raw_data) >= 256}
    assert held, "the test model must have tensors to hold"
    original = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for tensor in result.model.graph.initializer:
        if tensor.name in held:
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(tensor), original[tensor.name])


def test_quantize_and_check_a_large_model_as_a_small_one(large, monkeypatch):
    model = conv_gemm_model()
    x = {"x": random_inputs(0, 8)}
    big = quantize_model(model, QuantizeConfig(bits=5, retrain=False))
    check_rewrite(big)  # both models run from files with external data
    assert hasattr(make_session(big.float_model), "_inq_external_data")
    monkeypatch.setattr(large_models, "LARGE_MODEL_BYTES", 1 << 62)  # the ordinary path, for comparison
    small = quantize_model(model, QuantizeConfig(bits=5, retrain=False))
    assert big.model.SerializeToString() == small.model.SerializeToString()
    np.testing.assert_array_equal(make_session(big.model).run(None, x)[0], make_session(small.model).run(None, x)[0])
    assert model_info(big.float_model).model_bytes > 0


def test_checker_still_refuses_a_broken_large_graph(large):
    model = conv_gemm_model()
    model.graph.node[0].input[0] = "nowhere"
    with pytest.raises(Exception, match="nowhere"):
        large_models.check_model(model)


def test_a_broken_large_model_is_a_model_error_in_normalize(large):
    from inq_onnx.errors import ModelError

    model = conv_gemm_model()
    model.graph.node[0].input[0] = "nowhere"
    with pytest.raises(ModelError, match="does not pass onnx.checker"):
        normalize(model)
