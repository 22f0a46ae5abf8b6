"""Pipeline behaviour on real-world model shapes: fixed batch, outputs that are not logits, shared weights."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.api import export, info, quantize, validate
from inq_onnx.errors import ConfigError, DataError, InqError, ModelError, ValidationError
from inq_onnx.pipeline import QuantizeConfig, check_rewrite, quantize_model
from inq_onnx.retrain import RetrainConfig
from inq_onnx.runtime import make_session

from models import conv_gemm_model, features_first_model, fixed_batch_model, make_model, random_inputs, weights


def save(tmp_path, model, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def save_data(tmp_path, count=10, labels=True, name="data.npz"):
    arrays = {"x": random_inputs(5, count)}
    if labels:
        arrays["labels"] = np.random.default_rng(0).integers(0, 5, count)
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def test_fixed_batch_model_one_shot_checks_rewrite_with_its_batch(tmp_path):
    summary = quantize(save(tmp_path, fixed_batch_model()), QuantizeConfig(retrain=False))
    assert summary.rewrite_check and summary.rewrite_check[0].max_abs_diff < 1e-4


def test_fixed_batch_model_validates_on_data_not_divisible_by_its_batch(tmp_path):
    model_path = save(tmp_path, fixed_batch_model(batch=4))
    data = save_data(tmp_path, count=10)  # 4 + 4 + a padded 2
    summary = quantize(model_path, QuantizeConfig(retrain=False), data)
    report = validate(model_path, summary.output, data)
    assert report.samples == 10 and report.accuracy_original is not None


@pytest.mark.train
def test_fixed_batch_model_retrains(tmp_path):
    summary = quantize(save(tmp_path, fixed_batch_model()), QuantizeConfig(training=RetrainConfig(epochs=1)),
                       save_data(tmp_path, count=12))
    assert summary.result.mode == "labels" and summary.validation.samples == 12


def test_accuracy_is_left_out_when_first_output_is_not_scores(tmp_path):
    model_path = save(tmp_path, features_first_model())
    data = save_data(tmp_path)
    summary = quantize(model_path, QuantizeConfig(retrain=False), data)
    report = validate(model_path, summary.output, data)
    assert [o.name for o in report.outputs] == ["c1", "logits"]
    assert report.accuracy_original is None and report.outputs[0].top1_agreement is None


def test_validate_refuses_models_with_different_inputs(tmp_path):
    other = conv_gemm_model()
    other.graph.input[0].name = "image"
    other.graph.node[0].input[0] = "image"
    with pytest.raises(ModelError, match=r"inputs differ: \['x'\] vs \['image'\]"):
        validate(save(tmp_path, conv_gemm_model()), save(tmp_path, other, "other.onnx"), save_data(tmp_path))


def test_already_quantized_model_is_refused():
    quantized = quantize_model(conv_gemm_model(), QuantizeConfig(retrain=False)).model
    with pytest.raises(ModelError, match="already quantized"):
        quantize_model(quantized, QuantizeConfig(retrain=False))


def test_single_portion_schedule_is_one_shot(tmp_path):
    summary = quantize(save(tmp_path, conv_gemm_model()), QuantizeConfig(portions=(1.0,)), save_data(tmp_path))
    assert summary.result.mode == "one-shot"
    assert "quantizes everything at once" in summary.result.notes[0]


def test_linear_nodes_that_stay_float_are_reported_with_reasons(tmp_path):
    """x·W is rewritten; W·x (the constant first) and ConvTranspose stay float, named in the result and in info."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h0"], name="linear"),
             helper.make_node("MatMul", ["mix", "h0"], ["h1"], name="token_mix"),
             helper.make_node("Reshape", ["h1", "shape"], ["h2"], name="to_image"),
             helper.make_node("ConvTranspose", ["h2", "wt"], ["up"], name="upsample", strides=[2, 2]),
             helper.make_node("Flatten", ["up"], ["h"], name="flat"),
             helper.make_node("Gemm", ["h", "w2"], ["y"], name="fc")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
                       {"w": weights(rng, 4, 4), "mix": weights(rng, 3, 3), "shape": np.array([2, 3, 2, 2]),
                        "wt": weights(rng, 3, 2, 2, 2), "w2": weights(rng, 32, 5)})
    result = quantize_model(model, QuantizeConfig(retrain=False))
    assert [layer.node for layer in result.layers] == ["linear", "fc"]
    reasons = {s.node: s.reason for s in result.skipped}
    assert reasons == {"token_mix": "the constant is MatMul's first operand (W·x); only x·W with a constant W is "
                                    "rewritten",
                       "upsample": "ConvTranspose is not rewritten (no com.inq kernel for it); it stays float"}
    check_rewrite(result)
    report = info(save(tmp_path, result.model))
    assert {(f.node, f.op_type, f.parameters, f.reason) for f in report.float_layers} == {
        ("token_mix", "MatMul", 9, reasons["token_mix"]), ("upsample", "ConvTranspose", 24, reasons["upsample"])}
    float_report = info(save(tmp_path, model, "float.onnx"))
    assert {(f.node, f.reason) for f in float_report.float_layers} == {
        ("linear", "quantizable, not quantized"), ("fc", "quantizable, not quantized"),
        ("token_mix", reasons["token_mix"]), ("upsample", reasons["upsample"])}


