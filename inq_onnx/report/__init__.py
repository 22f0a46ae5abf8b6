"""The quantization report: an HTML page with matplotlib plots of retraining, weights, SQNR, size and latency.

`render_report` measures and draws everything in memory; `Report.write(out_dir)` then writes `index.html` and its
PNGs, so a failure while measuring or drawing leaves no half-written report behind.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import numpy_helper

from .. import __version__
from ..data import model_inputs
from ..errors import ConfigError
from ..model_info import model_info
from ..pipeline import QuantizeConfig, QuantizeResult
from ..refusals import group_reasons
from ..validate import ValidationReport
from . import _html
from ._measure import Latency, LayerStats, cpu_name, layer_stats, level_values, measure_latency, sample_inputs
from ._plots import histogram_png, load_pyplot, sqnr_png, training_png

__all__ = ["Report", "render_report", "check_report_dir", "load_pyplot", "LayerStats", "Latency"]

INDEX = "index.html"
# Per-layer output SQNR runs both models on this many samples of the data.
SQNR_SAMPLES = 256


@dataclass
class Report:
    """A rendered report: file name → content, `index.html` among them."""

    files: dict[str, bytes] = field(default_factory=dict)
    layers: list[LayerStats] = field(default_factory=list)
    latency: Latency | None = None

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write the files into `out_dir` (created if missing), the page last; returns the page's path."""
        directory = check_report_dir(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for name in sorted(self.files, key=lambda n: n == INDEX):
            part = directory / f".{name}.part"
            part.write_bytes(self.files[name])
            os.replace(part, directory / name)
        return directory / INDEX


def check_report_dir(out_dir: str | os.PathLike) -> Path:
    """The report directory as a Path; ConfigError when it names something that is not a directory."""
    directory = Path(out_dir)
    if not str(out_dir):
        raise ConfigError("the report directory (--report) is empty")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the report directory {directory} exists and is not a directory")
    return directory


def _fixed_batch(model: onnx.ModelProto) -> int:
    """The batch size the model's first input fixes, else 1."""
    specs = model_inputs(model)
    first = specs[0].shape[0] if specs and specs[0].shape else None
    return first if isinstance(first, int) and first > 0 else 1


def _score(validation: ValidationReport | None) -> tuple[str, float | None, float | None]:
    """(what is measured, FP32's score, INQ's score): accuracy with labels, else top-1 agreement with FP32."""
    if validation is None:
        return "accuracy", None, None
    if validation.accuracy_original is not None:
        return "accuracy", validation.accuracy_original, validation.accuracy_quantized
    agreement = validation.outputs[0].top1_agreement if validation.outputs else None
    return "top-1 agreement with FP32", (1.0 if agreement is not None else None), agreement


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}%"


def _ratio(value: float | None, reference: float | None) -> str | None:
    return None if value is None or not reference else f"{value / reference:.2f}x"


def _summary_rows(result: QuantizeResult, config: QuantizeConfig | None) -> list[tuple[str, str]]:
    rows = [("mode", result.mode), ("layers quantized", str(len(result.layers))),
            ("layers left float", str(len(result.skipped)))]
    if config is not None:
        rows[:0] = [("bits", str(config.bits)), ("granularity", config.granularity),
                    ("activations", config.activations)]
        if result.mode != "one-shot":
            t = config.training
            rows += [("schedule (portions frozen)", ", ".join(f"{p:g}" for p in config.schedule)),
                     ("epochs per step", str(t.epochs)), ("batch size", str(t.batch_size)),
                     ("learning rate", f"{t.lr:g}"), ("optimizer", t.optimizer),
                     ("weight decay", f"{t.weight_decay:g}"), ("strategy", t.strategy), ("seed", str(t.seed))]
    if result.dataset is not None:
        rows.append(("samples in --data", str(len(result.dataset))))
    return rows


