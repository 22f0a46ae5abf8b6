"""Opset and IR version: every model brought into the opsets the rest of inq-onnx works in."""

from __future__ import annotations

import re

import onnx
from onnx import helper

from ..errors import ModelError

__all__ = ["convert_opset", "onnx_opset", "TARGET_OPSET", "MAX_OPSET"]

# Older models are converted up to opset 17: the loss of retraining needs 12 (SoftmaxCrossEntropyLoss), QDQ
# export 13 (per-channel DequantizeLinear), and 17 is the newest that every supported onnxruntime(-training)
# runs, with the Clip/Pad/Resize/Reduce forms the fusion and export code expect. Newer models are kept as they
# are up to 21, the newest opset onnxruntime-training 1.19 loads: converting them down fails for ops whose newer
# forms have no older equivalent (Pad 19 with mode "wrap", for one).
TARGET_OPSET = 17
MAX_OPSET = 21
# The oldest opset onnx's converter starts from.
MIN_SOURCE_OPSET = 6


def onnx_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _min_ir_version(opset: int) -> int:
    """The IR version that came with `opset` (onnx's release table)."""
    return min(ir for _, ir, ai_onnx, *_ in helper.VERSION_TABLE if ai_onnx >= opset)


def _blocking_op(message: str, model: onnx.ModelProto) -> str:
    """The op (and a node running it) a converter error names; onnx words it "... for <Op>"."""
    match = re.search(r"\bfor (\w+)", message) or re.search(r"op_type[:=]\s*(\w+)", message)
    op = match.group(1) if match else None
    node = next((n for n in model.graph.node if n.op_type == op), None)
    if node is not None:
        return f"op {op} (node {node.name}) has no conversion"
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return re.sub(r"^\S*\.(h|cc|cpp):\d+: ", "", first)[:200]


def convert_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model at opset TARGET_OPSET (older ones) or its own opset (17..21; newer ones at 21), IR version raised
    to the opset's; ModelError naming the op that blocks a conversion."""
    source = onnx_opset(model)
    if source is None:
        raise ModelError("the model imports no ai.onnx opset")
    if source < MIN_SOURCE_OPSET:
        raise ModelError(f"opset {source} is older than onnx's version converter reads ({MIN_SOURCE_OPSET}); "
                         f"export the model again with a newer opset")
    target = min(max(source, TARGET_OPSET), MAX_OPSET)
    notes = []
    if target != source:
        try:
            model = onnx.version_converter.convert_version(model, target)
        except Exception as exc:  # the converter raises RuntimeError/IndexError/... with C++ assertion text
            raise ModelError(f"cannot convert the model from opset {source} to {target}: "
                             f"{_blocking_op(str(exc), model)}") from None
        notes.append(f"converted from opset {source} to opset {target}")
    minimum = _min_ir_version(target)
    if model.ir_version < minimum:
        notes.append(f"IR version {model.ir_version} raised to {minimum}")
        model.ir_version = minimum
    return model, notes
