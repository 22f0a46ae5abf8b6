"""Shared output helpers: aligned tables, JSON, and tqdm progress bars on stderr."""

from __future__ import annotations

import json
import math
from typing import Sequence

import click


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


class StepProgress:
    """A tqdm bar per retraining step, fed by inq_onnx's progress callback."""

    def __init__(self, title: str = "INQ step", enabled: bool = True):
        self.title = title
        self.enabled = enabled
        self._bar = None
        self._step = None

    def __call__(self, step: int, steps: int, done: int, total: int, loss: float) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self._step != step:
            self.close()
            title = f"{self.title} {step + 1}/{steps}" if steps > 1 else self.title
            self._bar = tqdm(total=total, desc=title, unit="batch", leave=True, dynamic_ncols=True)
            self._step = step
        if total != self._bar.total:  # the step runs again at a lower rate (inq_onnx.retrain's rate check)
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SampleProgress:
    """A tqdm bar over samples, fed by `progress(done, total)` callbacks."""

    def __init__(self, title: str, enabled: bool = True):
        self.title, self.enabled, self._bar = title, enabled, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.title, unit="sample", dynamic_ncols=True)
        if total != self._bar.total:  # the step runs again at a lower rate (inq_onnx.retrain's rate check)
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()


def echo_mode(report) -> None:
    """What an activations switch did (an integer_mode.ModeReport)."""
    if report.mode == "float":
        click.echo("Activations: float (weights-only INQ).")
        return
    how = "static scales from calibration" if report.static else "scales computed per run (no calibration data)"
    click.echo(f"Activations: int8 in {len(report.integer_nodes)} com.inq node(s), {how}; "
               f"{len(report.uint8_values)} tensor(s) passed between them as uint8.")
    for node, why in report.float_nodes:
        click.echo(f"  float activations: {node}: {why}")
