"""The report's figures as PNG bytes, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

from ..errors import RuntimeUnavailableError
from ..retrain import StepReport
from ._measure import LayerStats

__all__ = ["load_pyplot", "training_png", "sqnr_png", "histogram_png"]

DPI = 100
BEFORE, AFTER, LEVEL, REFERENCE = "#4c72b0", "#dd8452", "#c44e52", "#55a868"


def load_pyplot():
    """matplotlib.pyplot on the Agg backend; RuntimeUnavailableError when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeUnavailableError(
            "the report needs matplotlib: pip install 'inq-onnx[report]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)  # a file renderer: never opens a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    load_pyplot().close(figure)
    return buffer.getvalue()


def _percent(portion: float) -> str:
    return f"{100 * portion:.4g}%"


def training_png(steps: Sequence[StepReport], reference_accuracy: float | None, accuracy_label: str) -> bytes:
    """Left: the mean training loss of every epoch, coloured by INQ step. Right: the score after each step."""
    plt = load_pyplot()
    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    epoch = 0
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(steps), 1)))
    middles, portions = [], []
    for step, color in zip(steps, colors):
        if not step.epoch_losses:
            continue
        x = np.arange(epoch + 1, epoch + len(step.epoch_losses) + 1)
        loss_axes.plot(x, step.epoch_losses, "o-", color=color)
        middles.append(float(np.mean(x)))
        portions.append(_percent(step.portion))
        if epoch:  # a line between two steps
            loss_axes.axvline(epoch + 0.5, color="#bbbbbb", linewidth=0.8)
        epoch += len(step.epoch_losses)
    loss_axes.set(title="Training loss per epoch", xlabel="epoch (all INQ steps)", ylabel="mean loss")
    if epoch:
        if epoch <= 20:
            loss_axes.set_xticks(range(1, epoch + 1))
        # Which portion each step had frozen, on a top axis: no legend to cover the curves.
        top = loss_axes.secondary_xaxis("top")
        top.set_xticks(middles, portions, fontsize="x-small", rotation=45 if len(middles) > 8 else 0)
        top.set_xlabel("portion frozen in the step", fontsize="small")
    else:
        loss_axes.text(0.5, 0.5, "no retraining", ha="center", va="center", transform=loss_axes.transAxes)

    scored = [(i, s) for i, s in enumerate(steps) if s.accuracy is not None]
    if scored:
        x = [i + 1 for i, _ in scored]
        score_axes.plot(x, [100 * s.accuracy for _, s in scored], "o-", color=AFTER, label="after the step")
        score_axes.set_xticks(x, [f"{i}\n{_percent(s.portion)}" for i, (_, s) in zip(x, scored)])
        if reference_accuracy is not None:
            score_axes.axhline(100 * reference_accuracy, color=REFERENCE, linestyle="--", label="FP32")
        score_axes.legend(fontsize="small")
    else:
        score_axes.text(0.5, 0.5, f"{accuracy_label} per step not measured", ha="center", va="center",
                        transform=score_axes.transAxes)
        score_axes.set_xticks([])
        score_axes.set_yticks([])
    score_axes.set(title=f"{accuracy_label[:1].upper() + accuracy_label[1:]} after each INQ step",
                   xlabel="INQ step, portion frozen",
                   ylabel=f"{accuracy_label} (%)")
    return _png(figure)


def _finite(values: Sequence[float | None], cap: float) -> np.ndarray:
    """dB values for bars: None → NaN (no bar), +inf (exact) → `cap`."""
    return np.array([np.nan if v is None else min(v, cap) for v in values], dtype=np.float64)


def sqnr_png(stats: Sequence[LayerStats]) -> bytes:
    """Horizontal bars, one pair per layer (top to bottom in graph order): weight SQNR and layer-output SQNR."""
    plt = load_pyplot()
    height = 1.2 + 0.32 * len(stats) * (2 if any(s.output_sqnr_db is not None for s in stats) else 1)
    figure, axes = plt.subplots(figsize=(9, max(height, 2.5)), layout="constrained")
    known = [v for s in stats for v in (s.weight_sqnr_db, s.output_sqnr_db) if v is not None and math.isfinite(v)]
    cap = max(known, default=60.0) + 10.0
    y = np.arange(len(stats))
    with_outputs = any(s.output_sqnr_db is not None for s in stats)
    bar = 0.4 if with_outputs else 0.7
    weights = _finite([s.weight_sqnr_db for s in stats], cap)
    axes.barh(y - (bar / 2 if with_outputs else 0), weights, bar, color=BEFORE, label="weights vs original")
    if with_outputs:
        outputs = _finite([s.output_sqnr_db for s in stats], cap)
        axes.barh(y + bar / 2, outputs, bar, color=AFTER, label="layer output vs original")
    axes.set_yticks(y, [_short(s.node) for s in stats])
    axes.invert_yaxis()
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set(title="SQNR per layer (higher is closer to the original)", xlabel="SQNR (dB)")
    # Below the axes, where no bar can be hidden under it.
    figure.legend(fontsize="small", loc="outside lower center", ncols=2)
    return _png(figure)


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _level_label(value: float) -> str:
    """0 or ±2^k in matplotlib's math text."""
    if value == 0:
        return "0"
    return f"${'-' if value < 0 else '+'}2^{{{int(round(math.log2(abs(value))))}}}$"


def histogram_png(title: str, before: np.ndarray, after: np.ndarray, levels: np.ndarray) -> bytes:
    """Left: the original weights' histogram with the power-of-two levels marked. Right: how many final weights
    sit at each level."""
    plt = load_pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2), layout="constrained")
    before = np.asarray(before, dtype=np.float64).ravel()
    edge = max(float(np.max(np.abs(before), initial=0.0)), float(np.max(np.abs(levels), initial=0.0))) * 1.05 or 1.0
    left.hist(before, bins=80, range=(-edge, edge), color=BEFORE, alpha=0.85)
    for value in levels:
        left.axvline(value, color=LEVEL, linewidth=0.7, linestyle="--", alpha=0.7)
    left.plot([], [], color=LEVEL, linestyle="--", label=f"levels ($\\pm 2^k$ and 0): {len(levels)}")
    left.legend(fontsize="small", loc="upper right")
    left.set(title="before: original weights", xlabel="weight", ylabel="count")

    after = np.asarray(after, dtype=np.float64).ravel()
    counts = np.array([np.count_nonzero(after == value) for value in levels])
    positions = np.arange(len(levels))
    right.bar(positions, counts, color=AFTER)
    step = max(1, math.ceil(len(levels) / 16))  # keep the tick labels legible when there are many levels
    middle = len(levels) // 2  # the 0 level: always labelled
    ticks = [p for p in positions if (p - middle) % step == 0]
    right.set_xticks(ticks, [_level_label(levels[p]) for p in ticks], rotation=45 if len(ticks) > 8 else 0,
                     fontsize="small")
    right.set(title="after: weights per level", xlabel="level", ylabel="count")
    figure.suptitle(title, fontsize="medium")
    return _png(figure)
