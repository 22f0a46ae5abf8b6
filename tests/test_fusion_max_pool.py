"""The MaxPool fusion: ShiftConv (+ Relu) + MaxPool → one pooled ShiftConv, in float and integer mode."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from inq_onnx.errors import ModelError
from inq_onnx.export import export_float
from inq_onnx.integer_mode import set_activations
from inq_onnx.model_info import model_info
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.reference import REFERENCE_OPS
from inq_onnx.runtime import make_session

# (kernel, strides, pads) of the MaxPool; the conv's output is 4 x 11 x 13 (odd sizes: partial windows).
WINDOWS = [
    ([3, 3], [2, 2], [1, 1, 1, 1]),  # ResNet's stem pool
    ([2, 2], [2, 2], [0, 0, 0, 0]),  # VGG's
    ([3, 3], [1, 1], [1, 1, 1, 1]),
    ([3, 2], [2, 1], [2, 0, 0, 1]),  # uneven kernel, strides and pads
    ([1, 1], [3, 2], [0, 0, 0, 0]),  # subsampling only
]


def pooled_model(kernel, strides, pads, relu=True, **pool_attrs) -> onnx.ModelProto:
    """Conv, then Relu (relu=True), Clip(0, 0.5) (relu="Clip") or nothing, then MaxPool."""
    rng = np.random.default_rng(len(pool_attrs) + sum(kernel) + sum(pads))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    if relu == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "low", "high"], ["r"], name="clip"))
    elif relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
    nodes.append(helper.make_node("MaxPool", [nodes[-1].output[0]], ["y"], name="pool", kernel_shape=kernel,
                                  strides=strides, pads=pads, **pool_attrs))
    inits = [numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "b")]
    if relu == "Clip":
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("low", 0.0), ("high", 0.5))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 11, 13])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def inputs(seed=0, count=3):
    return {"x": np.random.default_rng(seed).standard_normal((count, 3, 11, 13)).astype(np.float32)}


@pytest.mark.parametrize("kernel, strides, pads", WINDOWS)
@pytest.mark.parametrize("relu", [True, False])
def test_fused_pool_matches_the_float_model_and_the_reference(kernel, strides, pads, relu):
    result = quantize_model(pooled_model(kernel, strides, pads, relu), QuantizeConfig(bits=5, retrain=False))
    (node,) = result.model.graph.node
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert (attrs["pool_kernel_shape"], attrs["pool_strides"], attrs["pool_pads"]) == (kernel, strides, pads)
    assert (attrs.get("activation", b"") == b"Relu") == relu
    x = inputs()
    want = make_session(result.float_model).run(None, x)[0]
    got = make_session(result.model).run(None, x)[0]
    ref = ReferenceEvaluator(result.model, new_ops=REFERENCE_OPS).run(None, x)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(ref, want, rtol=0, atol=1e-5 * np.abs(want).max())
    # Shape inference through the schema gives the pooled shape.
    inferred = onnx.shape_inference.infer_shapes(result.model, strict_mode=True)
    dims = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim][1:]
    assert dims == list(want.shape[1:])


@pytest.mark.parametrize("kernel, strides, pads", WINDOWS)
@pytest.mark.parametrize("output", ["float", "uint8"])
def test_fused_pool_in_integer_mode_is_exact(kernel, strides, pads, output):
    """Integer mode pools the float or uint8 outputs of the integer conv: the same as pooling after it."""
    result = quantize_model(pooled_model(kernel, strides, pads), QuantizeConfig(bits=4, retrain=False))
    x = inputs(1)
    model, _ = set_activations(result.model, "int8", x)
    (node,) = model.graph.node
    if output == "uint8":  # as a chained producer writes it
        node.input.extend(["", "yzp"])  # no Z; Y_zero_point
        model.graph.initializer.append(numpy_helper.from_array(np.array(3, np.uint8), "yzp"))
        node.attribute.append(helper.make_attribute("y_scale", 0.02))
        model.graph.output[0].type.tensor_type.elem_type = TensorProto.UINT8
    got = make_session(model).run(None, x)[0]
    ref = ReferenceEvaluator(model, new_ops=REFERENCE_OPS).run(None, x)[0]
    if output == "uint8":
        assert got.dtype == np.uint8
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1  # float rounding at a .5 boundary at most
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # The same integer conv unfused, then onnxruntime's MaxPool on its output: identical.
    unpooled = onnx.ModelProto()
    unpooled.CopyFrom(model)
    (conv,) = unpooled.graph.node
    keep = [a for a in conv.attribute if not a.name.startswith("pool_")]
    del conv.attribute[:]
    conv.attribute.extend(keep)
    conv.output[0] = "c"
    unpooled.graph.node.append(helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=kernel, strides=strides,
                                                pads=pads))
    if output == "uint8":  # onnxruntime's uint8 MaxPool
        unpooled.graph.value_info.append(helper.make_tensor_value_info("c", TensorProto.UINT8, None))
    np.testing.assert_array_equal(make_session(unpooled).run(None, x)[0], got)


@pytest.mark.parametrize("pool_attrs", [{"ceil_mode": 1}, {"dilations": [2, 2]}, {"storage_order": 1}])
def test_pools_computed_otherwise_are_not_fused(pool_attrs):
    result = quantize_model(pooled_model([2, 2], [2, 2], [0, 0, 0, 0], **pool_attrs),
                            QuantizeConfig(bits=5, retrain=False))
    assert [n.op_type for n in result.model.graph.node] == ["ShiftConv", "MaxPool"]


def test_nothing_is_fused_after_the_pool():
    model = pooled_model([2, 2], [2, 2], [0, 0, 0, 0], relu=False)
    model.graph.node.append(helper.make_node("Relu", ["y"], ["z"], name="after"))
    model.graph.output[0].name = "z"
    result = quantize_model(model, QuantizeConfig(bits=5, retrain=False))
    assert [n.op_type for n in result.model.graph.node] == ["ShiftConv", "Relu"]


@pytest.mark.parametrize("activation", ["Relu", "Clip"])
def test_export_unfuses_the_pool_and_info_shows_it(activation):
    result = quantize_model(pooled_model(*WINDOWS[0], relu=activation), QuantizeConfig(bits=5, retrain=False))
    assert [n.op_type for n in result.model.graph.node] == ["ShiftConv"]
    exported = export_float(result.model)
    assert [n.op_type for n in exported.graph.node] == ["Conv", activation, "MaxPool"]
    onnx.checker.check_model(exported, full_check=True)
    x = inputs(2)
    np.testing.assert_allclose(make_session(exported).run(None, x)[0], make_session(result.model).run(None, x)[0],
                               rtol=0, atol=1e-5)
    assert model_info(result.model).layers[0].fused == f"{activation},MaxPool3x3"


@pytest.mark.parametrize("attrs, message", [
    ({"pool_kernel_shape": [3]}, "pool_kernel_shape \\[3\\] must have 2 values"),
    ({"pool_kernel_shape": [0, 3]}, "outside \\[1,"),
    ({"pool_kernel_shape": [2, 2], "pool_pads": [2, 0, 0, 0]}, "pool_pads .* must be in \\[0, pool kernel\\)"),
    ({"pool_kernel_shape": [2, 2], "pool_strides": [1]}, "must have 2 / 4 values"),
    ({"pool_strides": [2, 2]}, "pool_strides / pool_pads need pool_kernel_shape"),
    ({"pool_kernel_shape": [30, 30]}, "the pool kernel is larger than the padded input"),
])
def test_op_rejects_bad_pool_attributes(attrs, message):
    result = quantize_model(pooled_model(*WINDOWS[0]), QuantizeConfig(bits=5, retrain=False))
    (node,) = result.model.graph.node
    keep = [a for a in node.attribute if not a.name.startswith("pool_")]
    del node.attribute[:]
    node.attribute.extend(keep + [helper.make_attribute(k, v) for k, v in attrs.items()])
    with pytest.raises((ModelError, Exception), match=message):
        make_session(result.model).run(None, inputs())
