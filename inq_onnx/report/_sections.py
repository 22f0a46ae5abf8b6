"""The report's sections: each turns measurements into HTML and adds the PNGs it shows to `files`."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from ..model_info import model_info
from ..pipeline import STEP_EVALUATION_SAMPLES, QuantizeConfig, QuantizeResult
from ..refusals import group_reasons
from ..validate import ValidationReport
from . import _html
from ._measure import Latency, LayerStats, cpu_name, level_values
from ._plots import histogram_png, sqnr_png, training_png

__all__ = ["Score", "comparison", "settings", "training", "sqnr", "weights", "float_layers"]


@dataclass(frozen=True)
class Score:
    """What the page calls accuracy: against the labels, else top-1 agreement with the FP32 model."""

    label: str
    fp32: float | None
    inq: float | None

    @classmethod
    def of(cls, validation: ValidationReport | None) -> Score:
        if validation is None:
            return cls("accuracy", None, None)
        if validation.accuracy_original is not None:
            return cls("accuracy", validation.accuracy_original, validation.accuracy_quantized)
        agreement = validation.outputs[0].top1_agreement if validation.outputs else None
        return cls("top-1 agreement with FP32", 1.0 if agreement is not None else None, agreement)

    @property
    def sentence(self) -> str:
        """The label to start a sentence with ("FP32" stays upper case)."""
        return self.label[:1].upper() + self.label[1:]


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}%"


def _ratio(value: float | None, reference: float | None) -> str | None:
    return None if value is None or not reference else f"{value / reference:.2f}x"


def comparison(original: onnx.ModelProto, result: QuantizeResult, inq_name: str, latency: Latency | None,
               score: Score, validation: ValidationReport | None) -> _html.Section:
    """Size, latency and accuracy of the FP32 model and the INQ model, side by side."""
    fp32_bytes, inq_bytes = original.ByteSize(), result.model.ByteSize()
    ms = latency.milliseconds if latency else {}
    rows = [("FP32 (original)", fp32_bytes, "1.00x", ms.get("FP32"), _ratio(ms.get("FP32"), ms.get("FP32")),
             _percent(score.fp32)),
            (inq_name, inq_bytes, _ratio(fp32_bytes, inq_bytes), ms.get(inq_name),
             _ratio(ms.get("FP32"), ms.get(inq_name)), _percent(score.inq))]
    body = [_html.table(["model", "size (bytes)", "smaller by", "latency (ms, median)", "speed-up (>1: faster)",
                         score.label], rows)]
    if latency is not None:
        body.append(_html.paragraph(
            f"Latency measured on this machine ({cpu_name()}) with onnxruntime: batch {latency.batch}, "
            f"{latency.threads} thread(s), median of {latency.rounds} interleaved runs per model. Times on other "
            f"machines differ."))
    else:
        body.append(_html.paragraph("Latency not measured: give --data, or a model whose inputs have fixed shapes."))
    info = model_info(result.model)
    body.append(_html.paragraph(
        f"Packed weights: {info.packed_bytes:,} bytes, against {info.float_bytes:,} bytes as float32."))
    if validation is not None:
        body.append(_html.paragraph(
            f"{score.sentence} measured on the {validation.samples} samples of --data, the data retraining saw; "
            f"held-out data gives the fairer figure (inq-onnx validate)."))
    else:
        body.append(_html.paragraph(f"{score.sentence} not measured: no --data was given."))
    return _html.Section("summary", "Size, latency and accuracy", body)


def settings(result: QuantizeResult, config: QuantizeConfig | None) -> _html.Section:
    """The options used and what normalizing and folding changed."""
    rows = [("mode", result.mode), ("layers quantized", str(len(result.layers))),
            ("layers left float", str(len(result.skipped)))]
    if config is not None:
        rows[:0] = [("bits", str(config.bits)), ("granularity", config.granularity), ("range rule", config.range_rule),
                    ("activations", config.activations)]
        if result.mode != "one-shot":
            # The values retraining ran with: the recipe's choices where the options left them unset.
            t = result.recipe.training(config.training) if result.recipe is not None else config.training
            rows += [("schedule (portions frozen)", ", ".join(f"{p:g}" for p in config.schedule)),
                     ("epochs per step", str(t.epochs)), ("batch size", str(t.batch_size)),
                     ("learning rate", f"{t.lr:.3g}"), ("decay", t.decay), ("optimizer", t.optimizer),
                     ("weight decay", f"{t.weight_decay:g}"), ("strategy", t.strategy), ("seed", str(t.seed))]
            if result.recipe is not None:
                rows += [(f"why: {line.split(':', 1)[0]}", line.split(":", 1)[1].strip())
                         for line in result.recipe.lines()]
    widths = sorted({levels.bits for levels in result.levels.values()})
    if len(widths) > 1:
        rows.append(("bits per layer", f"{widths[0]} to {widths[-1]} (see the per-layer table)"))
    if result.dataset is not None:
        rows.append(("samples in --data", str(len(result.dataset))))
    body = [_html.table(["setting", "value"], rows)]
    notes = result.normalization + result.notes
    if result.batchnorm is not None and result.batchnorm.summary():
        notes.append(f"BatchNormalization: {result.batchnorm.summary()}")
    if notes:
        body.append(_html.bullet_list(notes))
    return _html.Section("settings", "What was done", body)


def training(result: QuantizeResult, score: Score, files: dict[str, bytes]) -> _html.Section:
    """Loss per epoch and score after each INQ step: a plot and a table."""
    if not result.steps:
        return _html.Section("training", "Retraining per INQ step",
                             [_html.paragraph("One-shot quantization: no retraining steps to plot.")])
    files["training.png"] = training_png(result.steps, score.fp32, score.label)
    rows = [(i + 1, f"{100 * s.portion:.4g}%", s.epoch_losses[-1] if s.epoch_losses else None, _percent(s.accuracy))
            for i, s in enumerate(result.steps)]
    return _html.Section("training", "Retraining per INQ step", [
        _html.figure("training.png", "training loss and accuracy per INQ step",
                     f"Each INQ step freezes a larger portion of every layer at its power-of-two levels and retrains "
                     f"the rest. {score.sentence} after each step on (up to {STEP_EVALUATION_SAMPLES:,}) samples "
                     f"of --data."),
        _html.table(["step", "portion frozen", "loss (last epoch)", score.label], rows)])


def sqnr(layers: list[LayerStats], inputs: str | None, files: dict[str, bytes]) -> _html.Section:
    """SQNR of every layer's weights and output (run on `inputs`, described): a bar chart and a table."""
    files["sqnr.png"] = sqnr_png(layers)
    outputs = (f"and each layer's output (the float model with the INQ weights against the original, on {inputs})"
               if inputs else "(layer outputs need inputs: give --data)")
    rows = [(s.node, s.op_type, "x".join(map(str, s.shape)), s.bits, s.exponent_range, _percent(s.zero_fraction),
             s.weight_sqnr_db, s.output_sqnr_db) for s in layers]
    return _html.Section("sqnr", "SQNR per layer", [
        _html.figure("sqnr.png", "SQNR per layer",
                     f"Signal-to-quantization-noise ratio, 10·log10(Σx² / Σ(x − x_q)²): final weights against the "
                     f"original weights, {outputs}. Exact layers are drawn at the right edge."),
        _html.table(["layer", "op", "weight shape", "bits", "k of ±2^k", "zeros", "weight SQNR (dB)",
                     "output SQNR (dB)"], rows, name_column=True)])


