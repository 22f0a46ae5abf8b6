"""ONNX schemas of the `com.inq` operators, so `onnx.checker` and shape inference accept rewritten models."""

from __future__ import annotations

import onnx
from onnx import defs, helper, shape_inference

__all__ = ["DOMAIN", "OPSET_VERSION", "SHIFT_CONV", "SHIFT_GEMM", "SHIFT_MATMUL", "PACKING_ATTRIBUTES",
           "FUSION_ATTRIBUTES", "POOL_ATTRIBUTES", "INTEGER_ATTRIBUTES", "UINT8_IO_ATTRIBUTES", "FUSED_ACTIVATIONS",
           "register_schemas", "opset_import"]

DOMAIN = "com.inq"
OPSET_VERSION = 1
SHIFT_CONV = "ShiftConv"
SHIFT_GEMM = "ShiftGemm"
SHIFT_MATMUL = "ShiftMatMul"

# The attributes that describe the packed weight (docs/ops.md), shared by all operators.
PACKING_ATTRIBUTES = ("bits", "weight_shape", "exponent_base")
# The fused activation applied last (docs/ops.md), as onnxruntime's FusedConv names it.
FUSION_ATTRIBUTES = ("activation", "activation_params")
# A 2-D MaxPool fused after the activation (ShiftConv only): MaxPool's kernel_shape, strides and pads.
POOL_ATTRIBUTES = ("pool_kernel_shape", "pool_strides", "pool_pads")
# The attributes that put a node in integer mode: its input is quantized to uint8 (docs/ops.md).
INTEGER_ATTRIBUTES = ("quantize_input", "x_scale", "x_zero_point")
# Integer-mode ShiftConv with uint8 tensors between layers: uint8 output scale, uint8 summand parameters.
UINT8_IO_ATTRIBUTES = ("y_scale", "z_scale", "z_zero_point")
FUSED_ACTIVATIONS = ("Relu", "Clip")
_CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_GEMM_ATTRIBUTES = ("alpha", "beta", "transA", "transB")

_registered = False


def opset_import() -> onnx.OperatorSetIdProto:
    return helper.make_opsetid(DOMAIN, OPSET_VERSION)


def _float_weight_type(ctx: shape_inference.InferenceContext) -> onnx.TypeProto:
    shape = list(ctx.get_attribute("weight_shape").ints)
    return helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, shape)


def _as_float(type_proto: onnx.TypeProto) -> onnx.TypeProto:
    """The same tensor type with element type float (a uint8 input has the shape of its float counterpart)."""
    out = onnx.TypeProto()
    out.CopyFrom(type_proto)
    if out.HasField("tensor_type"):
        out.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return out


_MAX_POOL = defs.get_schema("MaxPool", 12)


def _infer_like(standard_op: str, attribute_names: tuple[str, ...], input_names: tuple[str, ...],
                output_type_input: int | None = None, pooled: bool = False):
    """Shape inference that runs the standard op's own inference on the decoded weight's type (then MaxPool's,
    when `pooled` and the node has a fused pool). With `output_type_input`, the output's element type is that
    input's when it is given (ShiftConv's Y_zero_point: uint8 output), else float."""
    schema = defs.get_schema(standard_op, 13)

    def infer(ctx: shape_inference.InferenceContext) -> None:
        if ctx.get_attribute("weight_shape") is None:
            return
        attributes = [ctx.get_attribute(name) for name in attribute_names]
        node = helper.make_node(standard_op, list(input_names[: ctx.get_num_inputs()]), ["y"])
        node.attribute.extend(a for a in attributes if a is not None)
        types = {input_names[0]: _as_float(ctx.get_input_type(0)), input_names[1]: _float_weight_type(ctx)}
        if len(input_names) > 2 and ctx.get_num_inputs() > 2 and ctx.has_input(2):
            types[input_names[2]] = ctx.get_input_type(2)
            node.input[:] = node.input[:3]
        else:
            node.input[:] = node.input[:2]
        outputs = shape_inference.infer_node_outputs(schema, node, types)
        y = outputs["y"]
        pool = [ctx.get_attribute(name) for name in POOL_ATTRIBUTES] if pooled else []
        if pool and pool[0] is not None:  # the fused MaxPool's own inference on the conv's output
            pool_node = helper.make_node("MaxPool", ["y"], ["p"])
            pool_node.attribute.extend(onnx.helper.make_attribute(k, list(a.ints))
                                       for k, a in zip(("kernel_shape", "strides", "pads"), pool) if a is not None)
            y = shape_inference.infer_node_outputs(_MAX_POOL, pool_node, {"y": y})["p"]
        if (output_type_input is not None and ctx.get_num_inputs() > output_type_input
                and ctx.has_input(output_type_input) and y.HasField("tensor_type")):
            y.tensor_type.elem_type = ctx.get_input_type(output_type_input).tensor_type.elem_type
        ctx.set_output_type(0, y)

    return infer


