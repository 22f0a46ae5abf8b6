"""BatchNormalization folding: the folded model computes the original's function; what cannot fold stays, with why."""

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inq_onnx.batchnorm import fold_batchnorm
from inq_onnx.data import Dataset
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.retrain import RetrainConfig
from inq_onnx.runtime import make_session

from models import batch_norm_model, batch_norm_stats, make_model, random_inputs, weights

# Folding changes the order of float operations only: outputs agree to float32 rounding of their magnitude.
FOLD_RTOL = 1e-5


def run(model, feeds):
    return make_session(model).run(None, feeds)


def assert_same_function(original, folded, feeds):
    for want, got in zip(run(original, feeds), run(folded, feeds)):
        assert np.abs(got - want).max() <= FOLD_RTOL * np.abs(want).max()


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("depthwise", [False, True], ids=["dense", "depthwise"])
def test_folded_model_has_no_batchnorm_and_matches_the_original(depthwise):
    model = batch_norm_model(spread=6, depthwise=depthwise)
    folded, report = fold_batchnorm(model)
    onnx.checker.check_model(folded, full_check=True)
    assert [(f.batchnorm, f.layer) for f in report.folded] == [("bn0", "conv0"), ("bn1", "conv1"), ("bn_fc", "fc")]
    assert report.kept == [] and "BatchNormalization" not in ops(folded)
    assert ops(folded) == Counter(Conv=2, Relu=2, Flatten=1, Gemm=1)
    assert [n.input[2] for n in folded.graph.node if n.op_type == "Conv"] == ["conv0_bias", "b1"]  # bias made
    assert_same_function(model, folded, {"x": random_inputs(0, 32)})
    assert "BatchNormalization" in ops(model)  # the caller's model is left as it was


def gemm_bn_model(trans_b, c_shape, beta, seed=0):
    """Gemm(alpha 0.7) → BatchNormalization on (N, 6) → (N, 4); C of `c_shape` (None: no C)."""
    rng = np.random.default_rng(seed)
    init = {"w": weights(rng, *((4, 6) if trans_b else (6, 4))),
            **{f"bn.{k}": v for k, v in batch_norm_stats(rng, 4, spread=3).items()}}
    inputs = ["a", "w"]
    if c_shape is not None:
        init["c"] = weights(rng, *c_shape)
        inputs.append("c")
    nodes = [helper.make_node("Gemm", inputs, ["g"], name="fc", transB=trans_b, alpha=0.7, beta=beta),
             helper.make_node("BatchNormalization", ["g", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["y"],
                              name="bn")]
    return make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], init)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape, beta", [(None, 1.0), ((), 2.0), ((1,), 1.0), ((4,), 0.5), ((1, 4), 1.0),
                                           ((3, 4), -1.5), ((3, 1), 1.0)])
def test_gemm_folds_with_every_bias_layout(trans_b, c_shape, beta):
    model = gemm_bn_model(trans_b, c_shape, beta)
    folded, report = fold_batchnorm(model)
    onnx.checker.check_model(folded, full_check=True)
    assert [f.layer for f in report.folded] == ["fc"] and ops(folded) == Counter(Gemm=1)
    gemm = folded.graph.node[0]
    assert all(a.name != "beta" for a in gemm.attribute)  # beta went into the new bias
    a = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    assert_same_function(model, folded, {"a": a})


def test_a_weight_shared_by_two_convs_gets_one_folded_copy_each():
    rng = np.random.default_rng(0)
    init = {"w": weights(rng, 4, 2, 3, 3), "b": weights(rng, 4, scale=0.1)}
    nodes = []
    for name in ("left", "right"):
        init.update({f"{name}.{k}": v for k, v in batch_norm_stats(rng, 4, spread=4).items()})
        nodes += [helper.make_node("Conv", ["x", "w", "b"], [f"{name}_c"], name=name, pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"{name}_c", *(f"{name}.{k}" for k in
                                                                         ("scale", "bias", "mean", "var"))],
                                   [f"{name}_y"], name=f"{name}_bn")]
    outputs = [helper.make_tensor_value_info(f"{n}_y", TensorProto.FLOAT, ["N", 4, 6, 6]) for n in ("left", "right")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])], outputs, init)
    folded, report = fold_batchnorm(model)
    assert len(report.folded) == 2 and ops(folded) == Counter(Conv=2)
    convs = [n for n in folded.graph.node if n.op_type == "Conv"]
    assert len({c.input[1] for c in convs}) == 2 and len({c.input[2] for c in convs}) == 2
    assert {t.name for t in folded.graph.initializer} == {c.input[i] for c in convs for i in (1, 2)}  # no leftovers
    assert_same_function(model, folded, {"x": random_inputs(0, 8)})


