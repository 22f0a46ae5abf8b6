"""Validate: run the original and the quantized model on the same data and measure how far they drift."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import onnx

from .data import Dataset, model_inputs
from .errors import ModelError
from .runtime import make_session, run_batched

__all__ = ["OutputComparison", "ValidationReport", "compare_outputs", "compare_models", "accuracy"]


@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    sqnr_db: float
    top1_agreement: float | None  # for (batch, classes) outputs


@dataclass
class ValidationReport:
    samples: int
    outputs: list[OutputComparison] = field(default_factory=list)
    accuracy_original: float | None = None
    accuracy_quantized: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference - other) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def compare_outputs(name: str, reference: np.ndarray, other: np.ndarray) -> OutputComparison:
    if reference.shape != other.shape:
        raise ModelError(f"output {name}: shapes differ, {reference.shape} vs {other.shape}")
    ref = reference.astype(np.float64).reshape(-1)
    out = other.astype(np.float64).reshape(-1)
    diff = np.abs(ref - out)
    top1 = None
    if reference.ndim == 2 and reference.shape[1] > 1:
        top1 = float(np.mean(reference.argmax(axis=1) == other.argmax(axis=1)))
    return OutputComparison(name, float(diff.max(initial=0.0)), float(diff.mean()) if diff.size else 0.0,
                            _cosine(ref, out), _sqnr_db(ref, out), top1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.reshape(len(labels), -1).argmax(axis=1) == labels))


def _classifier_output(output: np.ndarray, labels: np.ndarray) -> bool:
    """True when `output` reads as (samples, classes) scores for `labels`."""
    return output.ndim == 2 and len(output) == len(labels) and output.shape[1] > int(labels.max(initial=0))


def compare_models(original: onnx.ModelProto, quantized: onnx.ModelProto, dataset: Dataset,
                   batch_size: int = 256, threads: int | None = None,
                   progress: Callable[[int], None] | None = None) -> ValidationReport:
    """Per-output drift of `quantized` from `original` on `dataset`, and both accuracies when it has labels
    and the first output is (samples, classes) scores. `progress(samples)` counts samples run, two passes."""
    inputs = sorted(i.name for i in model_inputs(original))
    quantized_inputs = sorted(i.name for i in model_inputs(quantized))
    if inputs != quantized_inputs:
        raise ModelError(f"the models' inputs differ: {inputs} vs {quantized_inputs}")
    names = [o.name for o in original.graph.output]
    quantized_names = [o.name for o in quantized.graph.output]
    if names != quantized_names:
        raise ModelError(f"the models' outputs differ: {names} vs {quantized_names}")
    reference = run_batched(make_session(original, threads), dataset.inputs, batch_size, progress)
    results = run_batched(make_session(quantized, threads), dataset.inputs, batch_size, progress)
    report = ValidationReport(samples=len(dataset))
    report.outputs = [compare_outputs(n, r, q) for n, r, q in zip(names, reference, results)]
    if dataset.labels is not None and _classifier_output(reference[0], dataset.labels):
        report.accuracy_original = accuracy(reference[0], dataset.labels)
        report.accuracy_quantized = accuracy(results[0], dataset.labels)
    return report