def _packing_attributes() -> list[defs.OpSchema.Attribute]:
    A = defs.OpSchema.AttrType
    return [
        defs.OpSchema.Attribute("bits", A.INT, "Bits per weight code, 2..8."),
        defs.OpSchema.Attribute("weight_shape", A.INTS, "Shape of the decoded weight."),
        defs.OpSchema.Attribute("exponent_base", A.INTS,
                                "Exponent of magnitude index 1: one value, or one per output channel."),
    ]


def _runtime_attributes() -> list[defs.OpSchema.Attribute]:
    """The fused activation and the integer mode: how the op computes, not what its weight is."""
    A = defs.OpSchema.AttrType
    return [
        defs.OpSchema.Attribute("activation", helper.make_attribute("activation", ""),
                                "Fused activation applied last: '' (none), 'Relu' or 'Clip'."),
        defs.OpSchema.Attribute("activation_params", A.FLOATS, "Clip: [min, max].", required=False),
        defs.OpSchema.Attribute("quantize_input", helper.make_attribute("quantize_input", ""),
                                "'' (float mode) or 'uint8' (integer mode: the input is quantized to uint8)."),
        defs.OpSchema.Attribute("x_scale", A.FLOAT, "Integer mode: static input scale (else per run).",
                                required=False),
        defs.OpSchema.Attribute("x_zero_point", A.INT, "Integer mode: static input zero point, 0..255.",
                                required=False),
    ]


def _uint8_io_attributes() -> list[defs.OpSchema.Attribute]:
    """ShiftConv in integer mode with uint8 tensors: the parameters of a uint8 output and summand."""
    A = defs.OpSchema.AttrType
    return [
        defs.OpSchema.Attribute("y_scale", A.FLOAT, "uint8 output (Y_zero_point given): output scale, > 0.",
                                required=False),
        defs.OpSchema.Attribute("z_scale", A.FLOAT, "uint8 Z: its scale, > 0.", required=False),
        defs.OpSchema.Attribute("z_zero_point", A.INT, "uint8 Z: its zero point, 0..255 (default 0).",
                                required=False),
    ]


def _parameter(name: str, type_str: str, doc: str, optional: bool = False) -> defs.OpSchema.FormalParameter:
    option = defs.OpSchema.FormalParameterOption.Optional if optional else defs.OpSchema.FormalParameterOption.Single
    return defs.OpSchema.FormalParameter(name, type_str, doc, param_option=option)


