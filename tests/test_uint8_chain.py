"""Integer-mode ShiftConv with uint8 tensors between layers: uint8 X (x_scale / x_zero_point), uint8 Z (z_scale /
z_zero_point) and uint8 Y (y_scale and the Y_zero_point input), against the numpy reference (inq_onnx/reference.py).

The library comes from $INQ_ONNX_LIBRARY or the installed package, as in test_ops_conformance.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from inq_onnx.packing import pack_weight
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.schemas import register_schemas
from test_ops_conformance import inq_weight, library, make_model, make_session, vinfo  # noqa: F401

U8 = TensorProto.UINT8


def conv_node(name, rng, x, y, c, m, *, k=3, pad=1, stride=1, group=1, bits=4, z=None, y_u8=None, x_u8=None,
              activation="", z_u8=None):
    """One integer-mode ShiftConv node and its initializers. x_u8 / z_u8 / y_u8: (scale, zero point) of a uint8
    input, summand, output; float X is quantized with a static scale."""
    w, base = inq_weight(rng, (m, c // group, k, k), bits, True, 0)
    inits = [numpy_helper.from_array(pack_weight(w, bits, base, channel_axis=0), f"{name}_w"),
             numpy_helper.from_array((rng.standard_normal(m) * 0.1).astype(np.float32), f"{name}_b")]
    inputs = [x, f"{name}_w", f"{name}_b", z or ""]
    attrs = dict(bits=bits, weight_shape=[m, c // group, k, k], exponent_base=base, pads=[pad] * 4,
                 strides=[stride] * 2, group=group, quantize_input="uint8")
    if activation:
        attrs["activation"] = activation
    attrs["x_scale"], attrs["x_zero_point"] = x_u8 if x_u8 else (0.05, 128)
    if z_u8:
        attrs["z_scale"], attrs["z_zero_point"] = z_u8
    if y_u8:
        attrs["y_scale"] = y_u8[0]
        inits.append(numpy_helper.from_array(np.array(y_u8[1], np.uint8), f"{name}_yzp"))
        inputs.append(f"{name}_yzp")
    while inputs[-1] == "":
        inputs.pop()
    return helper.make_node("ShiftConv", inputs, [y], name=name, domain="com.inq", **attrs), inits


def chain(rng, depthwise):
    """X float -> conv1 (Relu, uint8 out) -> conv2 (uint8 in and out; depthwise or dense) -> conv3 (1x1, uint8 in,
    uint8 residual Z = conv1's output, float out)."""
    s1, s2 = (0.02, 0), (0.03, 100)
    n1, i1 = conv_node("c1", rng, "x", "y1", 8, 16, activation="Relu", y_u8=s1)
    n2, i2 = conv_node("c2", rng, "y1", "y2", 16, 16, group=16 if depthwise else 1, x_u8=s1, y_u8=s2)
    n3, i3 = conv_node("c3", rng, "y2", "y", 16, 16, k=1, pad=0, x_u8=s2, z="y1", z_u8=s1)
    outputs = [vinfo("y"), vinfo("y1", U8), vinfo("y2", U8)]
    return make_model([n1, n2, n3], [vinfo("x", shape=[2, 8, 9, 9])], outputs, i1 + i2 + i3)


def single(model, node_name):
    """The model's node `node_name` alone, its tensor inputs as graph inputs."""
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = [i for i in model.graph.initializer if i.name in node.input]
    init_names = {i.name for i in inits}
    inputs = [helper.make_tensor_value_info(i, TensorProto.UNDEFINED, None) for i in node.input
              if i and i not in init_names]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(node.output[0], 0, None)], inits)
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=8)


def reference(model, node_name, feeds):
    return ReferenceEvaluator(single(model, node_name), new_ops=REFERENCE_OPS).run(None, feeds)[0]


def assert_u8_close(got, want):
    """uint8 results: equal but where float rounding puts v / y_scale on the other side of a half step."""
    assert got.dtype == np.uint8 and want.dtype == np.uint8 and got.shape == want.shape
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("depthwise", [False, True], ids=["dense", "depthwise"])
def test_uint8_chain_matches_reference(library, depthwise):
    rng = np.random.default_rng(5 + depthwise)
    model = chain(rng, depthwise)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    y, y1, y2 = make_session(model, library).run(None, {"x": x})
    assert y.dtype == np.float32 and y1.dtype == np.uint8 and y2.dtype == np.uint8
    assert len(np.unique(y1)) > 20 and len(np.unique(y2)) > 20  # the scales use the uint8 range
    # Each node against the reference on the very inputs it got.
    assert_u8_close(y1, reference(model, "c1", {"x": x}))
    assert_u8_close(y2, reference(model, "c2", {"y1": y1}))
    want = reference(model, "c3", {"y2": y2, "y1": y1})
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6 * np.abs(want).max())
    # The whole chain: within a step or so of the reference (differences of one step may propagate).
    full = ReferenceEvaluator(model, new_ops=REFERENCE_OPS).run(None, {"x": x})
    assert np.abs(y - full[0]).max() < 0.05 * np.abs(full[0]).max()


