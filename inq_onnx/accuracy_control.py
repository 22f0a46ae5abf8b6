"""Accuracy control: quantize, measure the drop on validation data, and give the most sensitive layers more bits
(or leave them float) until the drop holds or nothing is left to relax."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from .batchnorm import fold_batchnorm
from .checkpoint import CHECKPOINT_FILE, CheckpointStore, check_identity, checkpoint_identity
from .data import check_source
from .errors import ConfigError
from .layers import Layer, match_layers
from .model_io import atomic_write
from .normalize import normalize
from .packing import MAX_BITS
from .pipeline import QuantizeConfig, QuantizeResult, quantize_model, with_initializers
from .quantizer import layer_levels, quantize, uses_channel_ranges
from .retrain import ProgressCallback
from .runtime import make_session, run_batched
from .sources import DataSource

__all__ = ["Relaxation", "ControlReport", "quantize_with_control", "remove_control_checkpoints", "METRICS",
           "SUMMARY_KEY", "FLOAT_KEY", "FLOAT_REASON", "CONTROL_FILE"]

METRICS = ("accuracy", "top-1 agreement")
# Metadata of the model written: what the loop did, and the nodes it left float (which `info` names as such).
SUMMARY_KEY, FLOAT_KEY = "inq.accuracy_control", "inq.accuracy_control.float"
FLOAT_REASON = "left float by accuracy control (--max-drop)"
SCORE_BATCH = 256  # samples per inference batch when scoring a model on the validation data
# The loop's own checkpoint, beside the retraining checkpoint of each run (run-<i>/).
CONTROL_FILE = "control.json"
_CONTROL_FORMAT = 1


@dataclass(frozen=True)
class Relaxation:
    """One change the loop made: `nodes` (sharing one weight) go from `bits_before` to `bits_after` (None: float)."""

    nodes: tuple[str, ...]
    bits_before: int
    bits_after: int | None
    sensitivity: float  # points lost with only these nodes quantized, at bits_before (the others float)
    sensitivity_after: float | None  # the same at bits_after
    drop_before: float  # the whole model's drop when the loop chose this change

    @property
    def reason(self) -> str:
        alone = f"alone at {self.bits_before} bits it loses {self.sensitivity:.2f} points, the most of the " \
                f"layers still quantized (model drop {self.drop_before:.2f})"
        if self.bits_after is None:
            return f"{alone}; no wider width up to {MAX_BITS} bits loses less and stays within half the allowed drop"
        return f"{alone}; at {self.bits_after} bits it loses {self.sensitivity_after:.2f}"

    def summary(self) -> str:
        after = "float" if self.bits_after is None else f"{self.bits_after} bits"
        return f"{', '.join(self.nodes)}: {self.bits_before} bits -> {after} ({self.reason})"


@dataclass
class ControlReport:
    metric: str  # "accuracy" (the data has labels) or "top-1 agreement" with the float model
    max_drop: float  # in points (percent)
    reference: float  # the float model's metric, in percent
    drops: list[float] = field(default_factory=list)  # the drop after each full quantize run, in points
    relaxations: list[Relaxation] = field(default_factory=list)
    evaluations: int = 0  # one-shot single-layer measurements on the validation data (sensitivity)
    met: bool = False
    exhausted: bool = False  # nothing was left to relax after the last run
    chosen_run: int = 0  # index into `drops` of the run whose model is returned

    @property
    def runs(self) -> int:
        """Full quantize runs (each retrains when retraining is on)."""
        return len(self.drops)

    @property
    def drop(self) -> float:
        return self.drops[self.chosen_run]

    @property
    def applied(self) -> list[Relaxation]:
        """The changes behind the returned model."""
        return self.relaxations[:self.chosen_run]

    @property
    def float_nodes(self) -> list[str]:
        return [node for r in self.applied if r.bits_after is None for node in r.nodes]

    def summary(self) -> str:
        outcome = "met" if self.met else "not met: nothing left to relax"
        changes = "; ".join(r.summary() for r in self.applied) or "no layer changed"
        return (f"max drop {self.max_drop:g} points of {self.metric} {outcome}: drop {self.drops[0]:.2f} -> "
                f"{self.drop:.2f} in {self.runs} run(s) and {self.evaluations} sensitivity measurement(s); "
                f"{changes}")


class _Scorer:
    """The metric of a model on the validation data against the original: accuracy, or top-1 agreement. The data
    is read batch by batch for every model scored; only the classes each sample gets are kept."""

    def __init__(self, model: onnx.ModelProto, validation: DataSource):
        self.data = validation
        self.labels = validation.labels
        self.metric = METRICS[0] if self.labels is not None else METRICS[1]
        self.top1 = self.classes(model, check=True)
        self.reference = self.score(self.top1)

    def classes(self, model: onnx.ModelProto, check: bool = False) -> np.ndarray:
        """The class `model` gives every sample (the arg max of its first output)."""
        session = make_session(model)
        parts = []
        for batch in self.data.batches(SCORE_BATCH):
            scores = run_batched(session, batch.inputs, SCORE_BATCH)[0]
            if check and (scores.ndim != 2 or scores.shape[1] < 2):
                raise ConfigError(f"--max-drop needs the model's first output to be (samples, classes) scores; "
                                  f"{model.graph.output[0].name} has shape {(len(self.data), *scores.shape[1:])}")
            if check and self.labels is not None and scores.shape[1] <= int(self.labels.max(initial=0)):
                raise ConfigError(f"the validation labels reach {int(self.labels.max())}; the model has "
                                  f"{scores.shape[1]} classes")
            parts.append(scores.reshape(len(scores), -1).argmax(axis=1))
            del batch  # before the next one is read: one batch in memory, not two
        return np.concatenate(parts)

    def score(self, classes: np.ndarray) -> float:
        return 100.0 * float(np.mean(classes == (self.labels if self.labels is not None else self.top1)))

    def drop(self, model: onnx.ModelProto) -> float:
        return self.reference - self.score(self.classes(model))


class _Sensitivity:
    """Points lost with one weight quantized one-shot at a width and every other layer float (cached)."""

    def __init__(self, model: onnx.ModelProto, config: QuantizeConfig, scorer: _Scorer, report: ControlReport):
        folded, _ = fold_batchnorm(normalize(model).model)
        layers, _ = match_layers(folded, config.exclude)
        self.model, self.scorer, self.report = folded, scorer, report
        initializers = {t.name: t for t in folded.graph.initializer}
        self.weights = {layer.weight: numpy_helper.to_array(initializers[layer.weight]) for layer in layers}
        self.axes = {layer.weight: layer.channel_axis for layer in layers}
        self.granularity, self.range_rule = config.granularity, config.range_rule
        self.cache: dict[tuple[str, int], float] = {}

    def __call__(self, weight: str, bits: int) -> float:
        if (weight, bits) not in self.cache:
            w = self.weights[weight]
            axis = self.axes[weight] if uses_channel_ranges(self.granularity, bits) else None
            levels = layer_levels(w, bits, axis, mse=self.range_rule == "mse")
            values = {weight: quantize(w, levels)}
            self.cache[weight, bits] = self.scorer.drop(with_initializers(self.model, values))
            self.report.evaluations += 1
        return self.cache[weight, bits]


def _next_relaxation(layers: list[Layer], config: QuantizeConfig, sensitivity: _Sensitivity, drop: float,
                     max_drop: float) -> Relaxation | None:
    """The most sensitive quantized weight one step more precise: the smallest wider width that alone loses less
    than now and at most half the allowed drop, else float (but the last quantized weight, which can only widen
    to the widest)."""
    nodes: dict[str, list[Layer]] = {}
    for layer in layers:
        nodes.setdefault(layer.weight, []).append(layer)
    candidates = []
    for weight, group in nodes.items():
        bits = config.bits_of(group[0].node)
        if len(nodes) > 1 or bits < MAX_BITS:
            # The larger loss first; of equal ones, the smaller layer (cheaper to relax).
            candidates.append((-sensitivity(weight, bits), int(np.prod(group[0].shape)), weight, bits))
    if not candidates:
        return None
    _, _, weight, bits = min(candidates)
    names = tuple(layer.node for layer in nodes[weight])
    now = sensitivity(weight, bits)
    # A width that loses as much as this one buys nothing: widening only while it helps keeps runs few.
    wider = next((b for b in range(bits + 1, MAX_BITS + 1)
                  if sensitivity(weight, b) <= max_drop / 2 and sensitivity(weight, b) < now), None)
    if wider is None and len(nodes) == 1:
        wider = MAX_BITS
    return Relaxation(names, bits, wider, now,
                      sensitivity(weight, wider) if wider is not None else None, drop)


def _relaxed(config: QuantizeConfig, change: Relaxation) -> QuantizeConfig:
    layer_bits = {n: b for n, b in config.layer_bits.items() if n not in change.nodes}
    if change.bits_after is None:
        return dataclasses.replace(config, layer_bits=layer_bits, exclude=(*config.exclude, *change.nodes))
    layer_bits.update({node: change.bits_after for node in change.nodes})
    return dataclasses.replace(config, layer_bits=layer_bits)


def _set_metadata(model: onnx.ModelProto | None, values: Mapping[str, str]) -> None:
    if model is None:
        return
    for key, value in values.items():
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, value


class _ControlStore:
    """The loop's checkpoint in `directory`: after every run, what the runs measured and changed and the
    sensitivities measured (control.json, replaced atomically), beside each run's retraining checkpoint in
    run-<i>/. Only the folders of the best run so far and of the current one are kept."""

    def __init__(self, directory: str | Path, identity: Mapping[str, Any]):
        self.directory = Path(directory)
        self.identity = dict(identity)

    def run_dir(self, run: int) -> Path:
        return self.directory / f"run-{run}"

    def has_checkpoint(self, run: int) -> bool:
        return (self.run_dir(run) / CHECKPOINT_FILE).is_file()

    def save(self, report: ControlReport, sensitivity: Mapping[tuple[str, int], float]) -> None:
        state = {"format": _CONTROL_FORMAT, "identity": self.identity,
                 "report": asdict(report),
                 "sensitivity": [[weight, bits, value] for (weight, bits), value in sorted(sensitivity.items())]}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the checkpoint folder {self.directory}: {exc.strerror or exc}") from None
        atomic_write(self.directory / CONTROL_FILE, json.dumps(state).encode())
        keep = {self.run_dir(report.chosen_run), self.run_dir(report.runs)}
        for old in _run_dirs(self.directory):  # runs that can no longer be returned
            if old not in keep:
                CheckpointStore(old, {}).remove()

    def load(self) -> tuple[ControlReport, dict[tuple[str, int], float]]:
        path = self.directory / CONTROL_FILE
        if not self.directory.is_dir():
            raise ConfigError(f"--resume: {self.directory} is not a folder")
        if not path.is_file():
            raise ConfigError(f"--resume: no accuracy-control checkpoint in {self.directory} (expected {CONTROL_FILE}; "
                              f"a single run's checkpoint resumes without --max-drop)")
        try:
            state = json.loads(path.read_text())
            if state.get("format") != _CONTROL_FORMAT:
                raise ConfigError(f"--resume: {path} has format {state.get('format')!r}, this version reads "
                                  f"{_CONTROL_FORMAT}")
            check_identity(self.directory, state["identity"], self.identity)
            fields = dict(state["report"])
            fields["relaxations"] = [Relaxation(**{**r, "nodes": tuple(r["nodes"])}) for r in fields["relaxations"]]
            report = ControlReport(**fields)
            sensitivity = {(weight, int(bits)): float(value) for weight, bits, value in state["sensitivity"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--resume: {path} is not a readable accuracy-control checkpoint ({exc})") from None
        return report, sensitivity


def _run_dirs(directory: Path) -> list[Path]:
    return [p for p in directory.glob("run-*") if p.is_dir() and p.name[4:].isdigit()]


def remove_control_checkpoints(directory: str | Path) -> None:
    """Delete an accuracy-control checkpoint (control.json and the runs' checkpoints) and the folders left empty;
    nothing else (the folder may be one the user named)."""
    directory = Path(directory)
    for run in _run_dirs(directory):
        CheckpointStore(run, {}).remove()
    for path in [directory / CONTROL_FILE, *directory.glob(f".{CONTROL_FILE}.*.tmp")]:
        path.unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass


def _control_identity(model: onnx.ModelProto, config: QuantizeConfig, dataset: DataSource | None,
                      validation: DataSource, max_drop: float) -> dict[str, Any]:
    """What a control checkpoint belongs to: the model, the validation data, the options (activations included:
    the drop is measured in the mode written) and the training data (each run retrains on it)."""
    options = {**asdict(config), "portions": list(config.schedule), "max_drop": float(max_drop),
               "training_data_sha256": dataset.fingerprint() if dataset is not None else None}
    return checkpoint_identity(model, validation.fingerprint(), options)


def quantize_with_control(model: onnx.ModelProto, config: QuantizeConfig, dataset: DataSource | None,
                          validation: DataSource, max_drop: float, *, metadata: dict[str, str] | None = None,
                          progress: ProgressCallback | None = None, evaluate_steps: bool = False,
                          checkpoint_dir: str | Path | None = None, resume: bool = False
                          ) -> tuple[QuantizeResult, ControlReport]:
    """`quantize_model`, repeated with the most sensitive layer relaxed until the drop on `validation` (accuracy
    points with labels, else top-1 disagreement with the float model in percent) is at most `max_drop`.

    Costs one full run (with retraining when `config` retrains) per change, plus one inference pass over the
    validation data per (layer, width) sensitivity measured. `evaluate_steps` as in quantize_model, in every run
    (the result's steps are those of the run returned). When nothing is left to relax, returns the run with
    the smallest drop and a report whose `met` is False.

    With `checkpoint_dir`, the loop keeps its state there after every run and each run its retraining
    checkpoint (run-<i>/); `resume` continues from them (same model, data and options, else ConfigError) and
    gives the same model byte for byte as a run that was not interrupted.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) \
            or max_drop < 0:
        raise ConfigError(f"max_drop must be a number of points >= 0, got {max_drop!r}")
    if resume and checkpoint_dir is None:
        raise ConfigError("resume needs the checkpoint folder to resume from")
    validation = check_source(validation, model)
    store = None
    if checkpoint_dir is not None:
        store = _ControlStore(checkpoint_dir, _control_identity(model, config, dataset, validation, max_drop))
    scorer = _Scorer(model, validation)
    report = ControlReport(scorer.metric, float(max_drop), scorer.reference)
    measured: dict[tuple[str, int], float] = {}
    resumed = None
    if resume:
        report, measured = store.load()  # before any run: a refusal comes fast
        resumed = f"accuracy control resumed from {store.directory} after {report.runs} finished run(s)"
    elif store is not None:
        remove_control_checkpoints(store.directory)  # an interrupted loop's state, which this run replaces
    sensitivity: _Sensitivity | None = None
    current = config
    for change in report.relaxations:
        current = _relaxed(current, change)

    def run(index: int, run_config: QuantizeConfig) -> QuantizeResult:
        folder = store.run_dir(index) if store is not None else None
        return quantize_model(model, run_config, dataset, metadata=metadata, progress=progress,
                              checkpoint_dir=folder, resume=store is not None and store.has_checkpoint(index),
                              evaluate_steps=evaluate_steps)

    best = None  # the chosen run's result, when this process made it (a resumed loop may have chosen before)
    while not (report.met or report.exhausted):
        result = run(report.runs, current)
        report.drops.append(scorer.drop(result.model))
        if report.runs == 1 or report.drops[-1] < report.drop:  # report.drop: the best run's so far
            best, report.chosen_run = result, report.runs - 1
        if report.drops[-1] <= max_drop:
            best, report.chosen_run, report.met = result, report.runs - 1, True
        else:
            if sensitivity is None:
                sensitivity = _Sensitivity(model, config, scorer, report)
                sensitivity.cache.update(measured)
            change = _next_relaxation(result.layers, current, sensitivity, report.drops[-1], max_drop)
            if change is None:
                report.exhausted = True
            else:
                report.relaxations.append(change)
                current = _relaxed(current, change)
            measured = sensitivity.cache
        if store is not None:
            store.save(report, measured)
    if best is None:
        # Resumed after the chosen run ended: its checkpoint gives the same result again without retraining.
        chosen = config
        for change in report.relaxations[:report.chosen_run]:
            chosen = _relaxed(chosen, change)
        best = run(report.chosen_run, chosen)
    if resumed is not None:
        best.notes.append(resumed)
    floated = set(report.float_nodes)
    best.skipped = [dataclasses.replace(s, reason=FLOAT_REASON) if s.node in floated else s for s in best.skipped]
    values = {SUMMARY_KEY: report.summary(), **({FLOAT_KEY: ",".join(report.float_nodes)} if floated else {})}
    _set_metadata(best.model, values)
    _set_metadata(best.float_mode_model, values)
    return best, report