def _shift_conv_schema() -> defs.OpSchema:
    A = defs.OpSchema.AttrType
    schema = defs.OpSchema(
        SHIFT_CONV, DOMAIN, OPSET_VERSION,
        "ONNX Conv whose weight is stored as bit-packed power-of-two codes (docs/ops.md).",
        inputs=[_parameter("X", "T1", "Input (N, C, D1[, D2]); uint8 only in integer mode."),
                _parameter("W_packed", "tensor(uint8)", "Packed weight codes."),
                _parameter("B", "tensor(float)", "Bias (M).", optional=True),
                _parameter("Z", "T2", "Summand with the output's shape, added before the activation.",
                           optional=True),
                _parameter("Y_zero_point", "tensor(uint8)",
                           "Integer mode: makes Y uint8 with this zero point (and attribute y_scale).",
                           optional=True)],
        outputs=[_parameter("Y", "T3", "Output: uint8 when Y_zero_point is given, else float.")],
        type_constraints=[("T1", ["tensor(float)", "tensor(uint8)"], "Float, or uint8 codes in integer mode."),
                          ("T2", ["tensor(float)", "tensor(uint8)"], "Float, or uint8 codes in integer mode."),
                          ("T3", ["tensor(float)", "tensor(uint8)"], "Float, or uint8 with Y_zero_point.")],
        attributes=[
            defs.OpSchema.Attribute("auto_pad", helper.make_attribute("auto_pad", "NOTSET"), "As in Conv."),
            defs.OpSchema.Attribute("dilations", A.INTS, "As in Conv.", required=False),
            defs.OpSchema.Attribute("group", helper.make_attribute("group", 1), "As in Conv."),
            defs.OpSchema.Attribute("kernel_shape", A.INTS, "As in Conv.", required=False),
            defs.OpSchema.Attribute("pads", A.INTS, "As in Conv.", required=False),
            defs.OpSchema.Attribute("strides", A.INTS, "As in Conv.", required=False),
            *_packing_attributes(),
            *_runtime_attributes(),
            *_uint8_io_attributes(),
            defs.OpSchema.Attribute("pool_kernel_shape", A.INTS,
                                    "Fused 2-D MaxPool after the activation: its kernel_shape.", required=False),
            defs.OpSchema.Attribute("pool_strides", A.INTS, "Fused MaxPool: its strides (default 1).",
                                    required=False),
            defs.OpSchema.Attribute("pool_pads", A.INTS, "Fused MaxPool: its pads (default 0).", required=False),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer_like("Conv", _CONV_ATTRIBUTES, ("x", "w", "b"),
                                                             output_type_input=4, pooled=True))
    return schema


def _shift_gemm_schema() -> defs.OpSchema:
    schema = defs.OpSchema(
        SHIFT_GEMM, DOMAIN, OPSET_VERSION,
        "ONNX Gemm whose B is stored as bit-packed power-of-two codes (docs/ops.md).",
        inputs=[_parameter("A", "T", "Input (M, K), or (K, M) if transA."),
                _parameter("B_packed", "tensor(uint8)", "Packed weight codes."),
                _parameter("C", "T", "Optional addend, broadcastable to (M, N).", optional=True)],
        outputs=[_parameter("Y", "T", "Output (M, N).")],
        type_constraints=[("T", ["tensor(float)"], "Float activations.")],
        attributes=[
            defs.OpSchema.Attribute("alpha", helper.make_attribute("alpha", 1.0), "As in Gemm."),
            defs.OpSchema.Attribute("beta", helper.make_attribute("beta", 1.0), "As in Gemm."),
            defs.OpSchema.Attribute("transA", helper.make_attribute("transA", 0), "As in Gemm."),
            defs.OpSchema.Attribute("transB", helper.make_attribute("transB", 0), "As in Gemm."),
            *_packing_attributes(),
            *_runtime_attributes(),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer_like("Gemm", _GEMM_ATTRIBUTES, ("a", "b", "c")))
    return schema


def _shift_matmul_schema() -> defs.OpSchema:
    schema = defs.OpSchema(
        SHIFT_MATMUL, DOMAIN, OPSET_VERSION,
        "ONNX MatMul of an input (..., K) by a 2-D weight stored as bit-packed power-of-two codes, plus an "
        "optional bias (docs/ops.md).",
        inputs=[_parameter("A", "T", "Input (..., K)."),
                _parameter("B_packed", "tensor(uint8)", "Packed weight codes, weight_shape (K, N)."),
                _parameter("Bias", "T", "Optional bias (N), added to every row.", optional=True)],
        outputs=[_parameter("Y", "T", "Output (..., N).")],
        type_constraints=[("T", ["tensor(float)"], "Float activations.")],
        attributes=[*_packing_attributes(), *_runtime_attributes()],
    )
    # The bias (N) never changes MatMul's output shape: MatMul's own inference on (A, decoded weight) says it.
    schema.set_type_and_shape_inference_function(_infer_like("MatMul", (), ("a", "b")))
    return schema


def register_schemas() -> None:
    """Register the schemas with onnx once per process (idempotent)."""
    global _registered
    if _registered:
        return
    for schema in (_shift_conv_schema(), _shift_gemm_schema(), _shift_matmul_schema()):
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)
    _registered = True
