"""The quantize pipeline on models in memory: normalize → levels → retrain (or one shot) → rewrite → check."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from . import __version__
from .batchnorm import BatchNormReport, fold_batchnorm
from .checkpoint import CheckpointStore, checkpoint_identity
from .data import check_source, model_inputs
from .errors import ConfigError, DataError, ModelError, ValidationError
from .graph_edit import copy_model
from .integer_mode import ACTIVATION_MODES, ModeReport, set_activations
from .layers import Layer, SkippedNode, match_layers
from .normalize import normalize
from .packing import check_bits
from .quantizer import GRANULARITIES, RANGE_RULES, LayerLevels, layer_levels, quantize, uses_channel_ranges
from .recipe import Recipe, choose_loss, choose_recipe
from .refusals import group_reasons, summarize_reasons
from .retrain import ProgressCallback, RetrainConfig, StepEvaluator, StepReport, run_inq
from .rewrite import rewrite_model
from .runtime import make_session, run_batched
from .schedule import check_portions, default_portions
from .schemas import DOMAIN
from .sources import DataSource, Examples
from .validate import OutputComparison, compare_outputs

__all__ = ["QuantizeConfig", "QuantizeResult", "quantize_model", "check_rewrite", "trainable_parameters",
           "with_initializers", "layer_bits_metadata", "LOSSES"]

# Outputs of the rewritten model may differ from the float model with the same weights only by float rounding.
REWRITE_RTOL = 1e-4
# Scoring the model after every INQ step runs it on at most this many training samples.
STEP_EVALUATION_SAMPLES = 2048
# Samples per inference batch when the pipeline runs a model over the data (the teacher's checks, scoring).
INFERENCE_BATCH = 256


LOSSES = ("auto", "cross-entropy", "distillation")


@dataclass(frozen=True)
class QuantizeConfig:
    bits: int = 5
    portions: tuple[float, ...] | None = None  # None: the paper's schedule for `bits`
    exclude: tuple[str, ...] = ()
    retrain: bool = True
    training: RetrainConfig = field(default_factory=RetrainConfig)
    # auto: distillation from the original model's outputs, unless the data has labels the original does not fit
    # (inq_onnx.recipe.choose_loss).
    loss: str = "auto"
    # float: weights-only INQ (what retraining assumes); int8: uint8 activations, scales calibrated on the data
    # (or computed per run without data), integer accumulation.
    activations: str = "float"
    # channel: n1, n2 per output channel (folded BatchNorm scales differ by channel); tensor: one range per layer;
    # auto: per channel below 5 bits, per tensor from 5 bits (quantizer.uses_channel_ranges).
    granularity: str = "auto"
    # mse: each range from the largest magnitude (the paper's rule), moved down where that lowers the squared
    # rounding error; max: the paper's rule as it is (quantizer.RANGE_RULES).
    range_rule: str = "mse"
    # Bits of single nodes that differ from `bits` (node name -> 2..8), e.g. a sensitive layer given more.
    layer_bits: Mapping[str, int] = field(default_factory=dict, hash=False)  # a dict: left out of the hash

    def __post_init__(self):
        check_bits(self.bits)
        object.__setattr__(self, "layer_bits", dict(self.layer_bits))
        for node, bits in self.layer_bits.items():
            try:
                check_bits(bits)
            except ConfigError as exc:
                raise ConfigError(f"layer_bits: {node}: {exc}") from None
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {self.granularity!r}")
        if self.range_rule not in RANGE_RULES:
            raise ConfigError(f"range_rule must be one of {', '.join(RANGE_RULES)}, got {self.range_rule!r}")
        if isinstance(self.exclude, str):  # one name, not its characters
            object.__setattr__(self, "exclude", (self.exclude,))
        both = sorted(set(self.layer_bits) & set(self.exclude))
        if both:
            raise ConfigError(f"node {both[0]} is both excluded (left float) and given bits in layer_bits")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.activations not in ACTIVATION_MODES:
            raise ConfigError(f"activations must be one of {', '.join(ACTIVATION_MODES)}, got {self.activations!r}")
        if self.portions is not None:
            object.__setattr__(self, "portions", check_portions(self.portions))

    @property
    def schedule(self) -> tuple[float, ...]:
        return self.portions or default_portions(self.bits)

    def bits_of(self, node: str) -> int:
        return int(self.layer_bits.get(node, self.bits))

    @property
    def retrains(self) -> bool:
        """Whether data given to this configuration is retrained on (else it is only checked and calibrated on)."""
        return self.retrain and self.training.epochs != 0 and self.schedule != (1.0,)


def _granularity_used(levels: Mapping[str, LayerLevels]) -> str:
    """"channel", "tensor", or "mixed" (per channel for some layers): what the metadata and `info` report."""
    kinds = {"channel" if len(level.exponent_base) > 1 else "tensor" for level in levels.values()}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _weight_bits(layers: list[Layer], skipped: list[SkippedNode], config: QuantizeConfig,
                 model: onnx.ModelProto, notes: list[str]) -> dict[str, int]:
    """Each quantized weight's bit width; `layer_bits` naming no layer is an error, naming a float one a note."""
    by_node = {layer.node: layer for layer in layers}
    float_reasons = {s.node: s.reason for s in skipped}
    names = ", ".join(layer.node for layer in layers)
    for node in sorted(config.layer_bits):
        if node in float_reasons:
            notes.append(f"layer_bits for {node} ignored: it stays float ({float_reasons[node]})")
        elif node not in by_node:
            known = any(n.name == node for n in model.graph.node)
            raise ConfigError(f"layer_bits: {node} is {'not a quantizable layer' if known else 'no node'} "
                              f"(quantized layers: {names})")
    bits: dict[str, int] = {}
    for layer in layers:
        wanted = config.bits_of(layer.node)
        if bits.setdefault(layer.weight, wanted) != wanted:
            raise ConfigError(f"layer_bits: node {layer.node} shares its weight {layer.weight} with another layer "
                              f"at {bits[layer.weight]} bits; give both the same width")
    return bits


