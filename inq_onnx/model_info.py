"""Info: what a model's quantized layers hold (bits, exponent range, zeros, bytes) and what stayed float."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from . import large_models
from .accuracy_control import FLOAT_KEY as CONTROL_FLOAT_KEY, FLOAT_REASON as CONTROL_FLOAT_REASON, \
    SUMMARY_KEY as CONTROL_SUMMARY_KEY
from .calibrate import metadata_value
from .layers import match_layers
from .model_io import tensor_bytes
from .normalize import normalize
from .packing import channel_base
from .packed_nodes import packed_weight, shift_nodes

__all__ = ["LayerInfo", "FloatLayer", "ModelInfo", "model_info", "QUANTIZABLE"]

QUANTIZABLE = "quantizable, not quantized"


@dataclass(frozen=True)
class LayerInfo:
    node: str
    op_type: str
    weight: str  # the packed initializer
    bits: int
    exponent_min: int | None  # smallest / largest k of the ±2^k the layer uses; None when all zero
    exponent_max: int | None
    zero_fraction: float
    parameters: int
    packed_bytes: int
    activations: str = "float"  # "int8" when the node quantizes its input (integer mode)
    fused: str = ""  # what the node computes after the product: "+Z", "Relu", "+Z,Relu", "Relu,MaxPool3x3", ...

    @property
    def float_bytes(self) -> int:
        return 4 * self.parameters


@dataclass(frozen=True)
class FloatLayer:
    node: str
    op_type: str
    parameters: int
    reason: str


@dataclass
class ModelInfo:
    layers: list[LayerInfo] = field(default_factory=list)
    float_layers: list[FloatLayer] = field(default_factory=list)
    model_bytes: int = 0  # serialized size
    granularity: str | None = None  # exponent ranges per "tensor" or per "channel" (metadata inq.granularity)
    range_rule: str | None = None  # ranges from the largest weight ("max") or by squared rounding error ("mse")
    notes: list[str] = field(default_factory=list)  # what normalizing a float model changed
    accuracy_control: str | None = None  # what --max-drop changed (metadata inq.accuracy_control)

    @property
    def packed_bytes(self) -> int:
        """Bytes of the packed weights, each stored tensor counted once (layers may share one)."""
        return sum({layer.weight: layer.packed_bytes for layer in self.layers}.values())

    @property
    def float_bytes(self) -> int:
        return sum({layer.weight: layer.float_bytes for layer in self.layers}.values())

    @property
    def float_model_bytes(self) -> int:
        """Size of the same model with float32 weights in place of the packed ones."""
        return self.model_bytes - self.packed_bytes + self.float_bytes

    @property
    def compression_ratio(self) -> float:
        return self.float_model_bytes / self.model_bytes if self.model_bytes else 1.0

    def to_dict(self) -> dict:
        data = asdict(self)
        for entry, layer in zip(data["layers"], self.layers):
            entry["float_bytes"] = layer.float_bytes
        data.update(packed_bytes=self.packed_bytes, float_bytes=self.float_bytes,
                    float_model_bytes=self.float_model_bytes, compression_ratio=self.compression_ratio)
        return data


def _fused(node: onnx.NodeProto) -> str:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    activation = attrs.get("activation", b"")
    parts = ["+Z"] if len(node.input) > 3 and node.input[3] else []
    if activation:
        parts.append(activation.decode() if isinstance(activation, bytes) else activation)
    if "pool_kernel_shape" in attrs:
        parts.append("MaxPool" + "x".join(str(k) for k in attrs["pool_kernel_shape"]))
    return ",".join(parts)


def _layer_info(node: onnx.NodeProto, initializers: dict) -> LayerInfo:
    packed = packed_weight(node, initializers)
    integer = any(a.name == "quantize_input" and a.s for a in node.attribute)
    codes = packed.codes()
    magnitude = codes & ((1 << (packed.bits - 1)) - 1)
    nonzero = magnitude != 0
    exponents = (channel_base(packed.exponent_base, codes.shape, packed.channel_axis) + magnitude - 1)[nonzero]
    return LayerInfo(
        node=node.name, op_type=node.op_type, weight=node.input[1], bits=packed.bits,
        exponent_min=int(exponents.min()) if exponents.size else None,
        exponent_max=int(exponents.max()) if exponents.size else None,
        zero_fraction=float(1.0 - nonzero.mean()) if codes.size else 0.0,
        parameters=int(codes.size), packed_bytes=int(packed.data.size), activations="int8" if integer else "float",
        fused=_fused(node))


def model_info(model: onnx.ModelProto) -> ModelInfo:
    """Per-layer figures of the com.inq nodes, and the linear layers left float with the reason."""
    initializers = {t.name: t for t in model.graph.initializer}
    size = tensor_bytes(model) if large_models.is_large(model) else model.ByteSize()  # protobuf stops at 2 GB
    info = ModelInfo(model_bytes=size, granularity=metadata_value(model, "inq.granularity"),
                     range_rule=metadata_value(model, "inq.range_rule"),
                     accuracy_control=metadata_value(model, CONTROL_SUMMARY_KEY))
    info.layers = [_layer_info(node, initializers) for node in shift_nodes(model)]
    float_model = model
    if not info.layers:
        normalized = normalize(model)
        float_model, info.notes = normalized.model, normalized.notes
    layers, skipped = match_layers(float_model)
    sizes = {t.name: int(np.prod(t.dims)) for t in float_model.graph.initializer}
    left_float = set(filter(None, (metadata_value(model, CONTROL_FLOAT_KEY) or "").split(",")))
    info.float_layers = [FloatLayer(layer.node, layer.op_type, sizes[layer.weight],
                                    CONTROL_FLOAT_REASON if layer.node in left_float else QUANTIZABLE)
                         for layer in layers]
    by_name = {n.name: n for n in float_model.graph.node}
    # The weight is the larger constant among the first two inputs (Conv/Gemm: input 1; MatMul: either).
    info.float_layers += [FloatLayer(s.node, s.op_type, max(sizes.get(i, 0) for i in by_name[s.node].input[:2]),
                                     s.reason) for s in skipped]
    return info
