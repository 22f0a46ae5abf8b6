"""The Python API, one function per CLI command: files in, files and reports out."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .data import check_dataset, load_dataset
from .errors import ConfigError, ModelError
from .export import EXPORT_FORMATS, QdqNote, export_float, export_qdq
from .integer_mode import ModeReport, set_activations
from .model_info import ModelInfo, model_info
from .model_io import check_output_path, default_output_path, load_model, model_sha256, save_model
from .packed_nodes import shift_nodes
from .pipeline import QuantizeConfig, QuantizeResult, check_rewrite, quantize_model
from .retrain import ProgressCallback
from .validate import OutputComparison, ValidationReport, compare_models

__all__ = ["quantize", "validate", "info", "export", "convert", "QuantizeSummary"]


@dataclass
class QuantizeSummary:
    output: Path
    result: QuantizeResult
    rewrite_check: list[OutputComparison] = field(default_factory=list)
    validation: ValidationReport | None = None  # against the original, on the data
    external_data: Path | None = None  # the weights' file beside `output`, for models past protobuf's 2 GB
    report: Path | None = None  # the report's index.html


def quantize(model_path: str | os.PathLike, config: QuantizeConfig = QuantizeConfig(),
             data_path: str | os.PathLike | None = None, output_path: str | os.PathLike | None = None,
             progress: ProgressCallback | None = None, report_dir: str | os.PathLike | None = None
             ) -> QuantizeSummary:
    """Quantize a model file, check the rewrite, compare with the original, and write `<stem>.inq.onnx`;
    with `report_dir`, also an HTML report (index.html and its plots) there.

    Nothing is written unless every step succeeds.
    """
    output = check_output_path(default_output_path(model_path) if output_path is None else output_path,
                               model_path, *([data_path] if data_path else []))
    if report_dir is not None:
        from .report import check_report_dir, load_pyplot  # matplotlib: an optional extra

        check_report_dir(report_dir)
        load_pyplot()  # a missing matplotlib fails now, not after retraining
    model = load_model(model_path)
    dataset = load_dataset(data_path) if data_path else None
    result = quantize_model(model, config, dataset, metadata={"inq.source_sha256": model_sha256(model_path)},
                            progress=progress, evaluate_steps=report_dir is not None)
    # The rewrite is checked in float mode, where it must match the float model to rounding; the validation
    # against the original measures what quantizing activations (int8 mode) adds.
    comparisons = check_rewrite(result, result.dataset)
    validation = compare_models(model, result.model, result.dataset) if result.dataset is not None else None
    rendered = None
    if report_dir is not None:
        from .report import render_report

        rendered = render_report(result, model, config=config, validation=validation, title=Path(model_path).name)
    external_data = save_model(result.model, output)
    report = rendered.write(report_dir) if rendered is not None else None
    return QuantizeSummary(output, result, comparisons, validation, external_data, report)


def validate(original_path: str | os.PathLike, quantized_path: str | os.PathLike,
             data_path: str | os.PathLike, batch_size: int = 256,
             progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Compare the two models on the data; `progress(samples_done, samples_total)` over both passes."""
    original = load_model(original_path)
    quantized = load_model(quantized_path)
    dataset = check_dataset(load_dataset(data_path), original)
    total, done = 2 * len(dataset), 0

    def count(samples: int) -> None:
        nonlocal done
        done += samples
        progress(done, total)

    return compare_models(original, quantized, dataset, batch_size, progress=count if progress else None)


def convert(quantized_path: str | os.PathLike, output_path: str | os.PathLike, activations: str,
            data_path: str | os.PathLike | None = None, batch_size: int = 256) -> tuple[Path, ModeReport]:
    """Switch a com.inq model between float and int8 activations, without retraining (weights unchanged).

    int8 calibrates static input scales on `data_path` (else reuses the model's stored ranges, else computes
    scales per run)."""
    output = check_output_path(output_path, quantized_path, *([data_path] if data_path else []))
    model = load_model(quantized_path)
    if not shift_nodes(model):
        raise ModelError("the model has no ShiftConv/ShiftGemm/ShiftMatMul nodes: quantize it first")
    if data_path is not None and activations != "int8":
        raise ConfigError("--data calibrates int8 activations; it does not apply to --activations float")
    inputs = check_dataset(load_dataset(data_path), model).inputs if data_path else None
    converted, report = set_activations(model, activations, inputs, batch_size=batch_size)
    save_model(converted, output)
    return output, report


def info(model_path: str | os.PathLike) -> ModelInfo:
    return model_info(load_model(model_path))


def export(quantized_path: str | os.PathLike, output_path: str | os.PathLike, fmt: str = "float",
           data_path: str | os.PathLike | None = None, strict: bool = False, batch_size: int = 256) -> Path:
    """Write the model with standard ops: `float` weights, or `qdq` int8 (ranges from `data_path`, else the
    model's metadata). Layers the qdq form keeps float are reported as warnings; `strict` makes them errors."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt != "qdq" and (data_path is not None or strict):
        raise ConfigError("--data and --strict apply to --format qdq only")
    output = check_output_path(output_path, quantized_path, *([data_path] if data_path else []))
    model = load_model(quantized_path)
    if fmt == "float":
        save_model(export_float(model), output)
        return output
    inputs = check_dataset(load_dataset(data_path), model).inputs if data_path else None
    exported = export_qdq(model, inputs=inputs, batch_size=batch_size, strict=strict)
    for note in exported.notes:
        warnings.warn(note, QdqNote, stacklevel=2)
    save_model(exported.model, output)
    return output
