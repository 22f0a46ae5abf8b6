"""Validate: run the original and the quantized model on the same data and measure how far they drift, batch by
batch (the data is read once, and only the measures are kept)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import onnx

from .data import model_inputs
from .errors import ModelError
from .runtime import make_session, run_batched
from .sources import DataSource

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


class _Drift:
    """compare_outputs over an output's batches: the sums and extremes it needs, accumulated in float64."""

    def __init__(self, name: str):
        self.name = name
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.size = 0
        self.dot = self.ref_squares = self.other_squares = 0.0
        self.noise = self.signal = 0.0
        self.agree: int | None = None  # top-1 agreements, for (batch, classes) outputs
        self.rows = 0

    def add(self, reference: np.ndarray, other: np.ndarray) -> _Drift:
        if reference.shape != other.shape:
            raise ModelError(f"output {self.name}: shapes differ, {reference.shape} vs {other.shape}")
        ref = reference.astype(np.float64).reshape(-1)
        out = other.astype(np.float64).reshape(-1)
        diff = np.abs(ref - out)
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.sum_abs += float(diff.sum())
        self.size += diff.size
        self.dot += float(np.dot(ref, out))
        self.ref_squares += float(np.dot(ref, ref))
        self.other_squares += float(np.dot(out, out))
        self.noise += float(np.sum((ref - out) ** 2))
        self.signal += float(np.sum(ref ** 2))
        if reference.ndim == 2 and reference.shape[1] > 1 and (self.agree is not None or not self.rows):
            self.agree = (self.agree or 0) + int(np.sum(reference.argmax(axis=1) == other.argmax(axis=1)))
        self.rows += len(reference) if reference.ndim else 1
        return self

    def result(self) -> OutputComparison:
        top1 = self.agree / self.rows if self.agree is not None and self.rows else None
        return OutputComparison(self.name, self.max_abs, self.sum_abs / self.size if self.size else 0.0,
                                _cosine(self.dot, self.ref_squares, self.other_squares),
                                _sqnr_db(self.signal, self.noise), top1)


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def _cosine(dot: float, a_squares: float, b_squares: float) -> float:
    na, nb = float(np.sqrt(a_squares)), float(np.sqrt(b_squares))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(dot / (na * nb))


def compare_outputs(name: str, reference: np.ndarray, other: np.ndarray) -> OutputComparison:
    return _Drift(name).add(reference, other).result()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.reshape(len(labels), -1).argmax(axis=1) == labels))


def compare_models(original: onnx.ModelProto, quantized: onnx.ModelProto, dataset: DataSource,
                   batch_size: int = 256, threads: int | None = None,
                   progress: Callable[[int], None] | None = None) -> ValidationReport:
    """Per-output drift of `quantized` from `original` on `dataset`, and both accuracies when it has labels
    and the first output is (samples, classes) scores. Reads the data once, a batch at a time, and runs both
    models on each batch; `progress(samples)` counts samples run by either model."""
    inputs = sorted(i.name for i in model_inputs(original))
    quantized_inputs = sorted(i.name for i in model_inputs(quantized))
    if inputs != quantized_inputs:
        raise ModelError(f"the models' inputs differ: {inputs} vs {quantized_inputs}")
    names = [o.name for o in original.graph.output]
    quantized_names = [o.name for o in quantized.graph.output]
    if names != quantized_names:
        raise ModelError(f"the models' outputs differ: {names} vs {quantized_names}")
    sessions = make_session(original, threads), make_session(quantized, threads)
    drifts = [_Drift(name) for name in names]
    labels = dataset.labels
    correct: list[int] | None = [0, 0] if labels is not None else None
    for batch in dataset.batches(batch_size):
        reference = run_batched(sessions[0], batch.inputs, batch_size, progress)
        results = run_batched(sessions[1], batch.inputs, batch_size, progress)
        for drift, ref, out in zip(drifts, reference, results):
            drift.add(ref, out)
        if correct is not None:
            scores = reference[0]
            if scores.ndim == 2 and len(scores) == len(batch.labels) and scores.shape[1] > int(labels.max(initial=0)):
                correct[0] += int(np.sum(scores.argmax(axis=1) == batch.labels))
                correct[1] += int(np.sum(results[0].argmax(axis=1) == batch.labels))
            else:  # not (samples, classes) scores: no accuracy
                correct = None
        del batch  # before the next one is read: one batch in memory, not two
    report = ValidationReport(samples=len(dataset))
    report.outputs = [drift.result() for drift in drifts]
    if correct is not None:
        report.accuracy_original, report.accuracy_quantized = (c / len(dataset) for c in correct)
    return report
