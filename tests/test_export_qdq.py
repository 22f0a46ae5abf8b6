"""QDQ export: exact int8 INQ weights, onnxruntime fuses QLinearConv/QGemm, calibration, 5-bit limits, CLI."""

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.calibrate import RANGES_KEY, activation_ranges, ranges_metadata
from inq_onnx.cli.main import cli
from inq_onnx.errors import ConfigError, ModelError
from inq_onnx.export import export_float, export_qdq
from inq_onnx.packed_nodes import packed_weight, shift_nodes
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.qdq import activation_qparams, int8_weight

from models import conv_gemm_model, fixed_batch_model, make_model, random_inputs

ort = pytest.importorskip("onnxruntime")


def quantized(bits, seed=0, model=None):
    model = model or conv_gemm_model(seed=seed, channels=8)
    return quantize_model(model, QuantizeConfig(bits=bits, retrain=False)).model


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def optimized_ops(model) -> Counter:
    """Op histogram of the graph onnxruntime actually runs (its optimized model)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def assert_within_steps(got, want, steps=4):
    """Max |diff| within `steps` quantization steps of the u8 scale that covers `want`, mean within one."""
    step = float(activation_qparams(want.min(), want.max())[0])
    diff = np.abs(got - want)
    assert diff.max() <= steps * step and diff.mean() <= step, (diff.max() / step, diff.mean() / step)


def dequantized_weight(model, node):
    """The float weight a QDQ layer sees: its DequantizeLinear's int8 values times the per-channel scales."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = next(n for n in model.graph.node if n.output[0] == node.input[1])
    assert dq.op_type == "DequantizeLinear"
    values, scales, zeros = (inits[name] for name in dq.input)
    assert values.dtype == np.int8 and not zeros.any()
    assert np.all(np.frexp(scales)[0] == 0.5)  # powers of two
    axis = helper.get_attribute_value(dq.attribute[0])
    view = [1] * values.ndim
    view[axis] = -1
    return values.astype(np.float32) * scales.reshape(view)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_qdq_weights_are_exactly_the_inq_weights(bits):
    model = quantized(bits, seed=bits)
    exported = export_qdq(model, inputs={"x": random_inputs(0, 64)})
    assert sorted(exported.quantized) == ["conv1", "conv_dw", "fc"] and exported.notes == []
    layers = {n.name: n for n in exported.model.graph.node if n.op_type in ("Conv", "Gemm")}
    initializers = {t.name: t for t in model.graph.initializer}
    for node in shift_nodes(model):
        decoded = packed_weight(node, initializers).decode()
        np.testing.assert_array_equal(dequantized_weight(exported.model, layers[node.name]), decoded)
    onnx.checker.check_model(exported.model, full_check=True)
    assert all(o.domain != "com.inq" for o in exported.model.opset_import)
    ops = Counter(n.op_type for n in exported.model.graph.node)
    assert ops["Relu"] == 0  # its clamp is the u8 output range of conv1 (zero point 0)
    assert ops["DequantizeLinear"] == 3 + 3 + 2 + 2  # weights, outputs, biases, layer inputs x and f


def test_onnxruntime_fuses_the_4bit_model_into_qlinearconv_and_qgemm():
    exported = export_qdq(quantized(4), inputs={"x": random_inputs(0, 64)})
    ops = optimized_ops(exported.model)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 1, ops
    assert not ops["Conv"] and not ops["Gemm"] and not ops["FusedConv"], ops


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qdq_outputs_stay_within_a_few_activation_steps_of_the_float_export(seed):
    """Rounding x, conv1's output, the Gemm input and the logits each costs at most half a step of that
    tensor's u8 scale, and the layers pass it on with gains near one: measured max 3.1 and mean 0.6 steps of
    the logits' scale over 18 seeded models. On the calibration data nothing saturates, so bound the max by 4
    steps, the mean by 1 step, and top-1 agreement (5 classes of random logits, many near ties) by 95%."""
    model = quantized(4, seed=seed)
    x = random_inputs(100 + seed, 256)
    got = run(export_qdq(model, inputs={"x": x}).model, x)
    want = run(export_float(model), x)
    assert_within_steps(got, want)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95


