"""Mixed bit widths per layer end to end, and the accuracy-control loop that chooses them."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.accuracy_control import FLOAT_REASON, quantize_with_control
from inq_onnx.api import export, info, quantize
from inq_onnx.cli.main import cli
from inq_onnx.data import Dataset
from inq_onnx.errors import ConfigError
from inq_onnx.integer_mode import set_activations
from inq_onnx.packed_nodes import shift_nodes
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.quantizer import quantize as round_to_levels
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.runtime import make_session

from models import conv_gemm_model, make_model, random_inputs

MIXED = {"conv1": 3, "fc": 6}  # conv_dw keeps --bits 4


def node_bits(model: onnx.ModelProto) -> dict[str, int]:
    return {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in shift_nodes(model)}


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_mixed_bits_rewrite_matches_the_float_model_in_every_runtime(tmp_path):
    result = quantize_model(conv_gemm_model(), QuantizeConfig(bits=4, retrain=False, layer_bits=MIXED))
    assert node_bits(result.model) == {"conv1": 3, "conv_dw": 4, "fc": 6}
    assert metadata(result.model)["inq.layer_bits"] == "conv1=3,fc=6"
    onnx.checker.check_model(result.model, full_check=True)
    x = random_inputs(3, 8)
    want = make_session(result.float_model).run(None, {"x": x})[0]
    got = make_session(result.model).run(None, {"x": x})[0]
    reference = ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference, want, rtol=1e-5, atol=1e-5)
    assert check_rewrite(result)  # the pipeline's own check passes too
    # The distinct levels of each layer's weight fit its own width: 2^(b-1) - 1 magnitudes.
    for layer in result.layers:
        w = np.abs(onnx.numpy_helper.to_array(next(t for t in result.float_model.graph.initializer
                                                   if t.name == layer.weight)))
        per_channel = np.moveaxis(w, layer.channel_axis, 0).reshape(w.shape[layer.channel_axis], -1)
        bits = node_bits(result.model)[layer.node]
        assert max(len(np.unique(c[c > 0])) for c in per_channel) <= 2 ** (bits - 1) - 1


def test_mixed_bits_info_and_exports(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(conv_gemm_model(), path)
    summary = quantize(path, QuantizeConfig(bits=4, retrain=False, layer_bits=MIXED))
    report = info(summary.output)
    assert {layer.node: layer.bits for layer in report.layers} == {"conv1": 3, "conv_dw": 4, "fc": 6}
    # Packed bytes follow each layer's width: ceil(params * bits / 8).
    assert {layer.node: layer.packed_bytes for layer in report.layers} == {
        layer.node: -(-layer.parameters * layer.bits // 8) for layer in report.layers}
    x = random_inputs(4, 16)
    want = make_session(summary.result.float_model).run(None, {"x": x})[0]
    exported = export(summary.output, tmp_path / "float.onnx")
    np.testing.assert_allclose(make_session(str(exported)).run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "calib.npz", x=x)
    with pytest.warns(UserWarning):  # the 6-bit Gemm does not fit int8 weights exactly: it stays float
        qdq = export(summary.output, tmp_path / "qdq.onnx", "qdq", tmp_path / "calib.npz")
    qdq_model = onnx.load(qdq)
    assert not [n for n in qdq_model.graph.node if n.domain == "com.inq"]
    got = make_session(qdq_model).run(None, {"x": x})[0]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.75  # int8 activations: close, not exact


def test_mixed_bits_integer_mode_keeps_wide_layers_float():
    result = quantize_model(conv_gemm_model(), QuantizeConfig(bits=4, retrain=False, layer_bits={"fc": 6}))
    x = random_inputs(5, 16)
    converted, report = set_activations(result.model, "int8", {"x": x})
    assert dict(report.float_nodes).keys() == {"fc"} and "6-bit" in dict(report.float_nodes)["fc"]
    quantized_inputs = {n.name for n in shift_nodes(converted)
                        if any(a.name == "quantize_input" and a.s for a in n.attribute)}
    assert quantized_inputs == {"conv1", "conv_dw"}
    assert node_bits(converted) == {"conv1": 4, "conv_dw": 4, "fc": 6}
    want = make_session(result.float_model).run(None, {"x": x})[0]
    got = make_session(converted).run(None, {"x": x})[0]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.75


def test_mixed_bits_inference_session_float_and_int8():
    ort = pytest.importorskip("onnxruntime")
    import inq_onnx
    from inq_onnx.calibrate import ACTIVATIONS_KEY, RANGES_KEY, activation_ranges, ranges_metadata
    from inq_onnx.export import export_float, export_qdq

    model = quantize_model(conv_gemm_model(), QuantizeConfig(bits=4, retrain=False,
                                                            layer_bits={"conv1": 3, "fc": 2})).model
    x = random_inputs(6, 16)
    model.metadata_props.add(key=RANGES_KEY, value=ranges_metadata(activation_ranges(export_float(model), {"x": x})))
    model.metadata_props.add(key=ACTIVATIONS_KEY, value="int8")

    def plain(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    session = inq_onnx.InferenceSession(model, activations="float")
    np.testing.assert_allclose(session.run(None, {"x": x})[0], plain(export_float(model)), rtol=1e-6, atol=1e-6)
    session = inq_onnx.InferenceSession(model)
    assert session.inq_activations == "int8" and session.inq_notes == []  # 2, 3 and 4 bits all fit int8
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], plain(export_qdq(model).model))


@pytest.mark.train
def test_retraining_keeps_each_layer_on_its_own_levels():
    from inq_onnx.retrain import RetrainConfig

    x = random_inputs(9, 32)
    data = Dataset({"x": x}, np.random.default_rng(0).integers(0, 5, 32))
    config = QuantizeConfig(bits=3, layer_bits={"conv_dw": 5}, portions=(0.5, 1.0),
                            training=RetrainConfig(epochs=1, batch_size=8))
    result = quantize_model(conv_gemm_model(), config, data)
    assert result.mode == "labels" and node_bits(result.model) == {"conv1": 3, "conv_dw": 5, "fc": 3}
    assert check_rewrite(result, result.dataset)  # the packed weights reproduce the retrained ones
    trained = {t.name: onnx.numpy_helper.to_array(t) for t in result.float_model.graph.initializer}
    for layer in result.layers:
        levels = result.levels[layer.weight]
        assert levels.bits == node_bits(result.model)[layer.node]
        np.testing.assert_array_equal(round_to_levels(trained[layer.weight], levels), trained[layer.weight])


@pytest.mark.parametrize("layer_bits, message", [
    ({"nope": 4}, "layer_bits: nope is no node"),
    ({"relu1": 4}, "relu1 is not a quantizable layer"),
    ({"fc": 9}, "fc: bits must be an integer from 2 to 8"),
    ({"fc": 4.0}, "fc: bits must be an integer"),
])
def test_bad_layer_bits(layer_bits, message):
    with pytest.raises(ConfigError, match=message):
        quantize_model(conv_gemm_model(), QuantizeConfig(bits=4, retrain=False, layer_bits=layer_bits))


def test_layer_bits_and_exclude_contradict():
    with pytest.raises(ConfigError, match="node fc is both excluded"):
        QuantizeConfig(exclude=("fc",), layer_bits={"fc": 6})


def shared_weight_model() -> onnx.ModelProto:
    """Two Gemm nodes sharing one weight of ±2^k over 7 octaves: exact from 5 bits on (8 exponents)."""
    rng = np.random.default_rng(0)
    weight = rng.choice([-1.0, 1.0], (8, 8)) * 2.0 ** rng.integers(-6, 1, (8, 8))
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="a"),
             helper.make_node("Gemm", ["h", "w"], ["y"], name="b")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
                      {"w": weight.astype(np.float32)})


def test_shared_weight_needs_one_width():
    model = shared_weight_model()
    with pytest.raises(ConfigError, match="node b shares its weight w with another layer at 5 bits"):
        quantize_model(model, QuantizeConfig(retrain=False, layer_bits={"b": 3}))
    both = quantize_model(model, QuantizeConfig(retrain=False, layer_bits={"a": 3, "b": 3}))
    assert node_bits(both.model) == {"a": 3, "b": 3}


def test_layer_bits_for_a_layer_that_stays_float_is_a_note():
    model = conv_gemm_model()
    weight = next(t for t in model.graph.initializer if t.name == "w3")
    model.graph.input.append(helper.make_tensor_value_info("w3", TensorProto.FLOAT, list(weight.dims)))
    model.graph.initializer.remove(weight)
    result = quantize_model(model, QuantizeConfig(bits=4, retrain=False, layer_bits={"fc": 6}))
    assert node_bits(result.model) == {"conv1": 4, "conv_dw": 4}
    assert "layer_bits for fc ignored: it stays float (weight is a graph input, not a constant)" in result.notes


def test_control_moves_the_nodes_of_a_shared_weight_together():
    model = shared_weight_model()
    data = Dataset({"x": np.random.default_rng(3).standard_normal((200, 8)).astype(np.float32)}, None)
    result, report = quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, data, max_drop=5.0)
    assert report.drops[0] > 5.0 and report.met and report.drop == 0.0
    assert [(r.nodes, r.bits_before, r.bits_after) for r in report.relaxations] == [(("a", "b"), 2, 5)]
    assert node_bits(result.model) == {"a": 5, "b": 5}  # one weight: it widens, for both nodes, never float


def sensitive_model(seed: int = 0, conv: bool = True, exact: bool = True) -> onnx.ModelProto:
    """Conv whose weights are all ±1/4 (exact at any width) → Relu → Flatten → Gemm whose weight magnitudes
    span 12 octaves (at 2 bits most become 0): only the Gemm is sensitive. `exact`: the Gemm's magnitudes are
    powers of two, exact from 6 bits on (16 exponents); else they fall between, and no width is exact."""
    rng = np.random.default_rng(seed)
    octaves = rng.integers(-11, 1, (5, 4 * 36)) if exact else rng.uniform(-12, 0, (5, 4 * 36))
    fc = (rng.choice([-1.0, 1.0], (5, 4 * 36)) * 2.0 ** octaves).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w2"], ["logits"], name="fc", transB=1)]
    init = {"w2": fc}
    if conv:
        nodes[:0] = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                     helper.make_node("Relu", ["c"], ["r"], name="relu")]
        init["w1"] = (rng.choice([-1.0, 1.0], (4, 2, 3, 3)) * 0.25).astype(np.float32)
    else:
        fc = fc[:, :72]
        init["w2"] = fc
        nodes[0] = helper.make_node("Flatten", ["x"], ["f"], name="flatten")
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], init)


def validation(count: int = 300, labels: bool = False, model=None) -> Dataset:
    x = random_inputs(11, count)
    y = make_session(model).run(None, {"x": x})[0].argmax(1) if labels else None
    return Dataset({"x": x}, y)


def test_control_relaxes_the_sensitive_layer_and_meets_the_drop():
    model = sensitive_model()
    config = QuantizeConfig(bits=2, retrain=False)
    result, report = quantize_with_control(model, config, None, validation(), max_drop=1.0)
    assert report.metric == "top-1 agreement" and report.reference == 100.0
    assert report.drops[0] > 10.0  # at 2 bits the Gemm loses most of its weights
    assert report.met and report.drop <= 1.0 and report.drop == report.drops[-1]
    assert report.runs == len(report.relaxations) + 1
    assert {node for r in report.relaxations for node in r.nodes} == {"fc"}
    first = report.relaxations[0]
    assert first.bits_before == 2 and first.sensitivity > 10.0
    # The conv (exact at 2 bits) was measured harmless and kept at 2 bits.
    bits = node_bits(result.model)
    assert bits["conv"] == 2
    # Exact from 6 bits on: the smallest width that alone keeps half the allowed drop, at most 6.
    final = report.relaxations[-1]
    assert 2 < bits["fc"] == final.bits_after <= 6 and final.sensitivity_after <= 0.5
    assert metadata(result.model)["inq.layer_bits"] == f"fc={final.bits_after}"


def test_control_leaves_float_a_layer_no_width_holds():
    model = sensitive_model(exact=False)
    result, report = quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, validation(),
                                           max_drop=1.0)
    assert report.met and report.drop <= 1.0
    assert [(r.nodes, r.bits_before, r.bits_after) for r in report.relaxations] == [(("fc",), 2, None)]
    assert "no wider width up to 8 bits" in report.relaxations[0].reason
    assert node_bits(result.model) == {"conv": 2}
    assert metadata(result.model)["inq.bits"] == "2" and "inq.layer_bits" not in metadata(result.model)
    assert [(s.node, s.reason) for s in result.skipped] == [("fc", FLOAT_REASON)]
    assert "fc: 2 bits ->" in metadata(result.model)["inq.accuracy_control"]
    # The reported drop is the drop of the returned model.
    x = validation().inputs["x"]
    agree = np.mean(make_session(result.model).run(None, {"x": x})[0].argmax(1)
                    == make_session(model).run(None, {"x": x})[0].argmax(1))
    assert report.drop == pytest.approx(100.0 * (1 - agree))


def test_control_uses_accuracy_with_labels_and_changes_nothing_when_the_drop_holds():
    model = sensitive_model()
    result, report = quantize_with_control(model, QuantizeConfig(bits=5, retrain=False, layer_bits={"fc": 8}),
                                           None, validation(labels=True, model=model), max_drop=50.0)
    assert report.metric == "accuracy" and report.reference == 100.0
    assert report.met and report.runs == 1 and report.relaxations == [] and report.evaluations == 0
    assert node_bits(result.model) == {"conv": 5, "fc": 8}


def test_control_reports_when_nothing_is_left_to_relax():
    model = sensitive_model(conv=False, exact=False)  # one layer: it can only widen, never go float
    result, report = quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, validation(),
                                           max_drop=0.0)
    assert not report.met
    assert [(r.bits_before, r.bits_after) for r in report.relaxations] == [(2, 8)]
    assert report.runs == 2 and 0.0 < report.drop == min(report.drops) < report.drops[0]
    assert node_bits(result.model) == {"fc": 8}
    assert "not met: nothing left to relax" in metadata(result.model)["inq.accuracy_control"]


@pytest.mark.parametrize("max_drop", [-1.0, float("nan"), "1"])
def test_bad_max_drop(max_drop):
    with pytest.raises(ConfigError, match="max_drop must be a number"):
        quantize_with_control(sensitive_model(), QuantizeConfig(retrain=False), None, validation(), max_drop)


def test_control_needs_scores_for_the_labels():
    model = sensitive_model()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"  # the data check cannot tell
    labels = Dataset({"x": random_inputs(1, 4)}, np.array([7, 0, 1, 2]))
    with pytest.raises(ConfigError, match="validation labels reach 7; the model has 5 classes"):
        quantize_with_control(model, QuantizeConfig(retrain=False), None, labels, 1.0)
    features = conv_gemm_model()
    features.graph.output[0].name = "c2"
    features.graph.node[3].input[0] = "c2_unused"  # conv_dw's map becomes the output
    features.graph.node.pop(4)
    features.graph.node.pop(3)
    del features.graph.output[0].type.tensor_type.shape.dim[:]
    with pytest.raises(ConfigError, match="first output to be \\(samples, classes\\) scores; c2 has shape"):
        quantize_with_control(features, QuantizeConfig(retrain=False), None, Dataset({"x": random_inputs(1, 4)}, None),
                              1.0)


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_info_names_the_layers_accuracy_control_left_float(tmp_path):
    onnx.save(sensitive_model(exact=False), tmp_path / "m.onnx")
    np.savez(tmp_path / "val.npz", x=validation().inputs["x"])
    summary = quantize(tmp_path / "m.onnx", QuantizeConfig(bits=2, retrain=False), val_data_path=tmp_path / "val.npz",
                       max_drop=1.0)
    assert summary.control.met and summary.control.float_nodes == ["fc"]
    report = info(summary.output)
    assert [(f.node, f.reason) for f in report.float_layers] == [("fc", FLOAT_REASON)]
    assert [(layer.node, layer.bits) for layer in report.layers] == [("conv", 2)]
    assert report.accuracy_control.startswith("max drop 1 points of top-1 agreement met")
    shown = run_cli("info", summary.output)
    assert f"Gemm node: {FLOAT_REASON}: fc" in shown.output and "accuracy control: max drop 1" in shown.output


def test_cli_layer_bits_val_data_and_max_drop(tmp_path):
    onnx.save(sensitive_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "val.npz", x=validation().inputs["x"])
    result = run_cli("quantize", tmp_path / "m.onnx", "--bits", "2", "--layer-bits", "conv=3",
                     "--val-data", tmp_path / "val.npz", "--max-drop", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "Accuracy control on --val-data (top-1 agreement" in result.output
    assert "  fc: 2 bits -> " in result.output and "Max drop 1 held" in result.output
    shown = run_cli("info", tmp_path / "m.inq.onnx")
    rows = {line.split()[0]: line.split()[2] for line in shown.output.splitlines() if line.startswith(("conv", "fc"))}
    assert rows["conv"] == "3" and rows.get("fc", "float") != "2"


@pytest.mark.parametrize("args, message", [
    (["--layer-bits", "conv"], "--layer-bits takes NODE=B"),
    (["--layer-bits", "conv=x"], "--layer-bits takes NODE=B"),
    (["--layer-bits", "conv=3", "--layer-bits", "conv=4"], "gives node conv twice"),
    (["--max-drop", "1"], "--val-data and --max-drop go together"),
])
def test_cli_errors(tmp_path, args, message):
    onnx.save(sensitive_model(), tmp_path / "m.onnx")
    result = run_cli("quantize", tmp_path / "m.onnx", "--no-retrain", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "m.inq.onnx").exists()


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("conv", [True, False])  # the loop ends met (fc left float) / with nothing left to relax
@pytest.mark.parametrize("stop_after", [1, None])  # None: after the last run, before the model is written
def test_control_resumed_after_any_run_gives_the_uninterrupted_model(tmp_path, monkeypatch, conv, stop_after):
    """The loop's state survives an interruption between runs: resuming gives the same model, report and
    sensitivity measurements as one uninterrupted loop; resumed after its last run, the chosen run is made
    again from its checkpoint."""
    import inq_onnx.accuracy_control as control

    model, config, data = sensitive_model(conv=conv, exact=False), QuantizeConfig(bits=2, retrain=False), validation()
    whole, whole_report = quantize_with_control(model, config, None, data, max_drop=0.0)
    assert whole_report.runs == 2 and whole_report.met == conv and whole_report.exhausted != conv
    stop_after = stop_after or whole_report.runs
    folder = tmp_path / "ckpt"
    real, calls = control.quantize_model, []

    def stopping(*args, **kwargs):
        if len(calls) == stop_after:
            raise _Interrupted
        calls.append(kwargs["checkpoint_dir"])
        return real(*args, **kwargs)

    monkeypatch.setattr(control, "quantize_model", stopping)
    if stop_after < whole_report.runs:
        with pytest.raises(_Interrupted):
            quantize_with_control(model, config, None, data, max_drop=0.0, checkpoint_dir=folder)
    else:
        quantize_with_control(model, config, None, data, max_drop=0.0, checkpoint_dir=folder)
    assert calls == [folder / f"run-{i}" for i in range(stop_after)] and (folder / "control.json").is_file()
    monkeypatch.setattr(control, "quantize_model", real)
    resumed, report = quantize_with_control(model, config, None, data, max_drop=0.0, checkpoint_dir=folder,
                                            resume=True)
    assert resumed.model.SerializeToString() == whole.model.SerializeToString()
    assert (report.drops, report.relaxations, report.chosen_run, report.met, report.evaluations) == (
        whole_report.drops, whole_report.relaxations, whole_report.chosen_run, whole_report.met,
        whole_report.evaluations)


def test_control_resume_refuses_other_options_and_missing_state(tmp_path):
    model, data = sensitive_model(), validation()
    folder = tmp_path / "ckpt"
    with pytest.raises(ConfigError, match="ckpt is not a folder"):
        quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, data, 1.0, checkpoint_dir=folder,
                              resume=True)
    folder.mkdir()
    with pytest.raises(ConfigError, match="no accuracy-control checkpoint"):
        quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, data, 1.0, checkpoint_dir=folder,
                              resume=True)
    quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, data, 1.0, checkpoint_dir=folder)
    with pytest.raises(ConfigError, match=r"other options \(max_drop 1.0 -> 2.0\)"):
        quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, data, 2.0, checkpoint_dir=folder,
                              resume=True)
    with pytest.raises(ConfigError, match="other data"):
        quantize_with_control(model, QuantizeConfig(bits=2, retrain=False), None, validation(count=200), 1.0,
                              checkpoint_dir=folder, resume=True)