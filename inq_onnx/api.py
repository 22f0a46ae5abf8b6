"""The Python API, one function per CLI command: files in, files and reports out."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .accuracy_control import CONTROL_FILE, ControlReport, quantize_with_control, remove_control_checkpoints
from .checkpoint import CHECKPOINT_FILE, CheckpointStore, default_checkpoint_dir
from .data import Dataset, check_dataset, check_source, data_batches, is_data_path, open_data
from .errors import ConfigError, ModelError
from .export import EXPORT_FORMATS, QdqNote, export_float, export_qdq
from .images import Preprocess
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
    control: ControlReport | None = None  # what accuracy control (`max_drop`) measured and changed
    report: Path | None = None  # the report's index.html


def _data_inputs(data) -> list:
    """The data's paths, which the output must not overwrite."""
    return [data] if data is not None and is_data_path(data) else []


def _calibration_batches(data, model, preprocess: Preprocess | None, batch_size: int):
    """The data as checked input batches without labels, read one batch at a time."""
    for batch in data_batches(data, model, preprocess, batch_size):
        batch.pop("labels", None)
        yield check_dataset(Dataset(batch, None), model).inputs


def quantize(model_path: str | os.PathLike, config: QuantizeConfig = QuantizeConfig(),
             data_path=None, output_path: str | os.PathLike | None = None,
             progress: ProgressCallback | None = None, resume: str | os.PathLike | None = None,
             checkpoints: bool = True, preprocess: Preprocess | None = None, val_data_path=None,
             max_drop: float | None = None, report_dir: str | os.PathLike | None = None) -> QuantizeSummary:
    """Quantize a model file, check the rewrite, compare with the original, and write `<stem>.inq.onnx`.

    `data_path`: an .npz file, an image folder (decoded with `preprocess`), a Dataset, or input dicts with
    optional 'labels' (onnxruntime's calibration-reader convention). Retraining, its checks and the validation
    read the data batch by batch, several times: an .npz is held in memory, an image folder is decoded a batch
    at a time (shuffled exactly: any image can be read at any time), and input dicts are read again for every
    pass (the first counts and checks them). For that they must come from something that starts over: a list,
    an object whose __iter__ starts over, a function returning a fresh iterable, or a reader with get_next()
    and rewind(). They are shuffled within a window of sources.SHUFFLE_BATCHES batches, so a source sorted by
    class is best shuffled by its maker. A one-shot iterator (a generator, iter(...), a reader without rewind())
    is refused with DataError when retraining, and read into memory when not.

    Retraining writes a checkpoint after every INQ step into `<output>.ckpt` beside the output (or into
    `resume`), removed once the output is written; `resume` continues an interrupted run from its checkpoint
    folder. With `val_data_path` (data as `data_path`) and `max_drop` (points of accuracy, or of top-1
    agreement without labels), the most sensitive layers get more bits or stay float until the drop on that
    data is at most `max_drop` (`accuracy_control`); the checkpoint folder then also holds the loop's state
    after every run, and `resume` continues the loop. With `report_dir`, an
    HTML report (index.html and its plots) goes there too, and the summary's `result.source_model` (the
    normalized float model the report compares against) is kept; without it, that copy is dropped early.
    Nothing but the checkpoint is written unless every step succeeds.
    """
    if (val_data_path is None) != (max_drop is None):
        raise ConfigError("--val-data and --max-drop go together: the drop is measured on the validation data")
    output = check_output_path(default_output_path(model_path) if output_path is None else output_path,
                               model_path, *_data_inputs(data_path), *_data_inputs(val_data_path))
    checkpoint_dir = Path(resume) if resume is not None else default_checkpoint_dir(output) if checkpoints else None
    state_file = CHECKPOINT_FILE if max_drop is None else CONTROL_FILE
    if resume is None and checkpoint_dir is not None and (checkpoint_dir / state_file).exists():
        warnings.warn(f"{checkpoint_dir} holds the checkpoint of an interrupted run; this run replaces it "
                      f"(--resume {checkpoint_dir} would continue it)", stacklevel=2)
    if report_dir is not None:
        from .report import check_report_dir, load_pyplot  # matplotlib: an optional extra

        check_report_dir(report_dir)
        load_pyplot()  # a missing matplotlib fails now, not after retraining
    model = load_model(model_path)
    dataset = open_data(data_path, model, preprocess, retraining=config.retrains) if data_path is not None else None
    metadata = {"inq.source_sha256": model_sha256(model_path)}
    control = None
    if max_drop is None:
        result = quantize_model(model, config, dataset, metadata=metadata, progress=progress,
                                checkpoint_dir=checkpoint_dir, resume=resume is not None,
                                evaluate_steps=report_dir is not None)
    else:
        result, control = quantize_with_control(model, config, dataset, open_data(val_data_path, model, preprocess),
                                                max_drop, metadata=metadata, progress=progress,
                                                evaluate_steps=report_dir is not None,
                                                checkpoint_dir=checkpoint_dir, resume=resume is not None)
    if report_dir is None:
        result.source_model = None  # only the report reads it: one copy of the weights fewer from here on
    # The rewrite is checked in float mode, where it must match the float model to rounding; the validation
    # against the original measures what quantizing activations (int8 mode) adds.
    comparisons = check_rewrite(result, result.dataset)
    validation = compare_models(model, result.model, result.dataset) if result.dataset is not None else None
    rendered = None
    if report_dir is not None:
        from .report import render_report

        rendered = render_report(result, model, config=config, validation=validation, title=Path(model_path).name)
    external_data = save_model(result.model, output)
    if checkpoint_dir is not None and max_drop is not None:
        remove_control_checkpoints(checkpoint_dir)
    elif checkpoint_dir is not None:
        CheckpointStore(checkpoint_dir, {}).remove()
    report = rendered.write(report_dir) if rendered is not None else None
    return QuantizeSummary(output, result, comparisons, validation, external_data, control, report)


