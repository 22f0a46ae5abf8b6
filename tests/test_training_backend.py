"""Tests of OrtGradientBackend: gradients against float64 finite differences, training on digits, losses, errors."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.errors import ConfigError, DataError, ModelError, RuntimeUnavailableError
from inq_onnx.training._ort_import import load_ort_training

# In the deployment environment the `train` marker skips every test here (conftest.py); in the training
# environment a broken onnxruntime-training must fail them, not skip them.
pytestmark = pytest.mark.train
try:
    load_ort_training()
    from inq_onnx.training.ort_backend import OrtGradientBackend
except RuntimeUnavailableError:
    OrtGradientBackend = None

FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE


# -- tiny models ------------------------------------------------------------------------------------------------

def _initializers(shapes: dict[str, tuple[int, ...]], seed: int, elem_type: int) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    return [numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]) or 1)).astype(dtype),
                                    name) for name, shape in shapes.items()]


def cnn(elem_type: int = FLOAT, opset: int = 17, seed: int = 0, batch_norm: bool = False, batch: int | str = "N"
        ) -> onnx.ModelProto:
    """Conv-[BatchNorm]-Relu-MaxPool-Conv-Relu-MaxPool-Flatten-Gemm-Softmax on (batch, 1, H, W) images."""
    inits = _initializers({"c1.w": (4, 1, 3, 3), "c1.b": (4,), "c2.w": (8, 4, 3, 3), "c2.b": (8,),
                           "fc.w": (32, 10), "fc.b": (10,)}, seed, elem_type)
    first = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["a1"], name="conv1", pads=[1, 1, 1, 1])]
    if batch_norm:
        dtype = helper.tensor_dtype_to_np_dtype(elem_type)
        stats = {"bn.scale": [1.0, 0.5, 2.0, 1.5], "bn.bias": [0.1, -0.2, 0.0, 0.3],
                 "bn.mean": [0.05, -0.1, 0.2, 0.0], "bn.var": [0.5, 1.0, 2.0, 0.8]}
        inits += [numpy_helper.from_array(np.array(v, dtype), name) for name, v in stats.items()]
        first.append(helper.make_node("BatchNormalization", ["a1", *stats], ["a1n"], name="bn1"))
        first[0].output[0] = "a1c"
        first[1].input[0] = "a1c"
        first[1].output[0] = "a1"
    nodes = [
        *first,
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["a2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1 if opset >= 13 else 1),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", elem_type, [batch, 1, "H", "W"])],
                              [helper.make_tensor_value_info("probs", elem_type, [batch, 10])], inits)
    return _finish(graph, opset)


def mlp(elem_type: int = FLOAT, opset: int = 17, seed: int = 1, two_outputs: bool = False,
        activation: str = "HardSigmoid") -> onnx.ModelProto:
    """Gemm-HardSigmoid-Gemm on (N, 6) inputs; optionally the hidden activation as a second output."""
    inits = _initializers({"w1": (6, 5), "b1": (5,), "w2": (5, 3), "b2": (3,)}, seed, elem_type)
    attrs = {"alpha": 0.3, "beta": 0.45} if activation == "HardSigmoid" else {}
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node(activation, ["h"], ["act"], name="act1", **attrs),
        helper.make_node("Gemm", ["act", "w2", "b2"], ["y"], name="fc2"),
    ]
    outputs = [helper.make_tensor_value_info("y", elem_type, ["N", 3])]
    if two_outputs:
        outputs.append(helper.make_tensor_value_info("act", elem_type, ["N", 5]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", elem_type, ["N", 6])], outputs, inits)
    return _finish(graph, opset)


def _finish(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


def float_names(model: onnx.ModelProto) -> list[str]:
    return [init.name for init in model.graph.initializer]


# -- float64 reference -----------------------------------------------------------------------------------------

def reference_loss(model64: onnx.ModelProto, params: dict[str, np.ndarray], x: np.ndarray, target, loss: str
                   ) -> float:
    """The loss computed in float64 with onnx's reference evaluator on a float64 copy of the model."""
    model = onnx.ModelProto()
    model.CopyFrom(model64)
    for init in model.graph.initializer:
        if init.name in params:
            init.CopyFrom(numpy_helper.from_array(params[init.name].astype(np.float64), init.name))
    outputs = ReferenceEvaluator(model).run(None, {"x": x.astype(np.float64)})
    if loss == "cross_entropy":
        probs = outputs[0]
        return float(-np.mean(np.log(probs[np.arange(len(target)), target])))
    return float(sum(np.mean((out - t) ** 2) for out, t in zip(outputs, target)))


