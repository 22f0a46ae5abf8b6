"""Activation modes of a com.inq model: float (weights-only INQ) or int8 (uint8 inputs, int32 accumulation)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from .calibrate import ACTIVATIONS_KEY, RANGES_KEY, Ranges, activation_ranges, metadata_ranges, ranges_metadata
from .errors import ConfigError
from .export import export_float
from .packed_nodes import shift_nodes
from .schemas import INTEGER_ATTRIBUTES

__all__ = ["ACTIVATION_MODES", "INTEGER_ATTRIBUTES", "MAX_INTEGER_BITS", "ModeReport", "set_activations",
           "input_quantization", "activations_of"]

ACTIVATION_MODES = ("float", "int8")
# Integer levels relative to the exponent base reach 2^(2^(b-2) - 1): 128 at 5 bits, 32768 at 6.
MAX_INTEGER_BITS = 5


@dataclass
class ModeReport:
    mode: str
    static: bool  # scales calibrated on data (or taken from stored ranges), else computed per run
    integer_nodes: list[str] = field(default_factory=list)
    float_nodes: list[tuple[str, str]] = field(default_factory=list)  # (node, why it stays float)


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


def set_activations(model: onnx.ModelProto, mode: str, inputs: Mapping[str, np.ndarray] | None = None,
                    ranges: Ranges | None = None, batch_size: int = 256) -> tuple[onnx.ModelProto, ModeReport]:
    """A copy of the com.inq `model` in `mode`; its weights are untouched, so the conversion goes both ways.

    int8: each com.inq node of at most 5 bits quantizes its input to uint8. Scales are static when `inputs`
    (calibrated here, min/max per tensor) or `ranges` or the model's stored ranges give them, else computed per
    run. The ranges of every tensor are stored in the metadata, for `export --format qdq`.
    """
    if mode not in ACTIVATION_MODES:
        raise ConfigError(f"activations must be one of {', '.join(ACTIVATION_MODES)}, got {mode!r}")
    model = copy.deepcopy(model)
    if inputs is not None:
        ranges = activation_ranges(export_float(model), inputs, batch_size)
    elif ranges is None:
        ranges = metadata_ranges(model)
    report = ModeReport(mode, static=mode == "int8" and ranges is not None)
    for node in shift_nodes(model):
        kept = [a for a in node.attribute if a.name not in INTEGER_ATTRIBUTES]
        del node.attribute[:]
        node.attribute.extend(kept)
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
    _set_metadata(model, ACTIVATIONS_KEY, mode)
    _set_metadata(model, RANGES_KEY, ranges_metadata(ranges) if ranges is not None else None)
    onnx.checker.check_model(model, full_check=True)
    return model, report
