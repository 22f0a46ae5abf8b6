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

from .. import __version__
from ..data import model_inputs
from ..errors import ConfigError
from ..pipeline import QuantizeConfig, QuantizeResult
from ..validate import ValidationReport
from . import _html, _sections
from ._measure import Latency, LayerStats, layer_stats, measure_latency, sample_inputs
from ._plots import load_pyplot

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


def render_report(result: QuantizeResult, original: onnx.ModelProto, *, config: QuantizeConfig | None = None,
                  validation: ValidationReport | None = None, title: str = "model", threads: int = 1,
                  latency_rounds: int = 30) -> Report:
    """Measure and draw the report of one quantization: `original` is the float model as the user gave it,
    `validation` its comparison with `result.model` on the data (accuracy), `config` what was asked for."""
    load_pyplot()  # fail before measuring anything when matplotlib is missing
    report = Report()
    widths = sorted({levels.bits for levels in result.levels.values()})
    inq_name = f"INQ {widths[0]}-bit" if len(widths) == 1 else f"INQ {widths[0]}..{widths[-1]}-bit"
    score = _sections.Score.of(validation)
    sqnr_inputs = sample_inputs(result, SQNR_SAMPLES)
    report.layers = layer_stats(result, sqnr_inputs)
    sqnr_count = len(next(iter(sqnr_inputs.values()))) if sqnr_inputs else 0
    sqnr_source = (f"{sqnr_count} samples of --data" if result.dataset is not None else
                   f"{sqnr_count} random inputs" if sqnr_inputs else None)
    latency_inputs = sample_inputs(result, _fixed_batch(original))
    if latency_inputs is not None:
        report.latency = measure_latency({"FP32": original, inq_name: result.model}, latency_inputs, threads,
                                         latency_rounds)
    sections = [
        _sections.comparison(original, result, inq_name, report.latency, score, validation),
        _sections.settings(result, config),
        _sections.training(result, score, report.files),
        _sections.sqnr(report.layers, sqnr_source, report.files),
        _sections.weights(result, report.layers, report.files),
        _sections.float_layers(result),
    ]
    import onnxruntime  # present: the measurements above ran it

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"inq-onnx {__version__}, onnxruntime {onnxruntime.__version__}, {stamp}"
    page = _html.page(f"INQ report: {title}", subtitle, [s for s in sections if s is not None])
    report.files[INDEX] = page.encode("utf-8")
    return report
