"""Per-channel exponent ranges through every consumer: the ops, the reference, integer mode, QDQ export, info, CLI."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.api import info
from inq_onnx.cli.main import cli
from inq_onnx.errors import ConfigError
from inq_onnx.export import export_float, export_qdq
from inq_onnx.model_info import model_info
from inq_onnx.packed_nodes import packed_weight, shift_nodes
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.runtime import make_session

from models import batch_norm_model, make_model, random_inputs, weights


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def spread_gemm(trans_b):
    """Gemm (N, 12) → (N, 6) whose output columns span 2^-7..1 in scale."""
    rng = np.random.default_rng(0)
    w = weights(rng, 12, 6) * np.exp2(-np.arange(6, dtype=np.float32) * 1.4)  # (K, N): columns are channels
    node = helper.make_node("Gemm", ["a", "w", "c"], ["y"], name="fc", transB=trans_b)
    return make_model([node], [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 12])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
                      {"w": w.T.copy() if trans_b else w, "c": weights(rng, 6, scale=0.01)})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_ranges_follow_its_output_axis_in_kernel_and_reference(trans_b):
    result = quantize_model(spread_gemm(trans_b), QuantizeConfig(bits=3, retrain=False))
    packed = packed_weight(shift_nodes(result.model)[0], {t.name: t for t in result.model.graph.initializer})
    assert packed.channel_axis == (0 if trans_b else 1) and len(packed.exponent_base) == 6
    decoded = packed.decode()
    assert np.all(np.abs(decoded).max(axis=1 - packed.channel_axis) > 0)  # every column kept
    a = np.random.default_rng(1).standard_normal((5, 12)).astype(np.float32)
    want = make_session(result.float_model).run(None, {"a": a})[0]
    got = make_session(result.model).run(None, {"a": a})[0]
    reference = ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, {"a": a})[0]
    assert relative_error(got, want) < 1e-6 and relative_error(reference, want) < 1e-6


def test_integer_mode_and_qdq_export_take_per_channel_ranges():
    """Integer accumulation scales each channel by its own 2^n2; the QDQ form keeps the exact weights."""
    model = batch_norm_model(spread=6, depthwise=True)
    x = random_inputs(2, 64)
    result = quantize_model(model, QuantizeConfig(bits=4, retrain=False, activations="int8"))
    assert len(result.activation_mode.integer_nodes) == 3
    float_mode = make_session(result.checked_model).run(None, {"x": x})[0]
    int8 = make_session(result.model).run(None, {"x": x})[0]
    assert relative_error(int8, float_mode) < 0.05
    exported = export_qdq(result.model, inputs={"x": x})
    assert exported.notes == []  # every layer exported int8
    qdq = make_session(exported.model).run(None, {"x": x})[0]
    assert relative_error(qdq, float_mode) < 0.05
    assert relative_error(make_session(export_float(result.model)).run(None, {"x": x})[0], float_mode) < 1e-5


def test_granularity_is_checked_and_recorded():
    with pytest.raises(ConfigError, match="granularity must be one of auto, tensor, channel, got 'row'"):
        QuantizeConfig(granularity="row")
    assert QuantizeConfig().granularity == "auto"
    result = quantize_model(batch_norm_model(), QuantizeConfig(retrain=False, granularity="tensor"))
    check_rewrite(result)
    assert all(len(packed_weight(n, {t.name: t for t in result.model.graph.initializer}).exponent_base) == 1
               for n in shift_nodes(result.model))
    assert model_info(result.model).granularity == "tensor"


def test_cli_granularity_option_and_info(tmp_path):
    onnx.save(batch_norm_model(spread=4), tmp_path / "bn.onnx")
    runner = CliRunner()
    out = runner.invoke(cli, ["quantize", str(tmp_path / "bn.onnx"), "--no-retrain", "--quiet", "--granularity",
                              "tensor"])
    assert out.exit_code == 0, out.output
    assert "BatchNormalization: 3 folded into the layer before (bn0 into conv0, bn1 into conv1, bn_fc into fc)." \
        in out.output
    shown = runner.invoke(cli, ["info", str(tmp_path / "bn.inq.onnx")])
    assert shown.exit_code == 0 and "exponent ranges: per tensor" in shown.output, shown.output
    assert json.loads(runner.invoke(cli, ["info", str(tmp_path / "bn.inq.onnx"), "--json"]).stdout)[
        "granularity"] == "tensor"
    assert info(tmp_path / "bn.onnx").granularity is None  # a float model has none

    bad = runner.invoke(cli, ["quantize", str(tmp_path / "bn.onnx"), "--no-retrain", "--granularity", "row"])
    assert bad.exit_code == 2 and "'row' is not one of 'auto', 'tensor', 'channel'" in bad.output


@pytest.mark.parametrize("bits, expected", [(3, "channel"), (4, "channel"), (5, "tensor"), (6, "tensor")])
def test_auto_granularity_is_per_channel_below_5_bits(bits, expected):
    result = quantize_model(batch_norm_model(spread=4), QuantizeConfig(bits=bits, retrain=False))
    initializers = {t.name: t for t in result.model.graph.initializer}
    per_channel = {len(packed_weight(n, initializers).exponent_base) > 1 for n in shift_nodes(result.model)}
    assert per_channel == {expected == "channel"}
    assert model_info(result.model).granularity == expected


def test_auto_granularity_follows_each_layers_bits():
    model = batch_norm_model(spread=4)
    result = quantize_model(model, QuantizeConfig(bits=4, retrain=False, layer_bits={"fc": 5}))
    initializers = {t.name: t for t in result.model.graph.initializer}
    ranges = {n.name: len(packed_weight(n, initializers).exponent_base) for n in shift_nodes(result.model)}
    assert ranges["fc"] == 1 and all(count > 1 for name, count in ranges.items() if name != "fc")
    assert model_info(result.model).granularity == "mixed"


def test_range_rule_is_checked_recorded_and_moves_ranges():
    from inq_onnx.quantizer import layer_levels

    with pytest.raises(ConfigError, match="range_rule must be one of max, mse, got 'min'"):
        QuantizeConfig(range_rule="min")
    assert QuantizeConfig().range_rule == "mse"
    model = batch_norm_model(spread=4)
    paper = quantize_model(model, QuantizeConfig(bits=2, retrain=False, layer_bits={"fc": 5}, range_rule="max"))
    fitted = quantize_model(model, QuantizeConfig(bits=2, retrain=False, layer_bits={"fc": 5}))
    assert [model_info(r.model).range_rule for r in (paper, fitted)] == ["max", "mse"]
    weights = {layer.weight: layer for layer in fitted.layers}
    originals = {t.name: onnx.numpy_helper.to_array(t) for t in fitted.source_model.graph.initializer}
    for name, levels in fitted.levels.items():
        axis = weights[name].channel_axis if levels.per_channel else None
        assert levels == layer_levels(originals[name], levels.bits, axis, mse=True)
        assert paper.levels[name] == layer_levels(originals[name], levels.bits, axis)
    assert any(fitted.levels[n] != paper.levels[n] for n in fitted.levels)  # the rule moved some 2-bit range
    check_rewrite(fitted)


def test_cli_range_rule_option_and_info(tmp_path):
    onnx.save(batch_norm_model(spread=4), tmp_path / "bn.onnx")
    runner = CliRunner()
    out = runner.invoke(cli, ["quantize", str(tmp_path / "bn.onnx"), "--no-retrain", "--quiet", "--bits", "3",
                              "--range-rule", "max"])
    assert out.exit_code == 0, out.output
    shown = runner.invoke(cli, ["info", str(tmp_path / "bn.inq.onnx")])
    assert "exponent ranges: per channel, from each largest weight" in shown.output, shown.output
    out = runner.invoke(cli, ["quantize", str(tmp_path / "bn.onnx"), "--no-retrain", "--quiet", "--bits", "3"])
    assert out.exit_code == 0, out.output
    shown = runner.invoke(cli, ["info", str(tmp_path / "bn.inq.onnx")])
    assert "exponent ranges: per channel, placed by squared rounding error" in shown.output, shown.output
