"""Retraining through graphs as exporters write them: N-D MatMul blocks with several outputs, hard activations,
a trailing Softmax, and an op without a gradient."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from onnx import TensorProto, helper

from inq_onnx.data import Dataset
from inq_onnx.errors import ModelError, RuntimeUnavailableError
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.retrain import RetrainConfig
from inq_onnx.runtime import make_session
from inq_onnx.training._ort_import import load_ort_training

from models import conv_gemm_model, make_model, random_inputs, transformer_block_model, weights

pytestmark = pytest.mark.train
try:
    load_ort_training()
    from inq_onnx.training.ort_backend import OrtGradientBackend
except RuntimeUnavailableError:
    OrtGradientBackend = None

TRAINING = RetrainConfig(epochs=1, batch_size=8, lr=1e-3)


def test_distillation_sums_the_loss_over_every_float_output(tmp_path):
    model = transformer_block_model(layer_norm=True)
    x = np.random.default_rng(0).standard_normal((6, 5, 8)).astype(np.float32)
    zeros = [np.zeros((6, 3), np.float32), np.zeros((6, 5, 8), np.float32)]
    with OrtGradientBackend(model, ["w_up", "w_down", "w_head"], "distillation", {"x": (5, 8)},
                            workdir=tmp_path) as backend:
        assert backend.loss_outputs == ["logits", "block"]
        logits, block = backend.predict({"x": x})
        loss, grads = backend.loss_and_gradients({"x": x}, zeros)
    assert loss == pytest.approx(np.mean(logits ** 2) + np.mean(block ** 2), rel=1e-5)
    # w_down reaches the logits only through the block output: its gradient has both terms, and is not zero.
    assert np.abs(grads["w_down"]).max() > 0


def test_transformer_block_with_layer_norm_retrains_end_to_end():
    x = np.random.default_rng(1).standard_normal((32, 5, 8)).astype(np.float32)
    result = quantize_model(transformer_block_model(layer_norm=True),
                            QuantizeConfig(bits=5, portions=(0.5, 1.0), training=TRAINING), Dataset({"x": x}, None))
    assert result.mode == "distillation"
    assert [layer.node for layer in result.layers] == ["up", "mid", "down", "head"]
    assert all(np.isfinite(loss) for step in result.steps for loss in step.epoch_losses)
    assert len(result.steps[0].epoch_losses) == 1
    check_rewrite(result, Dataset({"x": x}, None))


def _hard_activation_model(op: str):
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node(op, ["h"], ["a"], name="act"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                      {"w1": weights(rng, 6, 8), "b1": weights(rng, 8), "w2": weights(rng, 8, 3),
                       "b2": weights(rng, 3)})


@pytest.mark.parametrize("op", ["HardSigmoid", "HardSwish"])
def test_hard_activation_model_retrains_with_labels(op):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 40)
    result = quantize_model(_hard_activation_model(op), QuantizeConfig(bits=4, training=TRAINING),
                            Dataset({"x": x}, labels))
    assert result.mode == "labels" and len(result.layers) == 2
    assert all(np.isfinite(loss) for step in result.steps for loss in step.epoch_losses)
    check_rewrite(result, Dataset({"x": x}, labels))


def test_softmax_terminated_model_trains_on_its_logits():
    """With a negligible learning rate the first batch's loss is the cross-entropy of the model's probabilities;
    cross-entropy applied to the probabilities themselves (Softmax twice) would be far from it."""
    model = conv_gemm_model(softmax=True)
    x = random_inputs(4, count=8) * 20  # confident predictions: Softmax twice would flatten them
    labels = np.arange(8) % 5
    seen = []
    # The first step freezes round(1e-6 * n) = 0 weights: the first batch sees the float model.
    config = QuantizeConfig(portions=(1e-6, 1.0), training=RetrainConfig(epochs=1, batch_size=8, lr=1e-12))
    quantize_model(model, config, Dataset({"x": x}, labels), progress=lambda *args: seen.append(args[-1]))
    probs = make_session(model).run(None, {"x": x})[0]
    cross_entropy = -np.mean(np.log(probs[np.arange(8), labels]))
    assert seen[0] == pytest.approx(cross_entropy, rel=1e-4)
    twice = np.exp(probs) / np.exp(probs).sum(axis=1, keepdims=True)
    assert abs(-np.mean(np.log(twice[np.arange(8), labels])) - cross_entropy) > 0.05


def test_op_without_gradient_stops_retraining_unless_the_layers_before_it_are_excluded():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    data = Dataset({"x": x}, rng.integers(0, 3, 16))
    model = _hard_activation_model("Shrink")
    with pytest.raises(ModelError, match=r"no gradient for Shrink \(node 'act'\) \(it lies between the loss and "
                                         r"fc1\).*--no-retrain.*--exclude"):
        quantize_model(model, QuantizeConfig(training=TRAINING), data)
    result = quantize_model(model, QuantizeConfig(exclude=("fc1",), training=TRAINING), data)
    assert [layer.node for layer in result.layers] == ["fc2"] and result.mode == "labels"


def _two_input_two_output_model():
    """tokens (N, 6, 4) through an N-D MatMul, features (N, 5) through a Gemm, merged; logits and an aux head."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["tokens", "w_tok"], ["t"], name="tok_proj"),
             helper.make_node("ReduceMean", ["t"], ["tm"], axes=[1], keepdims=0, name="pool"),
             helper.make_node("Gemm", ["feats", "w_f", "b_f"], ["f"], name="feat_proj", transB=1),
             helper.make_node("Add", ["tm", "f"], ["h"], name="merge"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Gemm", ["hr", "w_out", "b_out"], ["logits"], name="cls"),
             helper.make_node("MatMul", ["hr", "w_aux"], ["aux"], name="aux_head")]
    return make_model(nodes, [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", 6, 4]),
                              helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["N", 5])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
                       helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["N", 2])],
                      {"w_tok": weights(rng, 4, 8), "w_f": weights(rng, 8, 5), "b_f": weights(rng, 8),
                       "w_out": weights(rng, 8, 3), "b_out": weights(rng, 3), "w_aux": weights(rng, 8, 2)})


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "distillation"])
def test_two_inputs_and_two_outputs_quantize_retrain_and_validate(labels, tmp_path):
    import onnx

    from inq_onnx.api import quantize, validate

    rng = np.random.default_rng(6)
    arrays = {"tokens": rng.standard_normal((48, 6, 4)).astype(np.float32),
              "feats": rng.standard_normal((48, 5)).astype(np.float32)}
    if labels:
        arrays["labels"] = rng.integers(0, 3, 48)
    np.savez(tmp_path / "data.npz", **arrays)
    onnx.save(_two_input_two_output_model(), tmp_path / "model.onnx")
    # Cross-entropy reads the first output: the aux head's weight keeps its value (quantized, not retrained).
    with pytest.warns(UserWarning, match=r"\['w_aux'\] do not affect the loss") if labels else nullcontext():
        summary = quantize(tmp_path / "model.onnx", QuantizeConfig(bits=4, training=TRAINING),
                           tmp_path / "data.npz", tmp_path / "model.inq.onnx")
    result = summary.result
    assert result.mode == ("labels" if labels else "distillation")
    assert [layer.node for layer in result.layers] == ["tok_proj", "feat_proj", "cls", "aux_head"]
    assert [c.name for c in summary.rewrite_check] == ["logits", "aux"]
    report = validate(tmp_path / "model.onnx", tmp_path / "model.inq.onnx", tmp_path / "data.npz")
    assert report.samples == 48 and [c.name for c in report.outputs] == ["logits", "aux"]
    assert all(c.cosine > 0.9 for c in report.outputs)
    assert (report.accuracy_original is not None) == labels
