"""Rule: ShiftConv followed by Add of a tensor of the same shape (a residual) → the summand input Z."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..schemas import SHIFT_CONV
from ._graph import GraphView, attribute, is_shift_node
from .max_pool import is_pooled

__all__ = ["FuseResidualAdd"]


@dataclass(frozen=True)
class _Match:
    conv: onnx.NodeProto
    add: onnx.NodeProto
    summand: str


class FuseResidualAdd:
    name = "residual-add"

    def match(self, view: GraphView, node: onnx.NodeProto) -> _Match | None:
        # Z is added before the activation, so a conv that already has one cannot take an Add after it.
        if not is_shift_node(node) or node.op_type != SHIFT_CONV or len(node.input) > 3:
            return None
        if attribute(node, "activation", b"") not in (b"", "") or is_pooled(node):
            return None
        add = view.sole_consumer(node.output[0])
        if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx") or view.removed(add):
            return None
        summand = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        # Only an exact shape match: Z is read element for element, never broadcast.
        out_shape, z_shape = view.shape(node.output[0]), view.shape(summand)
        if out_shape is None or out_shape != z_shape:
            return None
        return _Match(node, add, summand)

    def apply(self, view: GraphView, match: _Match) -> None:
        fused = onnx.NodeProto()
        fused.CopyFrom(match.conv)
        inputs = list(fused.input) + [""] * (3 - len(fused.input))
        del fused.input[:]
        fused.input.extend([*inputs, match.summand])
        fused.output[0] = match.add.output[0]
        view.replace([match.conv, match.add], fused)
