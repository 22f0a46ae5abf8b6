"""Fusion rules: a residual Add and Relu/Clip after a com.inq node are fused into it; look-alikes are not."""

import collections

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.errors import ModelError
from inq_onnx.export import export_float
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.runtime import make_session

from models import conv_gemm_model, residual_model


def histogram(model):
    return collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)


def fused(model):
    """node name -> (activation, activation_params, summand input or None) of each com.inq node."""
    out = {}
    for node in model.graph.node:
        if node.domain == "com.inq":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            summand = node.input[3] if len(node.input) > 3 else None
            out[node.name] = (attrs.get("activation", b"").decode(),
                              [round(v, 6) for v in attrs.get("activation_params", [])], summand)
    return out


def feed(seed=0, count=5):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((count, 2, 6, 6)).astype(np.float32), "x_min": np.array(-0.2, np.float32)}


@pytest.fixture(scope="module")
def result():
    return quantize_model(residual_model(), QuantizeConfig(bits=4, retrain=False))


def test_fuses_residual_add_relu_and_constant_clip_only(result):
    assert fused(result.model) == {
        "stem": ("Relu", [], None),
        "block": ("Relu", [], "s_r"),  # Add(shortcut) then Relu, in one op
        "six": ("Clip", [0.0, 0.6], None),
        "dyn": ("", [], None),  # Clip bound from a graph input: left as a node
        "tap": ("", [], None),  # its output is also a graph output
        "bcast": ("", [], None),  # the Add broadcasts a (1, C, 1, 1) tensor
        "fc": ("Relu", [], None),
    }
    assert histogram(result.model) == {"com.inq:ShiftConv": 6, "com.inq:ShiftGemm": 1, "ai.onnx:Clip": 1,
                                       "ai.onnx:Relu": 1, "ai.onnx:Add": 1, "ai.onnx:Flatten": 1}
    onnx.checker.check_model(result.model, full_check=True)
    # The Clip bounds that were fused away are no longer initializers.
    assert {"zero", "six"}.isdisjoint(t.name for t in result.model.graph.initializer)


def test_fused_model_matches_float_model_in_onnxruntime_and_reference(result):
    inputs = feed()
    expected = make_session(result.float_model).run(None, inputs)
    actual = make_session(result.model).run(None, inputs)
    reference = ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, inputs)
    for want, got, ref in zip(expected, actual, reference):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(ref, want, rtol=0, atol=1e-5 * scale)


def test_export_float_unfuses_into_standard_ops(result):
    exported = export_float(result.model)
    assert histogram(exported) == {"ai.onnx:Conv": 6, "ai.onnx:Gemm": 1, "ai.onnx:Relu": 4, "ai.onnx:Add": 2,
                                   "ai.onnx:Clip": 2, "ai.onnx:Flatten": 1}
    onnx.checker.check_model(exported, full_check=True)
    inputs = feed(1)
    for want, got in zip(make_session(result.float_model).run(None, inputs), make_session(exported).run(None, inputs)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_unfused_clip_before_opset_11_takes_its_bounds_as_attributes(result):
    from inq_onnx.export import _unfused

    six = next(n for n in result.model.graph.node if n.name == "six")
    constants = []
    conv, clip = _unfused(six, "w", set(), 10, constants)
    assert (conv.op_type, clip.op_type, constants) == ("Conv", "Clip", [])
    assert list(clip.input) == [conv.output[0]] and list(clip.output) == list(six.output)
    assert {a.name: round(helper.get_attribute_value(a), 6) for a in clip.attribute} == {"min": 0.0, "max": 0.6}


def test_rewrite_without_fusion_keeps_the_activation_nodes():
    from inq_onnx.rewrite import rewrite_model

    result = quantize_model(conv_gemm_model(), QuantizeConfig(bits=5, retrain=False))
    plain = rewrite_model(result.float_model, result.layers, result.levels, fuse=False)
    assert histogram(plain)["ai.onnx:Relu"] == 1
    assert all(not a for a, _, _ in fused(plain).values())


@pytest.mark.parametrize("attrs, message", [
    ({"activation": "Tanh"}, "unknown activation 'Tanh'"),
    ({"activation": "Clip"}, "Clip needs activation_params"),
    ({"activation": "Clip", "activation_params": [1.0, -1.0]}, "Clip needs activation_params"),
    ({"activation": "Relu", "activation_params": [1.0]}, "Relu takes no activation_params"),
    ({"activation_params": [0.0, 1.0]}, "activation_params given without an activation"),
])
def test_op_rejects_bad_fusion_attributes(result, attrs, message):
    model = onnx.ModelProto()
    model.CopyFrom(result.model)
    node = next(n for n in model.graph.node if n.name == "six")
    keep = [a for a in node.attribute if a.name not in ("activation", "activation_params")]
    del node.attribute[:]
    node.attribute.extend(keep + [helper.make_attribute(k, v) for k, v in attrs.items()])
    with pytest.raises(ModelError, match=message):
        make_session(model).run(None, feed())


def test_op_rejects_summand_of_another_shape(result):
    model = onnx.ModelProto()
    model.CopyFrom(result.model)
    node = next(n for n in model.graph.node if n.name == "block")
    node.input[3] = "x"  # (N, 2, 6, 6), not the output's (N, 4, 6, 6)
    with pytest.raises(Exception,
                       match=r"Z must have the convolution's output shape \[5, 4, 6, 6\], got \[5, 2, 6, 6\]"):
        make_session(model).run(None, feed())


def test_export_refuses_a_clip_without_its_bounds(result):
    model = onnx.ModelProto()
    model.CopyFrom(result.model)
    node = next(n for n in model.graph.node if n.name == "six")
    keep = [a for a in node.attribute if a.name != "activation_params"]
    del node.attribute[:]
    node.attribute.extend(keep)
    with pytest.raises(ModelError, match=r"node six: activation Clip needs activation_params \[min, max\]"):
        export_float(model)
