"""Activation modes of a com.inq model: float (weights-only INQ) or int8 (uint8 inputs, int32 accumulation)."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import large_models
from .calibrate import ACTIVATIONS_KEY, RANGES_KEY, Ranges, activation_ranges, metadata_ranges, ranges_metadata
from .errors import ConfigError
from .packed_nodes import shift_nodes
from .schemas import DOMAIN, INTEGER_ATTRIBUTES, SHIFT_CONV, UINT8_IO_ATTRIBUTES

__all__ = ["ACTIVATION_MODES", "INTEGER_ATTRIBUTES", "MAX_INTEGER_BITS", "ModeReport", "set_activations",
           "float_mode_copy", "input_quantization", "activations_of"]

ACTIVATION_MODES = ("float", "int8")
# Integer levels relative to the exponent base reach 2^(2^(b-2) - 1): 128 at 5 bits, 32768 at 6.
MAX_INTEGER_BITS = 5


@dataclass
class ModeReport:
    mode: str
    static: bool  # scales calibrated on data (or taken from stored ranges), else computed per run
    integer_nodes: list[str] = field(default_factory=list)
    float_nodes: list[tuple[str, str]] = field(default_factory=list)  # (node, why it stays float)
    uint8_values: list[str] = field(default_factory=list)  # tensors passed between com.inq nodes as uint8


def input_quantization(low: float, high: float) -> tuple[float, int]:
    """uint8 scale and zero point covering [low, high] and 0 (onnxruntime's MinMax rule for activations)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = np.float32((high - low) / 255.0)
    if not scale > 0 or not np.isfinite(scale):
        scale = np.float32(1.0)
    zero_point = int(np.clip(np.rint(-low / scale), 0, 255))
    return float(scale), zero_point


def activations_of(model: onnx.ModelProto) -> str:
    """The mode a model was converted for ("float" unless its metadata says int8)."""
    value = next((p.value for p in model.metadata_props if p.key == ACTIVATIONS_KEY), "float")
    return value if value in ACTIVATION_MODES else "float"


def _set_metadata(model: onnx.ModelProto, key: str, value: str | None) -> None:
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if value is not None:
        model.metadata_props.add(key=key, value=value)


def _strip_integer_mode(model: onnx.ModelProto) -> None:
    """Every com.inq node back to float mode, in place: integer attributes, uint8 outputs and their zero points."""
    uint8_values, dropped = set(), set()
    for node in shift_nodes(model):
        kept = [a for a in node.attribute if a.name not in INTEGER_ATTRIBUTES + UINT8_IO_ATTRIBUTES]
        del node.attribute[:]
        node.attribute.extend(kept)
        if len(node.input) > 4:  # Y_zero_point: a uint8 output
            if node.input[4]:
                uint8_values.add(node.output[0])
                dropped.add(node.input[4])
            del node.input[4:]
        while node.input and not node.input[-1]:
            del node.input[-1]
    # Models converted by earlier versions passed uint8 through MaxPool: those recorded types go as well.
    uint8_values |= {o for n in model.graph.node if n.input and n.input[0] in uint8_values for o in n.output}
    kept_info = [v for v in model.graph.value_info if v.name not in uint8_values]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept_info)
    used = {name for n in model.graph.node for name in n.input}
    kept_init = [t for t in model.graph.initializer if t.name not in dropped or t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_init)


