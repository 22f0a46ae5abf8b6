"""The command line: success paths print reports; every user error is one `Error: ...` line and exit != 0."""

import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inq_onnx.cli.main import cli

from models import conv_gemm_model, random_inputs


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "model.onnx"
    onnx.save(conv_gemm_model(), model)
    x = random_inputs(0, 40)
    np.savez(tmp_path / "data.npz", x=x, labels=np.random.default_rng(0).integers(0, 5, 40))
    np.savez(tmp_path / "unlabelled.npz", x=x)
    return tmp_path


def run(*args, stdout_only=False):
    """Exit code and what the user sees (stdout and stderr), or stdout alone (for JSON)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout if stdout_only else result.output


def assert_one_error_line(code, output, pattern):
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0
    assert "Traceback" not in output
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, output
    assert pattern in errors[0], errors[0]


def test_one_shot_quantize_info_export(files):
    code, out = run("quantize", files / "model.onnx", "--bits", 4, "--no-retrain", "--quiet")
    assert code == 0, out
    quantized = files / "model.inq.onnx"
    assert quantized.is_file() and "Quantized 3 layer(s) to 4 bits (one-shot)" in out
    assert "Rewrite check: com.inq ops match" in out

    code, out = run("info", quantized, "--json", stdout_only=True)
    assert code == 0, out
    info = json.loads(out)
    assert [layer["bits"] for layer in info["layers"]] == [4, 4, 4]
    assert [layer["packed_bytes"] for layer in info["layers"]] == [36, 18, 90]  # ceil(n * 4 / 8): 72, 36, 180
    assert info["float_bytes"] == 4 * (72 + 36 + 180)
    assert info["compression_ratio"] == pytest.approx(info["float_model_bytes"] / info["model_bytes"])
    assert info["compression_ratio"] > 1.5  # a tiny model: graph and biases weigh as much as the weights
    assert all(0.0 <= layer["zero_fraction"] <= 1.0 for layer in info["layers"])

    code, out = run("export", quantized, "--format", "float", "-o", files / "float.onnx")
    assert code == 0, out
    exported = onnx.load(files / "float.onnx")
    assert {n.op_type for n in exported.graph.node} == {"Conv", "Gemm", "Relu", "Flatten"}


def test_integer_mode_from_quantize_and_convert_both_ways(files):
    code, out = run("quantize", files / "model.onnx", "--bits", 4, "--no-retrain", "--activations", "int8",
                    "--data", files / "unlabelled.npz", "--quiet")
    assert code == 0, out
    assert "Activations: int8 in 3 com.inq node(s), static scales from calibration; 1 tensor(s)" in out
    assert "Rewrite check: com.inq ops match" in out  # checked in float mode before the switch
    quantized = onnx.load(files / "model.inq.onnx")
    assert all(any(a.name == "x_scale" for a in n.attribute) for n in quantized.graph.node if n.domain)

    code, out = run("convert", files / "model.inq.onnx", "--activations", "float", "-o", files / "f.onnx")
    assert code == 0 and "Activations: float" in out, out
    assert all(a.name not in ("quantize_input", "x_scale") for n in onnx.load(files / "f.onnx").graph.node
               for a in n.attribute)
    code, out = run("convert", files / "f.onnx", "--activations", "int8", "-o", files / "i.onnx")
    assert code == 0, out
    assert "static scales from calibration" in out  # the ranges stored by the first calibration
    code, out = run("validate", files / "f.onnx", files / "i.onnx", "--data", files / "data.npz")
    assert code == 0, out


@pytest.mark.parametrize("args, message", [
    (["convert", "{d}/model.onnx", "--activations", "int8", "-o", "{d}/x.onnx"],
     "no ShiftConv/ShiftGemm/ShiftMatMul nodes"),
    (["convert", "{d}/model.onnx", "--activations", "int4", "-o", "{d}/x.onnx"], "'int4' is not one of"),
    (["convert", "{d}/model.onnx", "-o", "{d}/x.onnx"], "Missing option '--activations'"),
    (["quantize", "{d}/model.onnx", "--activations", "int16"], "'int16' is not one of 'float', 'int8'"),
])
def test_convert_errors_are_one_line(files, args, message):
    code, out = run(*[a.format(d=files) for a in args])
    assert_one_error_line(code, out, message)


@pytest.mark.train
def test_quantize_with_labels_then_validate(files):
    out_path = files / "q.onnx"
    code, out = run("quantize", files / "model.onnx", "--data", files / "data.npz", "-o", out_path,
                    "--epochs", 1, "--portions", "0.5,1", "--quiet")
    assert code == 0, out
    assert "(labels)" in out and "Accuracy on --data" in out
    meta = {p.key: p.value for p in onnx.load(out_path).metadata_props}
    assert meta["inq.portions"] == "0.5,1" and meta["inq.mode"] == "labels" and len(meta["inq.source_sha256"]) == 64

    code, out = run("validate", files / "model.onnx", out_path, "--data", files / "data.npz", "--json",
                    stdout_only=True)
    assert code == 0, out
    report = json.loads(out)
    assert report["samples"] == 40 and report["outputs"][0]["name"] == "logits"
    assert 0.0 <= report["outputs"][0]["top1_agreement"] <= 1.0
    assert report["accuracy_original"] is not None


def test_no_data_warns_and_does_one_shot(files):
    code, out = run("quantize", files / "model.onnx", "--quiet")
    assert code == 0, out
    assert "Warning: no --data given: one-shot quantization" in out


@pytest.mark.parametrize("args, message", [
    (["quantize", "{d}/missing.onnx"], "model file not found"),
    (["quantize", "{d}/corrupt.onnx"], "is not a readable ONNX model"),
    (["quantize", "{d}/model.onnx", "--bits", "9"], "bits must be an integer from 2 to 8, got 9"),
    (["quantize", "{d}/model.onnx", "--bits", "1"], "bits must be an integer from 2 to 8, got 1"),
    (["quantize", "{d}/model.onnx", "--bits", "five"], "'five' is not a valid integer"),
    (["quantize", "{d}/model.onnx", "--data", "{d}/missing.npz"], "data file not found"),
    (["quantize", "{d}/model.onnx", "--data", "{d}/wrong.npz"], "data lacks model input(s) x"),
    (["quantize", "{d}/model.onnx", "--portions", "0.5,0.9"], "the last portion must be 1"),
    (["quantize", "{d}/model.onnx", "--exclude", "nope", "--no-retrain"], "--exclude names no node: nope"),
    (["quantize", "{d}/model.onnx", "-o", "{d}/no/such/dir/out.onnx", "--no-retrain"], "output folder does not exist"),
    (["quantize", "{d}/model.onnx", "-o", "{d}/model.onnx", "--no-retrain"], "is an input; choose another"),
    (["quantize", "{d}/model.onnx", "-o", "", "--no-retrain"], "the output path is empty"),
    (["quantize", "{d}/model.onnx", "-o", "{d}", "--no-retrain"], "is a directory"),
    (["quantize", "{d}/model.onnx", "-o", "{d}/fifo", "--no-retrain"], "exists and is not a regular file"),
    (["quantize", "{d}", "--no-retrain"], "is a directory"),
    (["quantize", "{d}/model.onnx", "--data", "{d}/empty.npz"], "not a readable .npz"),
    (["quantize", "{d}/model.onnx", "--data", "{d}/plain.npy"], "not an .npz archive"),
    (["quantize", "{d}/model.onnx", "--lr", "nan"], "lr (--lr) must be a finite number > 0"),
    (["quantize", "{d}/model.onnx", "--seed", "-1"], "seed (--seed) must be a whole number >= 0"),
    (["quantize", "{d}/model.onnx", "--portions", "0.5,,1"], "comma-separated numbers"),
    (["quantize", "{d}/model.onnx", "--exclude", "relu1", "--no-retrain"], "relu1 is a Relu node"),
    (["export", "{d}/model.onnx", "-o", "{d}/model.onnx"], "is an input; choose another"),
    (["validate", "{d}/model.onnx", "{d}/model.onnx"], "Missing option '--data'"),
    (["info", "{d}/missing.onnx"], "model file not found"),
    (["export", "{d}/model.onnx", "-o", "{d}/x.onnx"], "no ShiftConv/ShiftGemm/ShiftMatMul nodes"),
    (["export", "{d}/model.onnx", "--format", "int4", "-o", "{d}/x.onnx"], "'int4' is not one of 'float', 'qdq'"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_user_errors_are_one_line(files, args, message):
    (files / "corrupt.onnx").write_bytes(b"\x08\x07garbage")
    (files / "empty.npz").write_bytes(b"")
    os.mkfifo(files / "fifo")  # stands in for /dev/null and other special files
    np.save(files / "plain.npy", random_inputs(0, 4))
    np.savez(files / "wrong.npz", image=random_inputs(0, 4))
    code, out = run(*[a.format(d=files) for a in args])
    assert_one_error_line(code, out, message)


def test_failed_quantize_leaves_no_file(files):
    np.savez(files / "bad_labels.npz", x=random_inputs(0, 4), labels=np.array([0, 1, 2, 99]))
    code, out = run("quantize", files / "model.onnx", "--data", files / "bad_labels.npz", "-o", files / "out.onnx")
    assert_one_error_line(code, out, "labels range 0..99")
    assert sorted(p.name for p in files.iterdir()) == ["bad_labels.npz", "data.npz", "model.onnx",
                                                        "unlabelled.npz"]


@pytest.mark.train
def test_demo(tmp_path):
    code, out = run("demo", "--workdir", tmp_path / "demo", "--quiet")
    assert code == 0, out
    assert {p.name for p in (tmp_path / "demo").iterdir()} == {
        "digits_cnn.onnx", "digits_cnn.inq.onnx", "digits_train.npz", "digits_val.npz"}
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "accuracy (validation)" in rows and "model file (bytes)" in rows
    assert "x smaller" in rows["model file (bytes)"] and "x FP32" in out


def test_info_on_a_float_model_lists_quantizable_layers(files):
    code, out = run("info", files / "model.onnx")
    assert code == 0, out
    assert "No com.inq layers: a float model." in out
    assert out.count("quantizable, not quantized") == 3
    assert "3 quantizable layer(s) hold 1152 bytes of fp32 weights" in out  # 4 * (72 + 36 + 180)