def validate(original_path: str | os.PathLike, quantized_path: str | os.PathLike,
             data_path, batch_size: int = 256,
             progress: Callable[[int, int], None] | None = None,
             preprocess: Preprocess | None = None) -> ValidationReport:
    """Compare the two models on the data (any form `quantize` takes), read batch by batch (an .npz is held in
    memory, a one-shot iterator is read into memory); `progress(samples_done, samples_total)` over both models."""
    original = load_model(original_path)
    quantized = load_model(quantized_path)
    dataset = check_source(open_data(data_path, original, preprocess), original)
    total, done = 2 * len(dataset), 0

    def count(samples: int) -> None:
        nonlocal done
        done += samples
        progress(done, total)

    return compare_models(original, quantized, dataset, batch_size, progress=count if progress else None)


def convert(quantized_path: str | os.PathLike, output_path: str | os.PathLike, activations: str,
            data_path=None, batch_size: int = 256, preprocess: Preprocess | None = None
            ) -> tuple[Path, ModeReport]:
    """Switch a com.inq model between float and int8 activations, without retraining (weights unchanged).

    int8 calibrates static input scales on `data_path` (else reuses the model's stored ranges, else computes
    scales per run), any form `quantize` takes; an image folder or a reader is read one batch at a time."""
    output = check_output_path(output_path, quantized_path, *_data_inputs(data_path))
    model = load_model(quantized_path)
    if not shift_nodes(model):
        raise ModelError("the model has no ShiftConv/ShiftGemm/ShiftMatMul nodes: quantize it first")
    if data_path is not None and activations != "int8":
        raise ConfigError("--data calibrates int8 activations; it does not apply to --activations float")
    inputs = _calibration_batches(data_path, model, preprocess, batch_size) if data_path is not None else None
    converted, report = set_activations(model, activations, inputs, batch_size=batch_size)
    save_model(converted, output)
    return output, report


def info(model_path: str | os.PathLike) -> ModelInfo:
    return model_info(load_model(model_path))


def export(quantized_path: str | os.PathLike, output_path: str | os.PathLike, fmt: str = "float",
           data_path=None, strict: bool = False, batch_size: int = 256, preprocess: Preprocess | None = None
           ) -> Path:
    """Write the model with standard ops: `float` weights, or `qdq` int8 (ranges from `data_path`, read one
    batch at a time, else the model's metadata). Layers the qdq form keeps float are reported as warnings;
    `strict` makes them errors."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt != "qdq" and (data_path is not None or strict or preprocess is not None):
        raise ConfigError("--data and --strict apply to --format qdq only, as do the image preprocessing options")
    output = check_output_path(output_path, quantized_path, *_data_inputs(data_path))
    model = load_model(quantized_path)
    if fmt == "float":
        save_model(export_float(model), output)
        return output
    inputs = _calibration_batches(data_path, model, preprocess, batch_size) if data_path is not None else None
    exported = export_qdq(model, inputs=inputs, batch_size=batch_size, strict=strict)
    for note in exported.notes:
        warnings.warn(note, QdqNote, stacklevel=2)
    save_model(exported.model, output)
    return output