CASES = {
    "cnn-cross_entropy": (cnn, {}, "cross_entropy", (1, 8, 8)),
    "cnn-batchnorm-fixed-batch-cross_entropy": (cnn, {"batch_norm": True, "batch": 1}, "cross_entropy", (1, 8, 8)),
    "mlp-cross_entropy": (mlp, {"activation": "HardSigmoid"}, "cross_entropy", (6,)),
    "mlp-hardswish-cross_entropy": (mlp, {"activation": "HardSwish", "opset": 17}, "cross_entropy", (6,)),
    "mlp-distillation": (mlp, {"two_outputs": True}, "distillation", (6,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_match_float64_central_differences(case, tmp_path):
    build, kwargs, loss, sample_shape = CASES[case]
    model32, model64 = build(FLOAT, **kwargs), build(DOUBLE, **kwargs)
    if build is mlp and loss == "cross_entropy":  # cross-entropy reference reads probabilities
        for model, elem in ((model32, FLOAT), (model64, DOUBLE)):
            model.graph.node.append(helper.make_node("Softmax", ["y"], ["probs"], axis=-1))
            model.graph.output[0].CopyFrom(helper.make_tensor_value_info("probs", elem, ["N", 3]))
    rng = np.random.default_rng(42)
    x = rng.standard_normal((5, *sample_shape)).astype(np.float32)
    if loss == "cross_entropy":
        target = rng.integers(0, 3, size=5).astype(np.int64)
    else:
        target = [rng.standard_normal((5, 3)).astype(np.float32), rng.random((5, 5)).astype(np.float32)]

    with OrtGradientBackend(model32, float_names(model32), loss, {"x": sample_shape}, workdir=tmp_path) as backend:
        params = backend.get_parameters()
        ort_loss, grads = backend.loss_and_gradients({"x": x}, target)

    params64 = {name: value.astype(np.float64) for name, value in params.items()}
    ref64 = [t.astype(np.float64) for t in target] if loss == "distillation" else target
    assert ort_loss == pytest.approx(reference_loss(model64, params64, x, ref64, loss), rel=1e-5)
    eps = 1e-6
    for name, value in params64.items():
        assert grads[name].shape == value.shape and grads[name].dtype == np.float32
        for flat in rng.choice(value.size, size=min(4, value.size), replace=False):
            index = np.unravel_index(flat, value.shape)
            plus, minus = value.copy(), value.copy()
            plus[index] += eps
            minus[index] -= eps
            numeric = (reference_loss(model64, {**params64, name: plus}, x, ref64, loss)
                       - reference_loss(model64, {**params64, name: minus}, x, ref64, loss)) / (2 * eps)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-3, abs=1e-5), (name, index)


def test_gradients_are_not_accumulated_and_batch_size_may_vary(tmp_path):
    model = cnn()
    rng = np.random.default_rng(3)
    x = rng.random((7, 1, 8, 8), dtype=np.float32)
    labels = rng.integers(0, 10, size=7)
    with OrtGradientBackend(model, float_names(model), "cross_entropy", {"x": (1, 8, 8)}, workdir=tmp_path) as b:
        loss_a, grads_a = b.loss_and_gradients({"x": x}, labels)
        loss_small, grads_small = b.loss_and_gradients({"x": x[:3]}, labels[:3])  # last partial batch
        loss_b, grads_b = b.loss_and_gradients({"x": x}, labels)
    assert loss_a == loss_b and loss_small != loss_a
    for name in grads_a:
        np.testing.assert_array_equal(grads_a[name], grads_b[name])
        assert not np.array_equal(grads_a[name], grads_small[name])


def test_sgd_in_numpy_lowers_the_loss_on_digits(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn provides the digits data set")
    digits = datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    model = cnn(seed=5)
    rng = np.random.default_rng(0)
    with OrtGradientBackend(model, float_names(model), "cross_entropy", {"x": (1, 8, 8)}, workdir=tmp_path) as b:
        initial_loss, _ = b.loss_and_gradients({"x": images}, labels)
        for _ in range(10):
            order = rng.permutation(len(images))
            for start in range(0, len(images), 64):
                batch = order[start:start + 64]
                _, grads = b.loss_and_gradients({"x": images[batch]}, labels[batch])
                params = b.get_parameters()
                b.set_parameters({name: params[name] - 0.2 * grads[name] for name in grads})
        final_loss, _ = b.loss_and_gradients({"x": images}, labels)
        accuracy = np.mean(b.predict({"x": images})[0].argmax(axis=1) == labels)
    assert final_loss < 0.4 * initial_loss
    assert accuracy > 0.6


def test_distillation_loss_vanishes_when_the_teacher_is_the_model_itself(tmp_path):
    model = mlp(two_outputs=True)
    x = np.random.default_rng(4).standard_normal((9, 6)).astype(np.float32)
    with OrtGradientBackend(model, ["w1", "w2"], "distillation", {"x": (6,)}, workdir=tmp_path) as backend:
        teacher = backend.predict({"x": x})
        loss, grads = backend.loss_and_gradients({"x": x}, teacher)
    assert loss < 1e-10
    assert sorted(grads) == ["w1", "w2"]
    for grad in grads.values():
        np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_trailing_softmax_is_stripped_for_cross_entropy(tmp_path):
    model = cnn()
    rng = np.random.default_rng(6)
    x = rng.random((4, 1, 8, 8), dtype=np.float32)
    labels = np.array([0, 3, 9, 3])
    with OrtGradientBackend(model, ["fc.w"], "cross_entropy", {"x": (1, 8, 8)}, workdir=tmp_path) as backend:
        assert backend.stripped_op == "Softmax"
        assert backend.loss_outputs == ["logits"]
        loss, _ = backend.loss_and_gradients({"x": x}, labels)
        probs = backend.predict({"x": x})[0]  # predict keeps the original outputs, Softmax included
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # Cross-entropy of the logits; on the probabilities (Softmax applied twice) it would be near log(10).
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(4), labels])), rel=1e-5)