def render_report(result: QuantizeResult, original: onnx.ModelProto, *, config: QuantizeConfig | None = None,
                  validation: ValidationReport | None = None, title: str = "model", threads: int = 1,
                  latency_rounds: int = 30) -> Report:
    """Measure and draw the report of one quantization: `original` is the float model as the user gave it,
    `validation` its comparison with `result.model` on the data (accuracy), `config` what was asked for."""
    load_pyplot()  # fail before measuring anything when matplotlib is missing
    report = Report()
    bits = config.bits if config is not None else next(iter(result.levels.values())).bits
    inq_name = f"INQ {bits}-bit"
    score_label, fp32_score, inq_score = _score(validation)

    report.layers = layer_stats(result, sample_inputs(result, SQNR_SAMPLES))
    latency_inputs = sample_inputs(result, _fixed_batch(original))
    if latency_inputs is not None:
        report.latency = measure_latency({"FP32": original, inq_name: result.model}, latency_inputs, threads,
                                         latency_rounds)
    fp32_bytes, inq_bytes = original.ByteSize(), result.model.ByteSize()
    info = model_info(result.model)
    ms = report.latency.milliseconds if report.latency else {}

    sections = []
    comparison = [("FP32 (original)", fp32_bytes, "1.00x", ms.get("FP32"), _ratio(ms.get("FP32"), ms.get("FP32")),
                   _percent(fp32_score)),
                  (inq_name, inq_bytes, _ratio(fp32_bytes, inq_bytes), ms.get(inq_name),
                   _ratio(ms.get("FP32"), ms.get(inq_name)), _percent(inq_score))]
    body = [_html.table(["model", "size (bytes)", "smaller by", "latency (ms, median)", "speed-up (>1: faster)",
                         score_label],
                        comparison)]
    if report.latency is not None:
        lat = report.latency
        body.append(_html.paragraph(
            f"Latency measured on this machine ({cpu_name()}) with onnxruntime: batch {lat.batch}, {lat.threads} "
            f"thread(s), median of {lat.rounds} interleaved runs per model. Times on other machines differ."))
    else:
        body.append(_html.paragraph("Latency not measured: give --data, or a model whose inputs have fixed shapes."))
    body.append(_html.paragraph(
        f"Packed weights: {info.packed_bytes:,} bytes, against {info.float_bytes:,} bytes as float32."))
    if validation is not None:
        body.append(_html.paragraph(
            f"{score_label.capitalize()} measured on the {validation.samples} samples of --data, the data retraining "
            f"saw; held-out data gives the fairer figure (inq-onnx validate)."))
    else:
        body.append(_html.paragraph(f"{score_label.capitalize()} not measured: no --data was given."))
    sections.append(_html.Section("summary", "Size, latency and accuracy", body))

    body = [_html.table(["setting", "value"], _summary_rows(result, config))]
    notes = result.normalization + result.notes
    if result.batchnorm is not None and result.batchnorm.summary():
        notes.append(f"BatchNormalization: {result.batchnorm.summary()}")
    if notes:
        body.append(_html.bullet_list(notes))
    sections.append(_html.Section("settings", "What was done", body))

    if result.steps:
        report.files["training.png"] = training_png(result.steps, fp32_score if validation else None, score_label)
        rows = [(i + 1, f"{100 * s.portion:.4g}%", s.epoch_losses[-1] if s.epoch_losses else None,
                 _percent(s.accuracy)) for i, s in enumerate(result.steps)]
        body = [_html.figure("training.png", "training loss and accuracy per INQ step",
                             f"Each INQ step freezes a larger portion of every layer at its power-of-two levels and "
                             f"retrains the rest. {score_label.capitalize()} after each step on (up to 2048) samples "
                             f"of --data."),
                _html.table(["step", "portion frozen", "loss (last epoch)", score_label], rows)]
    else:
        body = [_html.paragraph("One-shot quantization: no retraining steps to plot.")]
    sections.append(_html.Section("training", "Retraining per INQ step", body))

    report.files["sqnr.png"] = sqnr_png(report.layers)
    rows = [(s.node, s.op_type, "x".join(map(str, s.shape)), s.exponent_range, _percent(s.zero_fraction),
             s.weight_sqnr_db, s.output_sqnr_db) for s in report.layers]
    sections.append(_html.Section("sqnr", "SQNR per layer", [
        _html.figure("sqnr.png", "SQNR per layer",
                     "Signal-to-quantization-noise ratio, 10·log10(Σx² / Σ(x − x_q)²): final weights against the "
                     "original weights, and each layer's output (the float model with the INQ weights against the "
                     f"original, on up to {SQNR_SAMPLES} samples). Exact layers are drawn at the right edge."),
        _html.table(["layer", "op", "weight shape", "k of ±2^k", "zeros", "weight SQNR (dB)", "output SQNR (dB)"],
                    rows, name_column=True)]))

    before = {t.name: numpy_helper.to_array(t) for t in result.source_model.graph.initializer} \
        if result.source_model is not None else {}
    after = {t.name: numpy_helper.to_array(t) for t in result.float_model.graph.initializer}
    body = [_html.paragraph("Left: the original weights with every level the layer may take (dashed; the union over "
                            "channels when each output channel has its own range). Right: the final weights per level.")]
    for index, (layer, stats) in enumerate(zip(result.layers, report.layers)):
        if layer.weight not in before:
            continue
        name = f"weights_{index:03d}.png"
        report.files[name] = histogram_png(f"{layer.node} ({layer.op_type}, {layer.weight})", before[layer.weight],
                                           after[layer.weight], level_values(result.levels[layer.weight]))
        body.append(_html.figure(name, f"weight histogram of {layer.node}",
                                 f"{layer.node}: {_percent(stats.zero_fraction)} of the weights are 0 after "
                                 f"quantization; weight SQNR {stats.weight_sqnr_db:.3g} dB."))
    sections.append(_html.Section("weights", "Weights before and after", body))

    if result.skipped:
        rows = [(g.summary(),) for g in group_reasons(result.skipped)]
        sections.append(_html.Section("float", "Layers left float", [_html.table(["why"], rows)]))

    import onnxruntime

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"inq-onnx {__version__}, onnxruntime {onnxruntime.__version__}, {stamp}"
    page = _html.page(f"INQ report: {title}", subtitle, sections)
    report.files["index.html"] = page.encode("utf-8")
    return report
