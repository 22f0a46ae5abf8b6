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


def test_every_model_folds_constants_with_its_large_tensors_held_as_with_them_in_place(monkeypatch):
    # Held tensors (now any of 256 bytes or more, in a model far under 2 GB) are folded from where they are held.
    model = constant_subgraph_model(opset=9)
    monkeypatch.setattr(large_models, "HELD_MIN_BYTES", 1 << 62)
    in_place = normalize(model)
    monkeypatch.setattr(large_models, "HELD_MIN_BYTES", 256)
    held = normalize(model)
    assert held.notes == in_place.notes and any(n.startswith("folded ") for n in held.notes)
    assert [n.op_type for n in held.model.graph.node] == [n.op_type for n in in_place.model.graph.node]
    values = {t.name: onnx.numpy_helper.to_array(t) for t in in_place.model.graph.initializer}
    assert {t.name for t in held.model.graph.initializer} == set(values)
    for tensor in held.model.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(tensor), values[tensor.name])
    assert any(tensor.nbytes >= 256 for tensor in values.values())


def test_copy_model_copies_all_but_the_replaced_tensors_in_their_places():
    from inq_onnx.graph_edit import copy_model

    model = conv_gemm_model()
    model.metadata_props.add(key="k", value="v")
    assert copy_model(model).SerializeToString() == model.SerializeToString()
    names = [t.name for t in model.graph.initializer]
    made = []

    def new_w1():
        made.append("w1")
        return onnx.numpy_helper.from_array(np.zeros(3, np.float32), "w1")

    copied = copy_model(model, {"w1": new_w1, "b3": lambda: None})
    assert made == ["w1"]
    assert [t.name for t in copied.graph.initializer] == [n for n in names if n != "b3"]
    assert list(copied.graph.initializer[names.index("w1")].dims) == [3]
    assert copied.metadata_props[0].value == "v" and len(copied.graph.node) == len(model.graph.node)
    assert [t.name for t in model.graph.initializer] == names  # the source is untouched
    copied.graph.node[0].name = "changed"
    assert model.graph.node[0].name == "conv1"


def test_held_copy_holds_typed_and_raw_tensors_but_never_sub_byte_ones(monkeypatch):
    from onnx import TensorProto, helper

    monkeypatch.setattr(large_models, "HELD_MIN_BYTES", 16)
    model = conv_gemm_model()
    values = np.arange(40, dtype=np.float32).reshape(5, 8)
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [5, 8], values.ravel().tolist())  # float_data
    int4 = helper.make_tensor("int4", TensorProto.INT4, [64], [(i % 15) - 7 for i in range(64)])
    model.graph.initializer.extend([typed, int4])
    copied, held = large_models.held_copy(model)
    assert "typed" in held and "int4" not in held and "w3" in held
    tensors = {t.name: t for t in copied.graph.initializer}
    assert tensors["typed"].data_location == onnx.TensorProto.EXTERNAL
    np.testing.assert_array_equal(large_models.held_array(tensors["typed"], held["typed"]), values)
    large_models.restore_tensors(copied, held)
    assert held == {}
    for before, after in zip(model.graph.initializer, copied.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(after), onnx.numpy_helper.to_array(before))