def test_info_counts_a_shared_weight_once(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="a"),
             helper.make_node("Gemm", ["h", "w"], ["y"], name="b")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], {"w": weights(rng, 8, 8)})
    report = info(save(tmp_path, quantize_model(model, QuantizeConfig(bits=4, retrain=False)).model))
    assert len(report.layers) == 2
    assert report.packed_bytes == 32 and report.float_bytes == 256


def test_export_drops_inq_metadata(tmp_path):
    summary = quantize(save(tmp_path, conv_gemm_model()), QuantizeConfig(retrain=False))
    exported = onnx.load(export(summary.output, tmp_path / "float.onnx"))
    assert not [p.key for p in exported.metadata_props if p.key.startswith("inq.")]


def test_session_reads_models_stamped_with_a_newer_ir_version():
    model = conv_gemm_model()
    model.ir_version = 99
    session = make_session(model)
    assert session.run(None, {"x": random_inputs(0, 2)})[0].shape == (2, 5)


@pytest.mark.train
def test_distillation_can_be_chosen_when_labels_exist(tmp_path):
    config = QuantizeConfig(loss="distillation", portions=(0.5, 1.0), training=RetrainConfig(epochs=1))
    summary = quantize(save(tmp_path, conv_gemm_model()), config, save_data(tmp_path))
    assert summary.result.mode == "distillation"
    meta = {p.key: p.value for p in summary.result.model.metadata_props}
    assert meta["inq.mode"] == "distillation"


@pytest.mark.train
def test_cross_entropy_needs_labels(tmp_path):
    with pytest.raises(DataError, match="loss cross-entropy needs 'labels'"):
        quantize(save(tmp_path, conv_gemm_model()), QuantizeConfig(loss="cross-entropy"),
                 save_data(tmp_path, labels=False))


def test_unknown_loss():
    with pytest.raises(ConfigError, match="loss must be one of auto, cross-entropy, distillation"):
        QuantizeConfig(loss="mse")


def test_rewrite_check_catches_a_corrupted_packed_weight():
    result = quantize_model(conv_gemm_model(), QuantizeConfig(retrain=False))
    assert check_rewrite(result)  # intact: passes
    packed = next(t for t in result.model.graph.initializer if t.data_type == TensorProto.UINT8)
    data = bytearray(packed.raw_data or numpy_helper.to_array(packed).tobytes())
    data[0] ^= 0xFF
    packed.ClearField("int32_data")
    packed.raw_data = bytes(data)
    with pytest.raises(ValidationError, match="differs from the float model with the same weights"):
        check_rewrite(result)


def test_missing_output_folder_is_reported_before_any_work(tmp_path, monkeypatch):
    import inq_onnx.api as api

    monkeypatch.setattr(api, "quantize_model", lambda *a, **k: pytest.fail("quantized before checking -o"))
    with pytest.raises(InqError, match="output folder does not exist"):
        quantize(save(tmp_path, conv_gemm_model()), QuantizeConfig(retrain=False), None, tmp_path / "no" / "x.onnx")


def test_the_source_copy_is_dropped_unless_a_report_reads_it(tmp_path):
    onnx.save(conv_gemm_model(), tmp_path / "m.onnx")
    summary = quantize(tmp_path / "m.onnx", QuantizeConfig(bits=5, retrain=False), None, tmp_path / "q.onnx")
    assert summary.result.source_model is None and summary.result.float_model is not None
    kept = quantize_model(conv_gemm_model(), QuantizeConfig(bits=5, retrain=False))
    assert kept.source_model is not None  # the pipeline itself keeps it for callers that report