def _kept_case(case):
    """A Conv → BN model altered so that the BN must stay; returns (model, reason)."""
    rng = np.random.default_rng(0)
    stats = batch_norm_stats(rng, 4)
    init = {"w": weights(rng, 4, 2, 3, 3), **{f"bn.{k}": v for k, v in stats.items()}}
    bn_inputs = ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"]
    bn_outputs, bn_attrs, extra_inputs = ["y"], {}, []
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])]
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])
    nodes = [conv]
    if case == "after Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
        bn_inputs[0] = "r"
        reason = "its input does not come from a Conv or Gemm"
    elif case == "conv output also a graph output":
        outputs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 4, 6, 6]))
        reason = "the output of conv is also read elsewhere"
    elif case == "training mode":
        bn_outputs += ["running_mean", "running_var"]
        bn_attrs["training_mode"] = 1
        reason = "training mode"
    elif case == "scale is a graph input":
        del init["bn.scale"]
        extra_inputs.append(helper.make_tensor_value_info("bn.scale", TensorProto.FLOAT, [4]))
        reason = "not a constant float initializer"
    else:  # the conv's weight is a graph input
        del init["w"]
        extra_inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2, 3, 3]))
        reason = "the weight of conv is not a constant float initializer"
    nodes.append(helper.make_node("BatchNormalization", bn_inputs, bn_outputs, name="bn", **bn_attrs))
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6]),
                               *extra_inputs], outputs, init)
    return model, reason


@pytest.mark.parametrize("case", ["after Relu", "conv output also a graph output", "training mode",
                                  "scale is a graph input", "weight is a graph input"])
def test_batchnorm_that_cannot_fold_stays_with_the_reason(case):
    model, reason = _kept_case(case)
    folded, report = fold_batchnorm(model)
    assert report.folded == [] and len(report.kept) == 1
    node, why = report.kept[0]
    assert node == "bn" and reason in why
    assert reason in report.summary()
    assert [n.SerializeToString() for n in folded.graph.node] == [n.SerializeToString() for n in model.graph.node]


def test_quantize_folds_first_and_deploys_no_batchnorm():
    model = batch_norm_model(spread=4)
    result = quantize_model(model, QuantizeConfig(bits=5, retrain=False))
    assert [f.batchnorm for f in result.batchnorm.folded] == ["bn0", "bn1", "bn_fc"]
    assert result.batchnorm.summary().startswith("3 folded into the layer before (bn0 into conv0")
    assert ops(result.model) == Counter(ShiftConv=2, Flatten=1, ShiftGemm=1)  # Relu fused, no BN left
    assert "BatchNormalization" not in ops(result.float_model)
    check_rewrite(result)  # the rewrite reproduces the folded float model with the same weights


def relative_rms(got, want):
    return float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))


def test_per_channel_ranges_beat_one_range_per_tensor_on_a_folded_bn_net():
    """The depthwise layer's folded weights span 2^6 across channels: one range per tensor zeroes the small
    channels, whose outputs the BN had scaled back up."""
    model = batch_norm_model(seed=0, spread=6, depthwise=True)
    x = random_inputs(1, 64)
    (want,) = run(model, {"x": x})
    drift = {}
    for granularity in ("tensor", "channel"):
        result = quantize_model(model, QuantizeConfig(bits=4, retrain=False, granularity=granularity))
        depthwise = next(n for n in result.model.graph.node if n.name == "conv1")
        base = next(helper.get_attribute_value(a) for a in depthwise.attribute if a.name == "exponent_base")
        assert len(base) == (8 if granularity == "channel" else 1)
        assert {p.key: p.value for p in result.model.metadata_props}["inq.granularity"] == granularity
        (got,) = run(result.model, {"x": x})
        drift[granularity] = relative_rms(got, want)
    assert drift["channel"] < 0.6 * drift["tensor"], drift


@pytest.mark.train
def test_retraining_trains_the_folded_net():
    model = batch_norm_model(spread=4)
    rng = np.random.default_rng(0)
    data = Dataset({"x": random_inputs(3, 24)}, rng.integers(0, 5, 24))
    result = quantize_model(model, QuantizeConfig(bits=4, portions=(0.5, 1.0), training=RetrainConfig(epochs=1)),
                            data)
    assert result.mode == "labels" and "BatchNormalization" not in ops(result.model)
    assert len(result.steps) == 2 and result.steps[0].epoch_losses
    check_rewrite(result, result.dataset)


@pytest.mark.parametrize("add_shape, folds", [((1, 4, 1, 1), True), ((4, 1, 1), True), ((1, 1, 6, 6), False)])
def test_bias_add_between_conv_and_batchnorm_is_taken_into_the_conv(add_shape, folds):
    """Paddle writes a Conv's bias as Add((1, C, 1, 1)) and an Identity before the BatchNormalization."""
    from inq_onnx.normalize import normalize_model

    rng = np.random.default_rng(4)
    init = {"w": weights(rng, 4, 2, 3, 3), "add": weights(rng, *add_shape),
            **{f"bn.{k}": v for k, v in batch_norm_stats(rng, 4, spread=2).items()}}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "add"], ["a"], name="bias"),
             helper.make_node("Identity", ["a"], ["i"], name="same"),
             helper.make_node("BatchNormalization", ["i", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["y"],
                              name="bn")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], init)
    folded, report = fold_batchnorm(normalize_model(model))
    onnx.checker.check_model(folded, full_check=True)
    if folds:
        assert ops(folded) == Counter(Conv=1) and report.bias_adds == ["conv"]
        assert [(f.batchnorm, f.layer) for f in report.folded] == [("bn", "conv")]
    else:  # an Add that differs by position is no bias
        assert ops(folded) == Counter(Conv=1, Add=1, BatchNormalization=1) and report.bias_adds == []
    assert_same_function(model, folded, {"x": rng.standard_normal((3, 2, 6, 6)).astype(np.float32)})
