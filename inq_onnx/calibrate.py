"""Activation ranges for int8 export: min/max of every float tensor over data, or as stored in model metadata."""

from __future__ import annotations

import copy
import json
import math
from typing import Iterable, Mapping

import numpy as np
import onnx

from .errors import ConfigError, DataError, ModelError
from .runtime import make_session, run_batched

__all__ = ["activation_ranges", "metadata_ranges", "ranges_metadata", "metadata_value", "RANGES_KEY",
           "ACTIVATIONS_KEY", "Ranges"]

# Metadata a quantize/convert step stores: {tensor: [min, max]} over tensor names of export_float(model), and
# the activation mode ("float" or "int8") the model was converted for.
RANGES_KEY = "inq.activation_ranges"
ACTIVATIONS_KEY = "inq.activations"

Ranges = dict[str, tuple[float, float]]


def _with_all_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph outputs also include every node output of the main graph."""
    model = copy.deepcopy(model)
    present = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in present:
                model.graph.output.add().name = name  # onnxruntime infers the type
                present.add(name)
    return model


def activation_ranges(float_model: onnx.ModelProto,
                      inputs: Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]],
                      batch_size: int = 256) -> Ranges:
    """(min, max) of every float graph input and node output of `float_model` over `inputs`, run in batches.

    `inputs` is one array per model input, or an iterable of such dicts (batches), read one at a time: only
    one batch is held in memory. Like onnxruntime's MinMax calibration: the plain extremes over all samples, no
    averaging or percentiles.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(inputs, Mapping):
        if not inputs:
            raise DataError("calibration needs at least one input array")
        counts = {name: len(array) for name, array in inputs.items()}
        if len(set(counts.values())) != 1 or not next(iter(counts.values())):
            raise DataError(f"calibration arrays must share a non-zero sample count, got {counts}")
        count = next(iter(counts.values()))
        batches = ({k: np.asarray(v[start:start + batch_size]) for k, v in inputs.items()}
                   for start in range(0, count, batch_size))
    else:
        batches = iter(inputs)
    session = make_session(_with_all_outputs(float_model))
    names = [o.name for o in session.get_outputs()]
    low: dict[str, float] = {}
    high: dict[str, float] = {}

    def update(name: str, array: np.ndarray) -> None:
        if array.dtype.kind != "f" or array.size == 0:
            return
        lo, hi = float(array.min()), float(array.max())
        low[name] = min(lo, low.get(name, lo))
        high[name] = max(hi, high.get(name, hi))

    for chunk in batches:
        for name, array in chunk.items():
            update(name, array)
        # run_batched pads a short chunk to a fixed batch with copies of a real sample: extremes are unchanged.
        for name, array in zip(names, run_batched(session, chunk, batch_size)):
            update(name, array)
    if not low:
        raise DataError("calibration got no samples")
    return {name: (low[name], high[name]) for name in low}


def metadata_value(model: onnx.ModelProto, key: str) -> str | None:
    return next((p.value for p in model.metadata_props if p.key == key), None)


def metadata_ranges(model: onnx.ModelProto) -> Ranges | None:
    """The ranges stored under `inq.activation_ranges`, or None when the model has none."""
    text = metadata_value(model, RANGES_KEY)
    if text is None:
        return None
    try:
        stored = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"metadata {RANGES_KEY} is not valid JSON ({exc})") from None
    if not isinstance(stored, dict):
        raise ModelError(f"metadata {RANGES_KEY} must map tensor names to [min, max]")
    ranges: Ranges = {}
    for name, pair in stored.items():
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in pair) or pair[0] > pair[1]):
            raise ModelError(f"metadata {RANGES_KEY}: tensor {name!r} needs [min, max] with finite min <= max, "
                             f"got {pair!r}")
        ranges[name] = (float(pair[0]), float(pair[1]))
    return ranges


def ranges_metadata(ranges: Mapping[str, tuple[float, float]]) -> str:
    """The JSON text stored under `inq.activation_ranges`."""
    return json.dumps({name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())})