def test_int8_weight_takes_each_channels_smallest_level_as_scale():
    weight = np.array([[2.0**-7, -1.0, 0.0],  # -128 at scale 2^-7: fits
                       [0.0, 0.0, 0.0],  # all zero: scale 1
                       [0.25, -0.5, 2.0**-3]], np.float32)
    values, scales = int8_weight(weight, axis=0)
    np.testing.assert_array_equal(scales, [2.0**-7, 1.0, 2.0**-3])
    np.testing.assert_array_equal(values, [[1, -128, 0], [0, 0, 0], [2, -4, 1]])
    values, scales = int8_weight(weight.T, axis=1)
    np.testing.assert_array_equal(values, [[1, 0, 2], [-128, 0, -4], [0, 0, 1]])


@pytest.mark.parametrize("row, reason", [([2.0**-7, 1.0], r"needs int8 values \+1..\+128"),
                                         ([0.3, 1.0], "not all 0 or ±2\\^k")])
def test_int8_weight_rejects_what_int8_cannot_hold(row, reason):
    from inq_onnx.qdq import _Float

    with pytest.raises(_Float, match=reason):
        int8_weight(np.array([row], np.float32), axis=0)


def five_bit_model():
    """Conv whose channel 0 spans 2^-7..+2^0 (+128 at scale 2^-7: no int8), then Gemm spanning 2^0..2^-6."""
    rng = np.random.default_rng(5)
    conv = rng.choice([0.0, 2.0**-3, -2.0**-2, 2.0**-1], size=(3, 2, 3, 3)).astype(np.float32)
    conv[0, 0, 0, :2] = [1.0, 2.0**-7]
    conv[1, 0, 0, :2] = [-1.0, 2.0**-7]  # -128 fits
    gemm = rng.choice([0.0, 2.0**-6, -2.0**-3, 1.0], size=(4, 3 * 16)).astype(np.float32)
    gemm[:, 0] = 1.0
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Flatten", ["r1"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w2"], ["logits"], name="fc", transB=1)]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
                      {"w1": conv, "w2": gemm})


def test_5bit_layer_beyond_int8_stays_float_with_a_note_or_fails_when_strict():
    model = quantized(5, model=five_bit_model())
    x = random_inputs(1, 32)
    exported = export_qdq(model, inputs={"x": x})
    assert exported.quantized == ["fc"]
    assert len(exported.notes) == 1 and exported.notes[0].startswith("conv1 (Conv) stays float: output channel 0 "
                                                                      "needs int8 values -32..+128 at scale 2^-7")
    ops = Counter(n.op_type for n in exported.model.graph.node)
    assert ops["Conv"] == 1 and ops["Relu"] == 1 and ops["DequantizeLinear"] == 3  # fc: input, weight, output
    conv = next(n for n in exported.model.graph.node if n.op_type == "Conv")
    assert conv.input[1] in {t.name for t in exported.model.graph.initializer}  # the float weight, untouched
    assert optimized_ops(exported.model)["QGemm"] == 1
    assert_within_steps(run(exported.model, x), run(export_float(model), x))
    with pytest.raises(ModelError, match=r"layer conv1 \(Conv\) cannot be exported to int8 exactly: output "
                                         r"channel 0 needs int8 values -32..\+128 at scale 2\^-7"):
        export_qdq(model, inputs={"x": x}, strict=True)


def test_stored_ranges_give_the_same_model_as_calibration():
    model = quantized(4, seed=3)
    x = random_inputs(3, 64)
    calibrated = export_qdq(model, inputs={"x": x})
    ranges = activation_ranges(export_float(model), {"x": x})
    model.metadata_props.add(key=RANGES_KEY, value=ranges_metadata(ranges))
    stored = export_qdq(model)
    assert (calibrated.ranges_from, stored.ranges_from) == ("data", "metadata")
    assert stored.model.SerializeToString() == calibrated.model.SerializeToString()
    assert export_qdq(model, ranges).model.SerializeToString() == calibrated.model.SerializeToString()


def test_activation_ranges_are_the_extremes_of_every_float_tensor():
    model = export_float(quantized(4, seed=4))
    x = random_inputs(4, 50)
    ranges = activation_ranges(model, {"x": x}, batch_size=7)
    assert set(ranges) == {"x"} | {name for node in model.graph.node for name in node.output}
    assert ranges["x"] == (float(x.min()), float(x.max()))
    logits = run(model, x)
    np.testing.assert_allclose(ranges["logits"], (logits.min(), logits.max()), rtol=1e-6)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert ranges[relu.output[0]][0] == 0.0
    whole = activation_ranges(model, {"x": x}, batch_size=50)
    for name, (lo, hi) in whole.items():
        np.testing.assert_allclose(ranges[name], (lo, hi), rtol=1e-5, atol=1e-6)