def test_parameters_round_trip_and_export_to_the_original_model(tmp_path):
    model = cnn()
    before = model.SerializeToString()
    with OrtGradientBackend(model, ["c1.w", "fc.b"], "cross_entropy", {"x": (1, 8, 8)}, workdir=tmp_path) as b:
        assert b.parameter_names == ["c1.w", "fc.b"]
        assert set(b.frozen_params) == {"c1.b", "c2.w", "c2.b", "fc.w"}
        params = b.get_parameters()
        params["c1.w"][...] = 1.0  # a copy: does not touch the backend
        np.testing.assert_array_equal(b.get_parameters()["c1.w"], numpy_helper.to_array(model.graph.initializer[0]))
        new_bias = np.arange(10, dtype=np.float32)
        b.set_parameters({"fc.b": new_bias})
        np.testing.assert_array_equal(b.get_parameters()["fc.b"], new_bias)
        exported = b.export_parameters_to()
        x = np.random.default_rng(7).random((3, 1, 8, 8), dtype=np.float32)
        predicted = b.predict({"x": x})[0]
    assert model.SerializeToString() == before
    onnx.checker.check_model(exported, full_check=True)
    assert exported.opset_import[0].version == 17 and exported.graph.input[0].type == model.graph.input[0].type
    exported_inits = {init.name: numpy_helper.to_array(init) for init in exported.graph.initializer}
    np.testing.assert_array_equal(exported_inits["fc.b"], new_bias)
    np.testing.assert_allclose(ReferenceEvaluator(exported).run(None, {"x": x})[0], predicted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", [11, 22])
def test_opsets_outside_what_ort_1_19_supports_are_converted(opset, tmp_path):
    model = mlp(opset=opset)
    x = np.random.default_rng(8).standard_normal((4, 6)).astype(np.float32)
    with OrtGradientBackend(model, ["w1"], "distillation", {"x": (6,)}, workdir=tmp_path) as backend:
        loss, grads = backend.loss_and_gradients({"x": x}, [np.zeros((4, 3), np.float32)])
        exported = backend.export_parameters_to()
    assert np.isfinite(loss) and grads["w1"].shape == (6, 5)
    assert exported.opset_import[0].version == opset  # the export keeps the original model's opset


def test_parameters_the_loss_ignores_get_zero_gradients(tmp_path):
    model = mlp(two_outputs=True)  # cross-entropy reads the first output only; an auxiliary head reads "act"
    model.graph.node.append(helper.make_node("MatMul", ["act", "w_aux"], ["aux"], name="aux_head"))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((5, 2), np.float32), "w_aux"))
    model.graph.output[1].CopyFrom(helper.make_tensor_value_info("aux", FLOAT, ["N", 2]))
    x = np.random.default_rng(9).standard_normal((4, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"parameters \['w_aux'\] do not affect the loss"):
        backend = OrtGradientBackend(model, ["w1", "w_aux"], "cross_entropy", {"x": (6,)}, workdir=tmp_path)
    with backend:
        _, grads = backend.loss_and_gradients({"x": x}, np.array([0, 1, 2, 1]))
        backend.set_parameters({"w_aux": np.full((5, 2), 3.0, np.float32)})
        exported = backend.export_parameters_to()
        aux = backend.predict({"x": x})[1]
    np.testing.assert_array_equal(grads["w_aux"], np.zeros((5, 2), np.float32))
    assert np.abs(grads["w1"]).max() > 0
    assert numpy_helper.to_array(exported.graph.initializer[-1]).tolist() == [[3.0, 3.0]] * 5
    np.testing.assert_allclose(aux, ReferenceEvaluator(exported).run(["aux"], {"x": x})[0], rtol=1e-5)


def test_dropout_and_batch_norm_train_in_inference_mode(tmp_path):
    """ORT would run BatchNormalization on batch statistics and Dropout at random; the backend keeps both as in
    the exported model (running statistics, identity), so training steps are deterministic and match predict."""
    model = cnn(batch_norm=True)
    flatten = next(node for node in model.graph.node if node.op_type == "Flatten")
    flatten.output[0] = "flat_raw"
    model.graph.node.insert(list(model.graph.node).index(flatten) + 1,
                            helper.make_node("Dropout", ["flat_raw", "ratio"], ["flat"], name="dropout"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "ratio"))
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(10)
    x, labels = rng.random((6, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, size=6)
    with OrtGradientBackend(model, ["c1.w", "bn.scale"], "cross_entropy", {"x": (1, 8, 8)},
                            workdir=tmp_path) as backend:
        losses = [backend.loss_and_gradients({"x": x}, labels)[0] for _ in range(3)]
        probs = backend.predict({"x": x})[0]
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert losses[0] == losses[1] == losses[2] == pytest.approx(-np.mean(np.log(expected[np.arange(6), labels])),
                                                                rel=1e-5)


def test_close_removes_the_artifacts(tmp_path):
    backend = OrtGradientBackend(mlp(), ["w1"], "cross_entropy", {"x": (6,)}, workdir=tmp_path)
    assert len(os.listdir(tmp_path)) == 1
    backend.close()
    assert os.listdir(tmp_path) == []


def _shrink_model() -> onnx.ModelProto:
    return mlp(activation="Shrink")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"model": _shrink_model(), "trainable": ["w1"]}, ModelError,
     r"no gradient for Shrink \(node .act1.\) \(it lies between the loss and fc1\)"),
    ({"trainable": ["nope"]}, ModelError, r"not found among the model's initializers: \['nope'\]"),
    ({"trainable": []}, ConfigError, "at least one"),
    ({"loss": "hinge"}, ConfigError, "loss must be one of"),
    ({"input_shapes": {"x": (1, 6)}}, DataError, "rank 2 in the model"),
    ({"input_shapes": {"image": (6,)}}, DataError, "inputs do not match"),
])
def test_bad_models_and_options_are_refused(kwargs, error, match, tmp_path):
    args = {"model": mlp(), "trainable": ["w1", "w2"], "loss": "cross_entropy", "input_shapes": {"x": (6,)}}
    with pytest.raises(error, match=match):
        OrtGradientBackend(**{**args, **kwargs}, workdir=tmp_path)
    assert os.listdir(tmp_path) == []