def layer_bits_metadata(layers: list[Layer], levels: Mapping[str, LayerLevels], bits: int) -> str:
    """`node=B,...` for the layers whose width differs from `bits` (metadata inq.layer_bits)."""
    return ",".join(f"{layer.node}={levels[layer.weight].bits}" for layer in layers
                    if levels[layer.weight].bits != bits)


@dataclass
class QuantizeResult:
    model: onnx.ModelProto  # the rewritten model, in the configured activation mode
    float_model: onnx.ModelProto  # the same weights as float Conv/Gemm: what the rewrite must reproduce
    layers: list[Layer]
    skipped: list[SkippedNode]
    levels: dict[str, LayerLevels]
    mode: str  # "labels", "distillation" or "one-shot"
    dataset: DataSource | None = None  # the data as checked against the model (float64 made float32)
    steps: list[StepReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The rewrite in float mode, which must match float_model to rounding; `model` itself when activations are
    # float. With int8 activations, `activation_mode` says which nodes quantize their inputs.
    float_mode_model: onnx.ModelProto | None = None
    activation_mode: ModeReport | None = None
    batchnorm: BatchNormReport | None = None  # the BatchNormalization nodes folded into the layer before
    normalization: list[str] = field(default_factory=list)  # what normalizing the model changed
    recipe: Recipe | None = None  # the retraining settings used and why; None for one-shot
    # The normalized model with BatchNorm folded, before quantization: float_model's graph with the original weights.
    source_model: onnx.ModelProto | None = None

    @property
    def checked_model(self) -> onnx.ModelProto:
        return self.float_mode_model if self.float_mode_model is not None else self.model


def trainable_parameters(model: onnx.ModelProto, layers: list[Layer], exclude: tuple[str, ...] = ()) -> list[str]:
    """Conv/Gemm weights and biases, the layers' weights and biases (a MatMul's bias Add included) and
    BatchNormalization scale/shift: what retraining may move. The nodes in `exclude` keep their values (which
    also keeps retraining out of an op without a gradient that only they lie behind)."""
    initializers = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    names = {layer.weight for layer in layers} | {layer.bias for layer in layers if layer.bias}
    for node in model.graph.node:
        if node.name not in exclude and node.op_type in ("Conv", "Gemm", "BatchNormalization"):
            names.update(node.input[1:3])
    return sorted(n for n in names if n in initializers)


def with_initializers(model: onnx.ModelProto, values: dict[str, np.ndarray], consume: bool = False
                      ) -> onnx.ModelProto:
    """A copy of `model` with the named initializers set to `values` (as float32); the replaced tensors are
    never copied first. With `consume`, each value leaves `values` as its tensor is made."""
    take = values.pop if consume else values.__getitem__
    return copy_model(model, {name: (lambda name=name: numpy_helper.from_array(
        np.asarray(take(name), dtype=np.float32), name)) for name in list(values)})


def _channel_axes(layers: list[Layer]) -> dict[str, int | None]:
    """Each weight's output-channel axis; None (one range) for a weight whose layers read it along different axes."""
    axes: dict[str, set[int]] = {}
    for layer in layers:
        axes.setdefault(layer.weight, set()).add(layer.channel_axis)
    return {name: next(iter(found)) if len(found) == 1 else None for name, found in axes.items()}


def _teacher(model: onnx.ModelProto):
    """The original model's outputs on a batch of inputs: the targets of distillation."""
    session = make_session(model)
    return lambda inputs: run_batched(session, inputs, INFERENCE_BATCH)


def _teacher_fit(teacher, data: DataSource) -> float | None:
    """The original model's accuracy on the labels, read batch by batch; None when its first output does not
    read as (samples, classes) scores for them."""
    correct, top = 0, int(data.labels.max(initial=0))
    for batch in data.batches(INFERENCE_BATCH):
        scores = teacher(batch.inputs)[0]
        if scores.ndim != 2 or scores.shape[1] <= top:
            return None
        correct += int(np.sum(scores.argmax(axis=1) == batch.labels))
        del batch  # before the next one is read: one batch in memory, not two
    return correct / len(data)


def _step_evaluator(model: onnx.ModelProto, data: DataSource, teacher, seed: int) -> StepEvaluator:
    """Top-1 accuracy against the labels (or, given the `teacher`, agreement with the original model's classes)
    on a fixed sample of the training data, read batch by batch, for the model with the given parameters."""
    count = len(data)
    index = np.arange(count)
    if count > STEP_EVALUATION_SAMPLES:  # spread over the data, which may be sorted by class
        index = np.sort(np.random.default_rng(seed).choice(count, STEP_EVALUATION_SAMPLES, replace=False))
    if teacher is None:
        reference = data.labels[index]
    else:
        parts = []
        for batch in data.select(index, INFERENCE_BATCH):
            output = teacher(batch.inputs)[0]
            if output.ndim == 2 and output.shape[1] > 1:
                output = output.argmax(axis=1)
            elif output.ndim != 1:  # not classes: nothing to score
                return lambda params: None
            parts.append(output)
        reference = np.concatenate(parts)
    top = int(reference.max(initial=0))

    def evaluate(params):
        session = make_session(with_initializers(model, params))
        correct, done = 0, 0
        for batch in data.select(index, INFERENCE_BATCH):
            scores = run_batched(session, batch.inputs, INFERENCE_BATCH)[0]
            if scores.ndim != 2 or scores.shape[1] <= top:
                return None
            correct += int(np.sum(scores.argmax(axis=1) == reference[done:done + len(scores)]))
            done += len(scores)
            del batch  # before the next one is read
        return correct / len(index)

    return evaluate


def _checkpoints(model, data: DataSource, config: QuantizeConfig, directory) -> CheckpointStore:
    # The activation mode is applied after retraining and does not change what a checkpoint holds.
    options = {**asdict(config), "portions": list(config.schedule), "activations": None}
    return CheckpointStore(directory, checkpoint_identity(model, data.fingerprint(), options))


def _retrain(model, layers, levels, data: DataSource, config: QuantizeConfig, progress, checkpoint_dir, resume,
             evaluate_steps: bool):
    from .training.ort_backend import OrtGradientBackend  # needs onnxruntime-training: imported on demand

    if config.loss == "cross-entropy" and data.labels is None:
        raise DataError("loss cross-entropy needs 'labels' in the data")
    # The original model's outputs are computed batch by batch, as retraining reads the data.
    teacher = None if config.loss == "cross-entropy" else _teacher(model)
    # How well the original fits the labels decides the loss when it is left to choose.
    fit = _teacher_fit(teacher, data) if config.loss == "auto" and data.labels is not None else None
    loss, loss_why = choose_loss(config.loss, data.labels, fit)
    examples = Examples(data, None if loss == "labels" else teacher)
    trainable = trainable_parameters(model, layers, config.exclude)
    store = _checkpoints(model, data, config, checkpoint_dir) if checkpoint_dir is not None else None
    start = store.load() if resume else None  # before the training graph is built: a refusal comes fast
    evaluate = _step_evaluator(model, data, examples.teacher, config.training.seed) if evaluate_steps else None
    with OrtGradientBackend(model, trainable, "cross_entropy" if loss == "labels" else "distillation",
                            data.sample_shapes()) as backend:
        # A resumed run chooses the recipe again: the range test is deterministic for the seed, so it finds
        # the same rate as the interrupted run did.
        recipe = choose_recipe(backend, examples, config.training, levels, config.schedule, config.bits, loss,
                               loss_why)
        params, steps = run_inq(backend, levels, config.schedule, examples, recipe.training(config.training),
                                progress, checkpoint=store.save if store is not None else None, resume_from=start,
                                evaluate=evaluate, back_off=config.training.lr is None)
    resumed = f"resumed from {checkpoint_dir} after INQ step {start.steps_done}" if start is not None else None
    return params, steps, loss, recipe, resumed


def _rate_notes(steps: list[StepReport]) -> list[str]:
    """What the loss probe changed: per step, the rate kept and the ones tried (retrain.PROBE_BATCHES)."""
    notes = []
    for index, step in enumerate(steps):
        if step.tried:
            tried = ", ".join(f"{rate:.3g} ({probe:.4g})" for rate, probe in step.tried)
            notes.append(f"INQ step {index + 1}: learning rate {step.lr:.3g} kept (loss probe {step.probe_start:.4g} "
                         f"after the freeze, {step.probe_end:.4g} after retraining); given up: {tried}")
    return notes


def quantize_model(model: onnx.ModelProto, config: QuantizeConfig, dataset: DataSource | None = None, *,
                   metadata: dict[str, str] | None = None, progress: ProgressCallback | None = None,
                   checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
                   evaluate_steps: bool = False) -> QuantizeResult:
    """INQ-quantize every qualifying Conv/Gemm/MatMul of `model` and rewrite them into com.inq ops.

    With `checkpoint_dir`, retraining writes a checkpoint there after every INQ step; `resume` continues from
    the one it holds (same model, data and options, else ConfigError) and gives the same result byte for byte.
    `evaluate_steps` scores the model after every INQ step on (a sample of) the data: StepReport.accuracy.
    `dataset` is any DataSource (data.open_data makes one): retraining and the checks read it batch by batch.
    """
    if resume and checkpoint_dir is None:
        raise ConfigError("resume needs the checkpoint folder to resume from")
    if any(n.domain == DOMAIN for n in model.graph.node):
        raise ModelError("the model is already quantized (it has com.inq nodes); start from the float model")
    # Folded before the levels are computed: the deployed weights carry the BN scale. Retraining then trains
    # the folded net, whose quantized weights are exactly the deployed ones.
    normalized_model = normalize(model)
    normalization_notes = normalized_model.notes
    # The normalized model is this call's own copy: folded in place, not copied again.
    normalized, batchnorm = fold_batchnorm(normalized_model.model, in_place=True)
    del normalized_model
    layers, skipped = match_layers(normalized, config.exclude)
    if not layers:
        reasons = summarize_reasons(group_reasons(skipped)) or "the model has no Conv, Gemm or MatMul node"
        raise ModelError(f"nothing to quantize: {reasons}")
    initializers = {t.name: t for t in normalized.graph.initializer}
    originals = {layer.weight: numpy_helper.to_array(initializers[layer.weight]) for layer in layers}
    for layer in layers:
        if not np.all(np.isfinite(originals[layer.weight])):
            raise ModelError(f"the weight of node {layer.node} ({layer.weight}) contains NaN or Inf")
    notes: list[str] = []
    weight_bits = _weight_bits(layers, skipped, config, normalized, notes)
    axes = _channel_axes(layers)
    levels = {name: layer_levels(w, weight_bits[name],
                                 axes.get(name) if uses_channel_ranges(config.granularity, weight_bits[name]) else None,
                                 mse=config.range_rule == "mse")
              for name, w in originals.items()}

    steps: list[StepReport] = []
    recipe = None
    if dataset is not None:
        dataset = check_source(dataset, normalized)
    if dataset is None or not config.retrains:
        why = ("no training data was given" if dataset is None else
               "retraining is off" if not config.retrain else
               "epochs is 0" if config.training.epochs == 0 else "the schedule quantizes everything at once")
        if resume:
            raise ConfigError(f"--resume continues a retraining, but this run does not retrain: {why}")
        notes.append(f"one-shot quantization without retraining: {why}")
        # Each float weight is dropped once its quantized copy exists (at most one layer held twice).
        values = {name: quantize(originals.pop(name), levels[name]) for name in list(originals)}
        mode = "one-shot"
    else:
        originals.clear()  # retraining reads the weights from the model
        values, steps, mode, recipe, resumed = _retrain(normalized, layers, levels, dataset, config, progress,
                                                        checkpoint_dir, resume, evaluate_steps)
        notes.extend([resumed] if resumed else [])
        notes.extend(_rate_notes(steps))

    float_model = with_initializers(normalized, values, consume=True)
    meta = {"inq.bits": str(config.bits), "inq.mode": mode, "inq.version": __version__,
            "inq.portions": ",".join(f"{p:g}" for p in config.schedule) if mode != "one-shot" else "1",
            "inq.strategy": config.training.strategy, "inq.granularity": _granularity_used(levels),
            "inq.range_rule": config.range_rule}
    mixed = layer_bits_metadata(layers, levels, config.bits)
    if mixed:
        meta["inq.layer_bits"] = mixed
    meta.update(metadata or {})
    rewritten = rewrite_model(float_model, layers, levels, meta)
    result = QuantizeResult(rewritten, float_model, layers, skipped, levels, mode, dataset, steps, notes,
                            batchnorm=batchnorm, normalization=normalization_notes, recipe=recipe,
                            source_model=normalized)
    if config.activations != "float":
        result.float_mode_model = rewritten
        result.model, result.activation_mode = set_activations(
            rewritten, config.activations, _input_batches(dataset) if dataset is not None else None)
    return result


def _input_batches(data: DataSource):
    """The data's inputs in order, a batch at a time (for calibration)."""
    return (batch.inputs for batch in data.batches(INFERENCE_BATCH))


def _probe_inputs(model: onnx.ModelProto, batch: int = 4, seed: int = 0) -> dict[str, np.ndarray] | None:
    """Random inputs when every input is float with fixed dims, rank 1 or more (a symbolic axis 0 becomes `batch`);
    else None."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in model_inputs(model):
        dims = list(spec.shape)
        if not dims:  # a scalar input has no batch axis to run in batches
            return None
        if not (isinstance(dims[0], int) and dims[0] > 0):
            dims[0] = batch
        if not all(isinstance(d, int) and d > 0 for d in dims) or not np.issubdtype(spec.dtype, np.floating):
            return None
        inputs[spec.name] = rng.standard_normal(dims).astype(spec.dtype)
    return inputs


def check_rewrite(result: QuantizeResult, dataset: DataSource | None = None, samples: int = 64
                  ) -> list[OutputComparison]:
    """Run the rewritten model and the float model with the same weights; they must agree to float rounding.

    Raises ValidationError naming the output that drifts; warns (and returns []) when no inputs can be made.
    """
    if dataset is not None:
        inputs = dataset.head(samples).inputs
    else:
        inputs = _probe_inputs(result.float_model)
        if inputs is None:
            warnings.warn("the rewrite was not checked: random inputs need float inputs with fixed shapes "
                          "(but for the batch); give --data to check it")
            return []
    expected = run_batched(make_session(result.float_model), inputs)
    actual = run_batched(make_session(result.checked_model), inputs)
    comparisons = []
    for output, ref, got in zip(result.checked_model.graph.output, expected, actual):
        comparison = compare_outputs(output.name, ref, got)
        limit = REWRITE_RTOL * max(float(np.max(np.abs(ref), initial=0.0)), 1e-6)
        if not comparison.max_abs_diff <= limit:
            raise ValidationError(f"the rewritten model's output {output.name} differs from the float model with "
                                  f"the same weights by {comparison.max_abs_diff:.3g} (limit {limit:.3g})")
        comparisons.append(comparison)
    return comparisons