def weights(result: QuantizeResult, layers: list[LayerStats], files: dict[str, bytes]) -> _html.Section:
    """One histogram figure per layer: the original weights with the levels, and the final weights per level."""
    before = ({t.name: numpy_helper.to_array(t) for t in result.source_model.graph.initializer}
              if result.source_model is not None else {})
    after = {t.name: numpy_helper.to_array(t) for t in result.float_model.graph.initializer}
    body = [_html.paragraph("Left: the original weights with every level the layer may take (dashed; the union over "
                            "channels when each output channel has its own range). Right: the final weights per "
                            "level.")]
    for index, (layer, stats) in enumerate(zip(result.layers, layers)):
        if layer.weight not in before:
            continue
        name = f"weights_{index:03d}.png"
        files[name] = histogram_png(f"{layer.node} ({layer.op_type}, {layer.weight})", before[layer.weight],
                                    after[layer.weight], level_values(result.levels[layer.weight]))
        body.append(_html.figure(name, f"weight histogram of {layer.node}",
                                 f"{layer.node}: {_percent(stats.zero_fraction)} of the weights are 0 after "
                                 f"quantization; weight SQNR {stats.weight_sqnr_db:.3g} dB."))
    return _html.Section("weights", "Weights before and after", body)


def float_layers(result: QuantizeResult) -> _html.Section | None:
    if not result.skipped:
        return None
    return _html.Section("float", "Layers left float",
                         [_html.table(["why"], [(g.summary(),) for g in group_reasons(result.skipped)])])
