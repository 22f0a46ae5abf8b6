"""Real exported models through the CLI: PyTorch, TensorFlow/Keras, PaddlePaddle and scikit-learn digits
classifiers, exported by each framework's own converter at opsets 9 to 17 (tests/exports/make_models.py; tests/run.sh
builds them in a venv of their own and names the folder in INQ_TEST_EXPORTS).

Per model, one-shot at 5 bits: every Conv/Gemm/MatMul with a constant weight is rewritten (the expectation is read
off the exported graph here, independently of the tool), the rewritten model matches its own float export to float
rounding, agrees with the original on the digits validation set, and `info`, `validate` and `export` run on it.
One model, pretrained in TensorFlow, is INQ-retrained through its exported graph.
"""

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inq_onnx.cli.main import cli
from inq_onnx.model_info import QUANTIZABLE
from inq_onnx.runtime import make_session, run_batched

from exported_models import class_scores, linear_layers_with_constant_weight, write_data

CORPUS_ENV = "INQ_TEST_EXPORTS"
BITS = 5
# The models tests/exports/make_models.py builds, with the opset each is exported at.
MODELS = {"torch_cnn_bn_weightnorm": 9, "tf_cnn": 10, "paddle_cnn": 11, "sklearn_mlp": 12, "torch_cnn": 13,
          "tf_mlp": 14, "paddle_mlp": 15, "tf_separable": 16, "torch_tokens": 17}
# Models whose graph has a BatchNormalization node after a Conv (torch: directly; paddle: after the Conv's bias Add).
WITH_BATCHNORM = ["torch_cnn_bn_weightnorm", "paddle_cnn"]
RETRAINED = "tf_cnn"

# The com.inq model against the standard model `export` writes from it: the same weights, so only the order of
# float32 accumulation differs. Measured: at most 6e-7 of the largest output (tests/exports/summarize.py).
FIDELITY_RTOL = 1e-4
# One-shot 5-bit top-1 agreement with the original on the 450 validation digits. Measured on this corpus with
# every expected layer rounded (weight norm and BatchNorm folded first; per-tensor and per-channel ranges alike):
# 95.8% (torch_cnn_bn_weightnorm) to 99.3% (tf_separable). The corpus is retrained by each framework on every
# build (not bit-reproducible across machines), so the bound keeps 13 images of margin below the lowest: still far
# above what a wrong rewrite gives (an unfolded BatchNorm: 88%; wrong weights: chance).
MIN_AGREEMENT = 0.93
# Accuracy of the exported float graph against the accuracy its framework measured before export: the same
# network, so at most one validation image may flip on float rounding.
EXPORT_TOLERANCE = 1.5 / 450


# --- the corpus ---

