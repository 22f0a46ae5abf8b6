"""Reading com.inq nodes back: their packing attributes and decoded float weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import packing, schemas
from .errors import ModelError

__all__ = ["PackedWeight", "packed_weight", "shift_nodes", "STANDARD_OP"]

STANDARD_OP = {schemas.SHIFT_CONV: "Conv", schemas.SHIFT_GEMM: "Gemm", schemas.SHIFT_MATMUL: "MatMul"}


@dataclass(frozen=True)
class PackedWeight:
    bits: int
    shape: tuple[int, ...]
    exponent_base: tuple[int, ...]
    channel_axis: int
    data: np.ndarray  # packed bytes

    def codes(self) -> np.ndarray:
        return packing.unpack_bits(self.data, self.bits, int(np.prod(self.shape))).reshape(self.shape)

    def decode(self) -> np.ndarray:
        return packing.decode_codes(self.codes(), self.bits, self.exponent_base, self.channel_axis)


def shift_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == schemas.DOMAIN and n.op_type in STANDARD_OP]


def _packing_attributes(node: onnx.NodeProto) -> tuple[int, tuple[int, ...], tuple[int, ...], int]:
    """(bits, weight_shape, exponent_base, channel_axis) of a com.inq node."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    missing = [k for k in schemas.PACKING_ATTRIBUTES if k not in attrs]
    if missing:
        raise ModelError(f"node {node.name} ({node.op_type}) lacks attribute(s) {', '.join(missing)}")
    # Output channels: ShiftConv's axis 0, ShiftGemm's N axis (0 with transB), ShiftMatMul's axis 1.
    axis = 0 if node.op_type == schemas.SHIFT_CONV or attrs.get("transB", 0) else 1
    return int(attrs["bits"]), tuple(attrs["weight_shape"]), tuple(attrs["exponent_base"]), axis


def packed_weight(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> PackedWeight:
    bits, shape, base, axis = _packing_attributes(node)
    if len(node.input) < 2 or node.input[1] not in initializers:
        raise ModelError(f"node {node.name}: packed weight {node.input[1]!r} is not an initializer")
    data = numpy_helper.to_array(initializers[node.input[1]])
    return PackedWeight(bits, shape, base, axis, data)
