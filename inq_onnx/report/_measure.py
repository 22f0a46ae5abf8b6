"""The report's figures: per-layer weight statistics and SQNR, model sizes, and side-by-side latency."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..pipeline import QuantizeResult, _probe_inputs
from ..quantizer import LayerLevels
from ..runtime import make_session, run_batched
from ..validate import compare_outputs

__all__ = ["LayerStats", "Latency", "layer_stats", "sample_inputs", "measure_latency", "level_values", "cpu_name"]


@dataclass(frozen=True)
class LayerStats:
    node: str
    op_type: str
    weight: str
    shape: tuple[int, ...]
    bits: int
    exponent_range: str  # "n2..n1" of the levels ±2^k, over all channels when the range is per channel
    zero_fraction: float  # of the quantized weights
    weight_sqnr_db: float  # the final quantized weights against the original float ones
    output_sqnr_db: float | None  # the layer's output, float model with INQ weights against the original


@dataclass(frozen=True)
class Latency:
    milliseconds: dict[str, float]  # median per model
    batch: int
    threads: int
    rounds: int


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return compare_outputs("", reference, other).sqnr_db


def level_values(levels: LayerLevels) -> np.ndarray:
    """Every value a layer's weights can take, ascending: the union over channels when ranges are per channel."""
    channels = range(len(levels.n1)) if levels.per_channel else [None]
    ranges = {(levels.channel(c).n1, levels.channel(c).n2) if c is not None else (levels.n1, levels.n2)
              for c in channels}
    exponents = sorted({k for n1, n2 in ranges for k in range(n2, n1 + 1)})
    positive = np.ldexp(1.0, np.array(exponents, dtype=np.int64))
    return np.concatenate([-positive[::-1], [0.0], positive])


def sample_inputs(result: QuantizeResult, samples: int) -> dict[str, np.ndarray] | None:
    """The first samples of the data, else random inputs when the model's shapes allow them, else None."""
    if result.dataset is not None:
        return result.dataset.head(samples).inputs
    return _probe_inputs(result.float_model, batch=min(samples, 16))


def _layer_outputs(model: onnx.ModelProto, tensors: list[str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The values of `tensors` (intermediate outputs) when running `model` on `inputs`."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in tensors)
    # Outputs without a type are not valid ONNX; float is what every layer output here is.
    for output in exposed.graph.output:
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return dict(zip(tensors, run_batched(make_session(exposed), inputs)))


def layer_stats(result: QuantizeResult, inputs: dict[str, np.ndarray] | None) -> list[LayerStats]:
    """Per quantized layer: its levels, zeros, and SQNR of its weights and (with inputs) of its output."""
    source = result.source_model
    before = {t.name: numpy_helper.to_array(t) for t in source.graph.initializer} if source is not None else {}
    after = {t.name: numpy_helper.to_array(t) for t in result.float_model.graph.initializer}
    nodes = {n.name: n for n in result.float_model.graph.node}
    tensors = {}
    for layer in result.layers:
        node = nodes.get(layer.bias_add or layer.node)
        if node is not None and node.output:
            tensors[layer.node] = node.output[0]
    outputs_before = outputs_after = {}
    if inputs is not None and source is not None and tensors:
        names = sorted(set(tensors.values()))
        outputs_before = _layer_outputs(source, names, inputs)
        outputs_after = _layer_outputs(result.float_model, names, inputs)
    stats = []
    for layer in result.layers:
        levels = result.levels[layer.weight]
        n1 = levels.n1 if not levels.per_channel else max(levels.n1)
        n2 = levels.n2 if not levels.per_channel else min(levels.n2)
        quantized = after[layer.weight]
        original = before.get(layer.weight)
        tensor = tensors.get(layer.node)
        output_sqnr = (_sqnr_db(outputs_before[tensor], outputs_after[tensor])
                       if tensor in outputs_before else None)
        stats.append(LayerStats(
            node=layer.node, op_type=layer.op_type, weight=layer.weight, shape=tuple(quantized.shape), bits=levels.bits,
            exponent_range=f"{n2}..{n1}", zero_fraction=float(np.mean(quantized == 0)) if quantized.size else 0.0,
            weight_sqnr_db=_sqnr_db(original, quantized) if original is not None else float("nan"),
            output_sqnr_db=output_sqnr))
    return stats


def measure_latency(models: dict[str, onnx.ModelProto], inputs: dict[str, np.ndarray], threads: int = 1,
                    rounds: int = 30, budget_seconds: float = 5.0, warmup: int = 3) -> Latency:
    """Median time of one run per model, measured side by side: each round runs every model once, in a rotating
    order, with idle pool threads not spinning (so one session does not steal the cores from the next).

    Stops after `rounds` rounds or when `budget_seconds` are spent, whichever comes first (at least 3 rounds).
    """
    sessions = {name: make_session(model, threads, spinning=False) for name, model in models.items()}
    batch = len(next(iter(inputs.values())))
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, inputs)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    started = time.perf_counter()
    done = 0
    while done < rounds and (done < 3 or time.perf_counter() - started < budget_seconds):
        for name in order[done % len(order):] + order[:done % len(order)]:
            start = time.perf_counter()
            sessions[name].run(None, inputs)
            times[name].append(time.perf_counter() - start)
        done += 1
    return Latency({name: statistics.median(t) * 1e3 for name, t in times.items()}, batch, threads, done)


def cpu_name() -> str:
    """The CPU's model name and logical CPU count, for labelling measured times."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"