@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus folder. Unset variable: skip (a plain development run). Set but incomplete: fail."""
    folder = os.environ.get(CORPUS_ENV)
    if not folder:
        pytest.skip(f"{CORPUS_ENV} not set: tests/run.sh builds the real-export corpus and sets it")
    folder = Path(folder)
    missing = [name for name in ("manifest.json", "digits.npz") if not (folder / name).is_file()]
    if missing:
        pytest.fail(f"{CORPUS_ENV}={folder} lacks {', '.join(missing)}: run tests/exports/make_models.py into it")
    return folder


@pytest.fixture(scope="session")
def manifest(corpus) -> dict[str, dict]:
    entries = {e["name"]: e for e in json.loads((corpus / "manifest.json").read_text())["models"]}
    absent = [name for name in MODELS if name not in entries or not (corpus / entries[name]["file"]).is_file()]
    if absent:
        pytest.fail(f"the corpus in {corpus} lacks {', '.join(absent)}")
    return entries


@pytest.fixture(scope="session")
def digits(corpus) -> dict[str, np.ndarray]:
    return dict(np.load(corpus / "digits.npz"))


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def run_json(*args) -> dict:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- the one-shot run per model, shared by the tests below ---

@pytest.fixture(scope="module")
def one_shot(corpus, manifest, digits, tmp_path_factory):
    """`quantize --no-retrain` per model, run once: name -> (entry, original, quantized, val data, CLI output)."""
    runs = {}

    def get(name: str):
        if name not in runs:
            entry, folder = manifest[name], tmp_path_factory.mktemp(name)
            original = corpus / entry["file"]
            quantized = folder / f"{name}.inq.onnx"
            val = write_data(entry, digits, "val", folder / "val.npz")
            code, output = run("quantize", original, "--bits", BITS, "--no-retrain", "--quiet", "-o", quantized)
            runs[name] = (entry, original, quantized, val, code, output)
        entry, original, quantized, val, code, output = runs[name]
        assert code == 0, output
        return entry, original, quantized, val, output
    return get


def test_corpus_spans_three_frameworks_and_opsets_9_to_17(corpus, manifest):
    frameworks = {e["framework"] for e in manifest.values()}
    assert len(frameworks) >= 3, frameworks
    assert {e["opset"] for e in manifest.values()} >= set(range(9, 18))
    for name, opset in MODELS.items():
        model = onnx.load(corpus / manifest[name]["file"])
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {opset}, name


@pytest.mark.parametrize("name", MODELS)
def test_every_constant_weight_layer_is_rewritten(one_shot, name):
    entry, original, quantized, _, output = one_shot(name)
    expected = [n.name for n in linear_layers_with_constant_weight(onnx.load(original))]
    assert expected, f"{name}: the export has no Conv/Gemm/MatMul with a constant weight"
    model = onnx.load(quantized)
    rewritten = [n.name for n in model.graph.node if n.domain == "com.inq"]
    assert len(rewritten) == len(expected), f"rewrote {rewritten}, expected {expected}; quantize said:\n{output}"
    left = linear_layers_with_constant_weight(model)
    assert not left, f"left float: {[(n.name, n.op_type) for n in left]}"
    assert "Rewrite check: com.inq ops match" in output, output
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.parametrize("name", WITH_BATCHNORM)
def test_batchnorm_after_a_layer_is_folded(one_shot, name):
    _, original, quantized, _, output = one_shot(name)
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(original).graph.node)
    left = [n.name for n in onnx.load(quantized).graph.node if n.op_type == "BatchNormalization"]
    assert not left, f"BatchNormalization left in the deployed model: {left}"


@pytest.mark.parametrize("name", MODELS)
def test_rewritten_model_matches_its_float_export(one_shot, digits, name, tmp_path):
    """`export --format float` writes the same weights as standard ops: only float rounding may differ."""
    entry, _, quantized, val, _ = one_shot(name)
    exported = tmp_path / "float.onnx"
    code, output = run("export", quantized, "--format", "float", "-o", exported)
    assert code == 0, output
    standard = onnx.load(exported)
    assert not [n for n in standard.graph.node if n.domain == "com.inq"]
    onnx.checker.check_model(standard, full_check=True)
    inputs = {entry["input"]: np.load(val)[entry["input"]]}
    expected = run_batched(make_session(standard), inputs)
    actual = run_batched(make_session(quantized), inputs)
    assert len(actual) == len(expected) == len(standard.graph.output)
    for out, ref, got in zip(standard.graph.output, expected, actual):
        limit = FIDELITY_RTOL * max(float(np.max(np.abs(ref))), 1e-6)
        assert np.max(np.abs(ref.astype(np.float64) - got)) <= limit, out.name


@pytest.mark.parametrize("name", MODELS)
def test_one_shot_agrees_with_the_original(one_shot, digits, name):
    entry, original, quantized, val, _ = one_shot(name)
    report = run_json("validate", original, quantized, "--data", val, "--json", "--quiet")
    model = onnx.load(original)
    scores = class_scores(model)
    assert report["samples"] == len(digits["val_labels"])
    assert [o["name"] for o in report["outputs"]] == [o.name for o in model.graph.output]
    # The validation report's agreement, recomputed here from both models' class scores.
    inputs = {entry["input"]: np.load(val)[entry["input"]]}
    reference = run_batched(make_session(model), inputs)[scores]
    result = run_batched(make_session(quantized), inputs)[scores]
    agreement = float(np.mean(reference.argmax(1) == result.argmax(1)))
    assert report["outputs"][scores]["top1_agreement"] == pytest.approx(agreement)
    assert agreement >= MIN_AGREEMENT, f"{name}: top-1 agreement {agreement:.4f}"
    # The exported graph classifies as its framework did; the quantized one stays close.
    labels = digits["val_labels"]
    accuracy_original = float(np.mean(reference.argmax(1) == labels))
    assert accuracy_original == pytest.approx(entry["float_accuracy"], abs=EXPORT_TOLERANCE)
    if report["accuracy_original"] is not None:
        assert report["accuracy_original"] == pytest.approx(accuracy_original)
        assert report["accuracy_quantized"] == pytest.approx(float(np.mean(result.argmax(1) == labels)))


@pytest.mark.parametrize("name", MODELS)
def test_info_on_the_export_and_the_rewritten_model(one_shot, name):
    _, original, quantized, _, _ = one_shot(name)
    expected = len(linear_layers_with_constant_weight(onnx.load(original)))
    before = run_json("info", original, "--json")
    assert not before["layers"]
    assert sum(f["reason"] == QUANTIZABLE for f in before["float_layers"]) == expected, before["float_layers"]
    after = run_json("info", quantized, "--json")
    assert len(after["layers"]) == expected and all(l["bits"] == BITS for l in after["layers"])
    assert not [f for f in after["float_layers"] if f["reason"] == QUANTIZABLE]
    assert after["packed_bytes"] * 5 < after["float_bytes"]  # 5-bit codes against fp32: 6.4x less
    code, output = run("info", quantized)
    assert code == 0 and "compression" in output, output


@pytest.mark.train
def test_retraining_through_a_pretrained_tensorflow_graph(corpus, manifest, digits, tmp_path):
    """INQ at 5 bits with labels, through the graph tf2onnx wrote for a CNN trained in TensorFlow."""
    entry = manifest[RETRAINED]
    original = corpus / entry["file"]
    train = write_data(entry, digits, "train", tmp_path / "train.npz")
    val = write_data(entry, digits, "val", tmp_path / "val.npz")
    quantized = tmp_path / "retrained.inq.onnx"
    code, output = run("quantize", original, "--bits", BITS, "--data", train, "--epochs", 4, "--lr", 0.01,
                       "--quiet", "-o", quantized)
    assert code == 0, output
    assert "Rewrite check: com.inq ops match" in output, output
    expected = linear_layers_with_constant_weight(onnx.load(original))
    assert len([n for n in onnx.load(quantized).graph.node if n.domain == "com.inq"]) == len(expected), output
    report = run_json("validate", original, quantized, "--data", val, "--json", "--quiet")
    assert report["accuracy_original"] == pytest.approx(entry["float_accuracy"], abs=EXPORT_TOLERANCE)
    # Measured with these settings, Conv layers rewritten: tf_cnn +0.9 points, torch_cnn -0.9, paddle_cnn +0.2;
    # 1.5 points (7 of 450 images) bounds the loss.
    assert report["accuracy_quantized"] >= report["accuracy_original"] - 0.015, report
