"""Digits end to end: FP32 training, INQ at 5 bits with and without labels, rewrite, validation."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from inq_onnx.api import convert, quantize, validate
from inq_onnx.demo import DemoFiles, prepare_demo
from inq_onnx.pipeline import QuantizeConfig

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    files = DemoFiles(tmp_path_factory.mktemp("digits"))
    prepare_demo(files, seed=0)
    return files


@pytest.mark.parametrize("labels, max_drop", [(True, 0.01), (False, 0.02)])
def test_inq_5_bit_keeps_accuracy(digits, labels, max_drop, tmp_path):
    train = digits.train
    if not labels:
        data = np.load(digits.train)
        train = tmp_path / "unlabelled.npz"
        np.savez(train, image=data["image"])
    output = tmp_path / "digits.inq.onnx"
    summary = quantize(digits.model, QuantizeConfig(bits=5), train, output)
    # The FP32 model fits its training labels, so the recipe distils from it either way.
    assert summary.result.mode == "distillation"
    assert ("fits the training labels" if labels else "no labels") in summary.result.recipe.loss_why
    assert len(summary.result.steps) == 4 and summary.result.steps[-1].frozen_fraction == 1.0
    assert summary.rewrite_check and max(c.max_abs_diff for c in summary.rewrite_check) < 1e-3

    report = validate(digits.model, output, digits.val)
    assert report.accuracy_original > 0.95
    assert report.accuracy_quantized >= report.accuracy_original - max_drop
    assert report.outputs[0].top1_agreement > 0.95
    assert output.stat().st_size * 4 < digits.model.stat().st_size  # 5-bit weights: over 4x smaller

    share = os.environ.get("INQ_TEST_ARTIFACTS")  # handed to the deployment tests in the runtime venv
    if share and labels:
        Path(share).mkdir(parents=True, exist_ok=True)
        for path in (digits.model, digits.val):
            shutil.copy(path, share)
        shutil.copy(output, Path(share) / digits.quantized.name)


@pytest.mark.parametrize("bits", [4, 5])
def test_int8_activations_cost_at_most_half_a_point(digits, bits, tmp_path):
    """The same INQ weights in float mode and with int8 activations (calibrated on the training data)."""
    float_mode, int8 = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    quantize(digits.model, QuantizeConfig(bits=bits), digits.train, float_mode)
    _, report = convert(float_mode, int8, "int8", digits.train)
    assert report.static and len(report.integer_nodes) == 4 and not report.float_nodes
    accuracy_float = validate(digits.model, float_mode, digits.val).accuracy_quantized
    accuracy_int8 = validate(digits.model, int8, digits.val).accuracy_quantized
    assert accuracy_int8 >= accuracy_float - 0.005
