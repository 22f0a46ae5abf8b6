"""Rule: ShiftConv (with whatever it already fused) followed by a 2-D MaxPool → the pool fused into the op.

A ResNet stem's MaxPool then runs on the conv's output while it is still in cache, and in integer mode on its
uint8 codes (max commutes with the monotone quantization), instead of as onnxruntime's NCHW MaxPool on a tensor
that would otherwise have to leave 8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..schemas import POOL_ATTRIBUTES, SHIFT_CONV
from ._graph import GraphView, attribute, is_shift_node

__all__ = ["FuseMaxPool", "is_pooled"]


def is_pooled(node: onnx.NodeProto) -> bool:
    """Whether a ShiftConv already has a MaxPool fused (nothing may be fused after it any more)."""
    return attribute(node, "pool_kernel_shape") is not None


@dataclass(frozen=True)
class _Match:
    conv: onnx.NodeProto
    pool: onnx.NodeProto
    kernel: list[int]
    strides: list[int]
    pads: list[int]


def _pool_window(pool: onnx.NodeProto) -> tuple[list[int], list[int], list[int]] | None:
    """kernel, strides and pads of a MaxPool the fused op computes the same way, else None."""
    kernel = list(attribute(pool, "kernel_shape", []))
    strides = list(attribute(pool, "strides", [1, 1]))
    pads = list(attribute(pool, "pads", [0, 0, 0, 0]))
    auto_pad = attribute(pool, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if (len(kernel) != 2 or len(strides) != 2 or len(pads) != 4 or auto_pad not in ("NOTSET", "VALID")
            or attribute(pool, "ceil_mode", 0) != 0 or attribute(pool, "storage_order", 0) != 0
            or any(d != 1 for d in attribute(pool, "dilations", [1, 1]))):
        return None
    if auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    if min(kernel) < 1 or min(strides) < 1 or any(not 0 <= p < kernel[i % 2] for i, p in enumerate(pads)):
        return None
    return kernel, strides, pads


class FuseMaxPool:
    name = "max-pool"

    def match(self, view: GraphView, node: onnx.NodeProto) -> _Match | None:
        if not is_shift_node(node) or node.op_type != SHIFT_CONV or is_pooled(node):
            return None
        if len(attribute(node, "weight_shape", [])) != 4:
            return None
        pool = view.sole_consumer(node.output[0])
        if (pool is None or pool.op_type != "MaxPool" or pool.domain not in ("", "ai.onnx") or view.removed(pool)
                or len([o for o in pool.output if o]) != 1 or pool.output[0] == ""):
            return None
        window = _pool_window(pool)
        return None if window is None else _Match(node, pool, *window)

    def apply(self, view: GraphView, match: _Match) -> None:
        fused = onnx.NodeProto()
        fused.CopyFrom(match.conv)
        fused.output[0] = match.pool.output[0]
        for name, value in zip(POOL_ATTRIBUTES, (match.kernel, match.strides, match.pads)):
            fused.attribute.append(onnx.helper.make_attribute(name, value))
        view.replace([match.conv, match.pool], fused)