def test_integer_initializers_cannot_be_trained(tmp_path):
    model = mlp()
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2], np.int64), "shape"))
    with pytest.raises(ModelError, match=r"only float32 initializers can be trained, not shape \(INT64\)"):
        OrtGradientBackend(model, ["shape"], "cross_entropy", {"x": (6,)}, workdir=tmp_path)


def test_cross_entropy_needs_2d_logits(tmp_path):
    model = mlp()
    model.graph.node.append(helper.make_node("Unsqueeze", ["y", "axes"], ["y3"], name="unsqueeze"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "axes"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y3", FLOAT, ["N", 3, 1]))
    with pytest.raises(ModelError, match="2-D .* logits .* rank 3"):
        OrtGradientBackend(model, ["w1"], "cross_entropy", {"x": (6,)}, workdir=tmp_path)


def test_bad_batches_are_refused(tmp_path):
    x = np.zeros((4, 6), np.float32)
    with OrtGradientBackend(mlp(), ["w1"], "cross_entropy", {"x": (6,)}, workdir=tmp_path) as backend:
        with pytest.raises(DataError, match=r"labels must be in \[0, 3\)"):
            backend.loss_and_gradients({"x": x}, np.array([0, 1, 2, 3]))
        with pytest.raises(DataError, match="4 integer labels"):
            backend.loss_and_gradients({"x": x}, np.array([0, 1]))
        with pytest.raises(DataError, match=r"samples of shape \(5,\)"):
            backend.loss_and_gradients({"x": np.zeros((4, 5), np.float32)}, np.array([0, 1, 2, 0]))
        with pytest.raises(DataError, match=r"missing model inputs \['x'\]"):
            backend.loss_and_gradients({}, np.array([0, 1, 2, 0]))