def test_calibration_runs_models_with_a_fixed_batch():
    fixed = quantize_model(fixed_batch_model(seed=2), QuantizeConfig(bits=4, retrain=False)).model
    x = random_inputs(2, 5)
    exported = export_qdq(fixed, inputs={"x": x}, batch_size=2)
    assert len(exported.quantized) == 3


def test_export_qdq_errors():
    model = quantized(4)
    with pytest.raises(ModelError, match="needs --data or a model converted with --activations int8"):
        export_qdq(model)
    with pytest.raises(ModelError, match="no ShiftConv/ShiftGemm/ShiftMatMul nodes"):
        export_qdq(conv_gemm_model(), inputs={"x": random_inputs(0, 4)})
    with pytest.raises(ConfigError, match="not both"):
        export_qdq(model, {"x": (0.0, 1.0)}, {"x": random_inputs(0, 4)})
    model.metadata_props.add(key=RANGES_KEY, value='{"x": [1, 0]}')
    with pytest.raises(ModelError, match="finite min <= max"):
        export_qdq(model)


def test_missing_range_keeps_the_layer_float_or_fails_when_strict():
    model = quantized(4)
    ranges = activation_ranges(export_float(model), {"x": random_inputs(0, 16)})
    del ranges["f"]
    exported = export_qdq(model, ranges)
    assert sorted(exported.quantized) == ["conv1", "conv_dw"]
    assert exported.notes == ["fc (Gemm) stays float: no activation range for tensor 'f'"]
    with pytest.raises(ModelError, match="layer fc .*no activation range for tensor 'f'"):
        export_qdq(model, ranges, strict=True)


@pytest.fixture
def files(tmp_path):
    onnx.save(conv_gemm_model(seed=1, channels=8), tmp_path / "model.onnx")
    onnx.save(five_bit_model(), tmp_path / "five.onnx")
    x = random_inputs(0, 64)
    np.savez(tmp_path / "data.npz", x=x, labels=np.random.default_rng(0).integers(0, 5, 64))
    np.savez(tmp_path / "five.npz", x=x)
    return tmp_path


def cli_run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_exports_qdq_and_validates_it_against_the_com_inq_model(files):
    code, out = cli_run("quantize", files / "model.onnx", "--bits", 4, "--no-retrain", "--quiet")
    assert code == 0, out
    code, out = cli_run("export", files / "model.inq.onnx", "--format", "qdq", "--data", files / "data.npz",
                        "-o", files / "model.qdq.onnx")
    assert code == 0 and "Note:" not in out, out
    assert optimized_ops(onnx.load(files / "model.qdq.onnx"))["QLinearConv"] == 2
    code, out = cli_run("validate", files / "model.inq.onnx", files / "model.qdq.onnx", "--data",
                        files / "data.npz", "--quiet")
    assert code == 0, out
    assert "64 samples" in out and "top-1 agree" in out


def test_cli_qdq_notes_float_layers_and_fails_when_strict(files):
    code, out = cli_run("quantize", files / "five.onnx", "--bits", 5, "--no-retrain", "--quiet")
    assert code == 0, out
    code, out = cli_run("export", files / "five.inq.onnx", "--format", "qdq", "--data", files / "five.npz",
                        "-o", files / "five.qdq.onnx")
    assert code == 0 and "Note: conv1 (Conv) stays float" in out, out
    code, out = cli_run("export", files / "five.inq.onnx", "--format", "qdq", "--data", files / "five.npz",
                        "--strict", "-o", files / "strict.onnx")
    assert code == 1 and "Error: layer conv1 (Conv) cannot be exported to int8 exactly" in out, out
    assert not (files / "strict.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--format", "qdq"], "needs --data or a model converted with --activations int8"),
    (["--format", "float", "--data", "{d}/data.npz"], "--data and --strict apply to --format qdq only"),
])
def test_cli_qdq_errors(files, args, message):
    cli_run("quantize", files / "model.onnx", "--bits", 4, "--no-retrain", "--quiet")
    code, out = cli_run("export", files / "model.inq.onnx", *[a.format(d=files) for a in args],
                        "-o", files / "x.onnx")
    assert code != 0 and message in out and out.startswith("Error: "), out