def float_mode_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every com.inq node in float mode (what `export` and calibration start from)."""
    model = copy.deepcopy(model)
    _strip_integer_mode(model)
    return model


def _chain_uint8(model: onnx.ModelProto, ranges: Ranges) -> list[str]:
    """Outputs of integer-mode ShiftConvs that only integer-mode ShiftConvs read (as X or as the summand Z) stay
    uint8, quantized in the producer's epilogue with the scale its readers would quantize them with.

    Other ops in between end the chain: a MaxPool that the rewrite could not fuse into its ShiftConv runs on
    floats, since onnxruntime's NCHW uint8 MaxPool is much slower than its float one (measured 4.1 ms against
    0.23 ms on a ResNet-18 stem's 64x112x112 tensor)."""
    static = {n.name for n in shift_nodes(model) if any(a.name == "x_scale" for a in n.attribute)}
    readers = defaultdict(list)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name:
                readers[name].append((node, index))
    outputs = {o.name for o in model.graph.output}

    def integer_conv_reader(user: onnx.NodeProto, index: int) -> bool:
        return (user.domain == DOMAIN and user.op_type == SHIFT_CONV and user.name in static
                and index in (0, 3))

    taken = {t.name for t in model.graph.initializer} | {v for n in model.graph.node for v in (*n.input, *n.output)}
    chained = []
    for node in shift_nodes(model):
        value = node.output[0]
        users = readers.get(value, [])
        if (node.op_type != SHIFT_CONV or node.name not in static or value in outputs or not users
                or value not in ranges or not all(integer_conv_reader(u, i) for u, i in users)):
            continue
        scale, zero_point = input_quantization(*ranges[value])
        zp_name = f"{value}_zero_point"
        while zp_name in taken:
            zp_name += "_"
        taken.add(zp_name)
        model.graph.initializer.append(numpy_helper.from_array(np.array(zero_point, np.uint8), zp_name))
        inputs = list(node.input) + [""] * (4 - len(node.input))
        del node.input[:]
        node.input.extend([*inputs[:4], zp_name])
        node.attribute.append(helper.make_attribute("y_scale", scale))
        chained.append(value)
        for user, index in users:
            if index == 3:
                user.attribute.extend([helper.make_attribute("z_scale", scale),
                                       helper.make_attribute("z_zero_point", zero_point)])
    kept_info = [v for v in model.graph.value_info if v.name not in set(chained)]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept_info)
    return chained


def set_activations(model: onnx.ModelProto, mode: str, inputs: Mapping[str, np.ndarray] | None = None,
                    ranges: Ranges | None = None, batch_size: int = 256) -> tuple[onnx.ModelProto, ModeReport]:
    """A copy of the com.inq `model` in `mode`; its weights are untouched, so the conversion goes both ways.

    int8: each com.inq node of at most 5 bits quantizes its input to uint8. Scales are static when `inputs`
    (calibrated here, min/max per tensor) or `ranges` or the model's stored ranges give them, else computed per
    run. With static scales, a ShiftConv output that only such nodes read is passed on as uint8. The ranges of
    every tensor are stored in the metadata, for `export --format qdq`.
    """
    from .export import export_float  # export starts from float_mode_copy: imported here, not at module level

    if mode not in ACTIVATION_MODES:
        raise ConfigError(f"activations must be one of {', '.join(ACTIVATION_MODES)}, got {mode!r}")
    model = float_mode_copy(model)
    if inputs is not None:
        ranges = activation_ranges(export_float(model), inputs, batch_size)
    elif ranges is None:
        ranges = metadata_ranges(model)
    report = ModeReport(mode, static=mode == "int8" and ranges is not None)
    for node in shift_nodes(model):
        if mode == "float":
            continue
        bits = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "bits")
        if bits > MAX_INTEGER_BITS:
            report.float_nodes.append((node.name, f"{bits}-bit levels do not fit int8 (at most {MAX_INTEGER_BITS} "
                                                  "bits)"))
            continue
        node.attribute.append(helper.make_attribute("quantize_input", "uint8"))
        if ranges is not None:
            if node.input[0] not in ranges:
                raise ConfigError(f"node {node.name}: no calibration range for its input {node.input[0]!r}")
            scale, zero_point = input_quantization(*ranges[node.input[0]])
            node.attribute.append(helper.make_attribute("x_scale", scale))
            node.attribute.append(helper.make_attribute("x_zero_point", zero_point))
        report.integer_nodes.append(node.name)
    if report.static:
        report.uint8_values = _chain_uint8(model, ranges)
    _set_metadata(model, ACTIVATIONS_KEY, mode)
    _set_metadata(model, RANGES_KEY, ranges_metadata(ranges) if ranges is not None else None)
    large_models.check_model(model, full_check=True)
    return model, report