def test_uint8_single_layer_variants(library):
    """Every pairing of float / uint8 X, Z and Y in one node, on the GEMM path."""
    rng = np.random.default_rng(11)
    x_f = rng.standard_normal((1, 6, 7, 7)).astype(np.float32)
    x_q = rng.integers(0, 256, (1, 6, 7, 7), dtype=np.uint8)
    z_f = rng.standard_normal((1, 10, 7, 7)).astype(np.float32)
    z_q = rng.integers(0, 256, (1, 10, 7, 7), dtype=np.uint8)
    for x_u8 in (False, True):
        for z_kind in ("none", "float", "uint8"):
            for y_u8 in (False, True):
                node, inits = conv_node("c", np.random.default_rng(3), "x", "y", 6, 10,
                                        x_u8=(0.04, 7) if x_u8 else None, z="z" if z_kind != "none" else None,
                                        z_u8=(0.1, 130) if z_kind == "uint8" else None,
                                        y_u8=(0.05, 40) if y_u8 else None, activation="Relu")
                inputs = [vinfo("x", U8 if x_u8 else TensorProto.FLOAT, [1, 6, 7, 7])]
                feeds = {"x": x_q if x_u8 else x_f}
                if z_kind != "none":
                    inputs.append(vinfo("z", U8 if z_kind == "uint8" else TensorProto.FLOAT, [1, 10, 7, 7]))
                    feeds["z"] = z_q if z_kind == "uint8" else z_f
                model = make_model([node], inputs, [vinfo("y", U8 if y_u8 else TensorProto.FLOAT)], inits)
                got = make_session(model, library).run(None, feeds)[0]
                want = ReferenceEvaluator(model, new_ops=REFERENCE_OPS).run(None, feeds)[0]
                if y_u8:
                    assert_u8_close(got, want)
                else:
                    assert got.dtype == np.float32
                    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_schema_infers_uint8_output():
    register_schemas()
    model = chain(np.random.default_rng(1), False)
    del model.graph.output[:]
    model.graph.output.append(vinfo("y", shape=[2, 16, 9, 9]))
    onnx.checker.check_model(model)
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    assert types["y1"].elem_type == U8 and types["y2"].elem_type == U8
    assert [d.dim_value for d in types["y1"].shape.dim] == [2, 16, 9, 9]
    assert inferred.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def _one(rng, x_type, **kw):
    node, inits = conv_node("c", rng, "x", "y", 4, 4, **kw)
    return node, inits, [vinfo("x", x_type, [1, 4, 5, 5])]


@pytest.mark.parametrize("case", ["float_mode_u8_x", "u8_x_without_scale", "y_scale_without_zero_point",
                                  "u8_z_without_scale"])
def test_uint8_errors(library, case):
    rng = np.random.default_rng(2)
    feeds = {"x": np.zeros((1, 4, 5, 5), np.uint8)}
    node, inits, inputs = _one(rng, U8, x_u8=(0.1, 0))
    message = "need integer mode"
    if case == "float_mode_u8_x":
        for a in list(node.attribute):
            if a.name in ("quantize_input", "x_scale", "x_zero_point"):
                node.attribute.remove(a)
    elif case == "u8_x_without_scale":
        for a in list(node.attribute):
            if a.name in ("x_scale", "x_zero_point"):
                node.attribute.remove(a)
        message = "x_scale"
    elif case == "y_scale_without_zero_point":
        node.attribute.append(helper.make_attribute("y_scale", 0.1))
        message = "Y_zero_point"
    else:
        node.input.append("z")
        inputs.append(vinfo("z", U8, [1, 4, 5, 5]))
        feeds["z"] = np.zeros((1, 4, 5, 5), np.uint8)
        message = "z_scale"
    model = make_model([node], inputs, [vinfo("y")], inits)
    with pytest.raises(Exception, match=message):
        make_session(model, library).run(None, feeds)
