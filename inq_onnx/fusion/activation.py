"""Rule: ShiftConv/ShiftGemm/ShiftMatMul followed by Relu or Clip (constant bounds) → the activation fused into the op."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ._graph import GraphView, attribute, is_shift_node
from .max_pool import is_pooled

__all__ = ["FuseActivation"]

_FLOAT_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class _Match:
    op: onnx.NodeProto
    activation: onnx.NodeProto
    name: str
    params: tuple[float, ...]


def _clip_bounds(view: GraphView, clip: onnx.NodeProto) -> tuple[float, float] | None:
    """Clip's bounds when they are constants (inputs since opset 11, attributes before)."""
    if attribute(clip, "min") is not None or attribute(clip, "max") is not None:
        return float(attribute(clip, "min", -_FLOAT_MAX)), float(attribute(clip, "max", _FLOAT_MAX))
    bounds = []
    for index, default in ((1, -_FLOAT_MAX), (2, _FLOAT_MAX)):
        if len(clip.input) <= index or not clip.input[index]:
            bounds.append(default)
            continue
        value = view.constant(clip.input[index])
        if value is None or value.size != 1:
            return None
        bounds.append(float(value.reshape(())))
    return bounds[0], bounds[1]


class FuseActivation:
    name = "activation"

    def match(self, view: GraphView, node: onnx.NodeProto) -> _Match | None:
        if not is_shift_node(node) or attribute(node, "activation", b"") not in (b"", "") or is_pooled(node):
            return None
        user = view.sole_consumer(node.output[0])
        if user is None or user.domain not in ("", "ai.onnx") or view.removed(user):
            return None
        if user.op_type == "Relu":
            return _Match(node, user, "Relu", ())
        if user.op_type == "Clip":
            bounds = _clip_bounds(view, user)
            if bounds is not None and bounds[0] <= bounds[1]:
                return _Match(node, user, "Clip", bounds)
        return None

    def apply(self, view: GraphView, match: _Match) -> None:
        fused = onnx.NodeProto()
        fused.CopyFrom(match.op)
        fused.output[0] = match.activation.output[0]
        fused.attribute.append(onnx.helper.make_attribute("activation", match.name))
        if match.params:
            fused.attribute.append(onnx.helper.make_attribute("activation_params", list(match.params)))
        view.replace([match.op, match.activation], fused)
