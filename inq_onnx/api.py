"""The Python API, one function per CLI command: files in, files and reports out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .data import check_dataset, load_dataset
from .errors import ConfigError
from .export import EXPORT_FORMATS, export_float
from .model_info import ModelInfo, model_info
from .model_io import check_output_path, default_output_path, load_model, model_sha256, save_model
from .pipeline import QuantizeConfig, QuantizeResult, check_rewrite, quantize_model
from .retrain import ProgressCallback
from .validate import OutputComparison, ValidationReport, compare_models

__all__ = ["quantize", "validate", "info", "export", "QuantizeSummary"]


@dataclass
class QuantizeSummary:
    output: Path
    result: QuantizeResult
    rewrite_check: list[OutputComparison] = field(default_factory=list)
    validation: ValidationReport | None = None  # against the original, on the data


def quantize(model_path: str | os.PathLike, config: QuantizeConfig = QuantizeConfig(),
             data_path: str | os.PathLike | None = None, output_path: str | os.PathLike | None = None,
             progress: ProgressCallback | None = None) -> QuantizeSummary:
    """Quantize a model file, check the rewrite, compare with the original, and write `<stem>.inq.onnx`.

    Nothing is written unless every step succeeds.
    """
    output = check_output_path(default_output_path(model_path) if output_path is None else output_path,
                               model_path, *([data_path] if data_path else []))
    model = load_model(model_path)
    dataset = load_dataset(data_path) if data_path else None
    result = quantize_model(model, config, dataset, metadata={"inq.source_sha256": model_sha256(model_path)},
                            progress=progress)
    comparisons = check_rewrite(result, result.dataset)
    validation = compare_models(model, result.model, result.dataset) if result.dataset is not None else None
    save_model(result.model, output)
    return QuantizeSummary(output, result, comparisons, validation)


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


def info(model_path: str | os.PathLike) -> ModelInfo:
    return model_info(load_model(model_path))


def export(quantized_path: str | os.PathLike, output_path: str | os.PathLike, fmt: str = "float") -> Path:
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    output = check_output_path(output_path, quantized_path)
    model = load_model(quantized_path)
    save_model(export_float(model), output)
    return output
