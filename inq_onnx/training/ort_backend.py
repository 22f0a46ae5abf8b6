"""`GradientBackend` on onnxruntime-training's on-device API: ORT computes loss and gradients, numpy does the rest.

The backend builds training artifacts (training graph + checkpoint, no optimizer graph) for a prepared copy of
the model, then per batch runs one train step with the gradient buffers reset and reads the gradients of the
trainable parameters from the checkpoint state. The retraining loop updates the parameters in numpy and writes
them back with `set_parameters`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import sys
import tempfile
import warnings
import weakref
from typing import Literal, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inq_onnx.errors import ConfigError, DataError, ModelError
from inq_onnx.training._ort_import import MAX_IR_VERSION, load_ort_training
from inq_onnx.training.graph_prep import (consumed_names, graph_input_names, keep_outputs, prepare_forward_model,
                                          strip_trailing_softmax, value_shapes)

__all__ = ["OrtGradientBackend", "LossName"]


LossName = Literal["cross_entropy", "distillation"]
_LOSSES = ("cross_entropy", "distillation")
_NO_GRADIENT = re.compile(r"gradient builder has not been registered: (\S+) for node (\S*)")
# A gradient op without a CPU kernel (ResizeGrad, ConvTransposeGrad): "... for ResizeGrad(1) node with name 't_Grad/..."
_NO_CPU_GRADIENT = re.compile(r"Could not find an implementation for (\w+)Grad\(\d+\) node with name '(.*?)_Grad/")
_NO_PARAMETER_GRADIENT = re.compile(r"failed to find NodeArg by name: (\S+)_grad\b")
# Severity of ORT's log while building the gradient graph (3 = errors only; it logs every transformer at INFO).
_BUILD_LOG_SEVERITY = 3


class OrtGradientBackend:
    """Loss and gradients of a model's trainable float initializers, computed by onnxruntime-training.

    Args:
        model: the model to retrain; never modified (the backend trains a prepared copy).
        trainable: names of float32 initializers to train. Every other initializer stays a constant of the
            training graph (not in the checkpoint, no gradient computed).
        loss: "cross_entropy": SoftmaxCrossEntropyLoss (mean over the batch) on the first output, which must be
            2-D (batch, classes) logits; a trailing Softmax/LogSoftmax producing it is stripped first, and the
            targets are int64 class indices. "distillation": for every float output, the mean squared error
            against the teacher's output (mean over all its elements), summed over the outputs.
        input_shapes: per-sample shape of every model input as in the data (batch dim excluded). These become
            the training graph's fixed dims; the batch dim stays symbolic, so batches may differ in size.
        workdir: parent directory of the artifact directory the backend creates (system temp dir by default);
            the artifact directory is removed by `close()` (or leaving the `with` block).
    """

    def __init__(self, model: onnx.ModelProto, trainable: Sequence[str], loss: LossName,
                 input_shapes: Mapping[str, Sequence[int]], workdir: str | os.PathLike | None = None) -> None:
        if loss not in _LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(_LOSSES)}, got {loss!r}")
        self._ort = load_ort_training()
        self.loss = loss
        self.parameter_names = list(dict.fromkeys(trainable))
        self._original = copy.deepcopy(model)
        self._check_trainable(self._original)
        self.frozen_params = [init.name for init in model.graph.initializer
                              if init.name not in self.parameter_names
                              and init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                                     onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)]

        self._forward = prepare_forward_model(model, input_shapes)
        self.input_names = graph_input_names(self._forward)
        if not self.input_names:
            raise ModelError("the model has no inputs to feed the data to")
        self._input_dtypes = {inp.name: helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
                              for inp in self._forward.graph.input}
        self._sample_shapes = {name: tuple(int(d) for d in input_shapes[name]) for name in self.input_names}
        self.output_names = [out.name for out in self._forward.graph.output]
        self.stripped_op: str | None = None
        train_model = self._training_copy()
        # Parameters nothing on the way to the loss reads (e.g. a head whose output the loss ignores) have a zero
        # gradient; ORT refuses to differentiate them, so they are kept here in numpy.
        used = consumed_names(train_model)
        initializers = {init.name: init for init in self._original.graph.initializer}
        self._detached = {name: numpy_helper.to_array(initializers[name]).astype(np.float32)
                          for name in self.parameter_names if name not in used}
        if len(self._detached) == len(self.parameter_names):
            raise ModelError(f"none of the trainable parameters affects the loss (computed from outputs "
                             f"{self.loss_outputs})")
        if self._detached:
            warnings.warn(f"parameters {sorted(self._detached)} do not affect the loss; they are not retrained")

        self._dir = tempfile.mkdtemp(prefix="inq-onnx-train-", dir=os.fspath(workdir) if workdir else None)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        try:
            self._build(train_model)
        except BaseException:
            self._cleanup()
            raise
        self._predict_session = None

    # -- construction ---------------------------------------------------------------------------------------

    def _check_trainable(self, model: onnx.ModelProto) -> None:
        if not self.parameter_names:
            raise ConfigError("trainable: name at least one float initializer to train")
        initializers = {init.name: init for init in model.graph.initializer}
        missing = [name for name in self.parameter_names if name not in initializers]
        if missing:
            raise ModelError(f"trainable parameters not found among the model's initializers: {missing}")
        not_float = [f"{name} ({onnx.TensorProto.DataType.Name(initializers[name].data_type)})"
                     for name in self.parameter_names if initializers[name].data_type != onnx.TensorProto.FLOAT]
        if not_float:
            raise ModelError(f"only float32 initializers can be trained, not {', '.join(not_float)}")

    def _training_copy(self) -> onnx.ModelProto:
        """The forward model reduced to what the loss reads: logits (cross-entropy) or the float outputs."""
        shapes = value_shapes(self._forward)
        if self.loss == "cross_entropy":
            model, self.stripped_op = strip_trailing_softmax(self._forward)
            logits = model.graph.output[0]
            if logits.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                raise ModelError(f"cross-entropy needs float32 logits, but output {logits.name!r} is "
                                 f"{onnx.TensorProto.DataType.Name(logits.type.tensor_type.elem_type)}")
            rank = len(value_shapes(model).get(logits.name, []))
            if rank != 2:
                raise ModelError(f"cross-entropy needs 2-D (batch, classes) logits as the first output, but "
                                 f"{logits.name!r} has rank {rank} (shape {shapes.get(self.output_names[0])})")
            self.num_classes = value_shapes(model)[logits.name][1]
            self.loss_outputs = [logits.name]
            self._target_shapes = {}
            return keep_outputs(model, self.loss_outputs)
        self.loss_outputs = [out.name for out in self._forward.graph.output
                             if out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
        if not self.loss_outputs:
            raise ModelError("distillation needs at least one float32 model output")
        self._target_shapes = {name: shapes.get(name) for name in self.loss_outputs}
        return keep_outputs(self._forward, self.loss_outputs)

    def _build(self, train_model: onnx.ModelProto) -> None:
        ort, artifacts = self._ort.ort, self._ort.artifacts
        taken = {inp.name for inp in train_model.graph.input} | {v.name for v in train_model.graph.value_info}
        taken |= {name for node in train_model.graph.node for name in node.output}
        if self.loss == "cross_entropy":
            self._target_names = [_fresh("labels", taken)]
            loss_block = _cross_entropy_block(self._ort.onnxblock, self._target_names[0])
        else:
            self._target_names = [_fresh(f"{name}.target", taken) for name in self.loss_outputs]
            loss_block = _distillation_block(self._ort.onnxblock, self._target_names)

        requires_grad = [name for name in self.parameter_names if name not in self._detached]
        try:
            with _quiet_graph_builder():
                artifacts.generate_artifacts(train_model, requires_grad=requires_grad, loss=loss_block,
                                             artifact_directory=self._dir)
            for name in ("training_model.onnx", "eval_model.onnx"):
                _cap_ir_version(os.path.join(self._dir, name))
            self._state = self._ort.api.CheckpointState.load_checkpoint(os.path.join(self._dir, "checkpoint"))
            self._module = self._ort.api.Module(os.path.join(self._dir, "training_model.onnx"), self._state)
        except (RuntimeError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise _rephrase(exc, ort.__version__, train_model, requires_grad) from exc
        self._module.train()
        self._feed_order = list(self._module.input_names())
        expected = set(self.input_names) | set(self._target_names)
        if set(self._feed_order) != expected:
            raise ModelError(f"unexpected training graph inputs {self._feed_order} (expected {sorted(expected)})")
        self._params = {name: self._state.parameters[name] for name in requires_grad}

    # -- GradientBackend --------------------------------------------------------------------------------------

    def get_parameters(self) -> dict[str, np.ndarray]:
        """Current values of the trainable parameters (copies)."""
        return {name: self._value(name).copy() for name in self.parameter_names}

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite trainable parameters (any subset)."""
        for name, value in values.items():
            if name not in self._params and name not in self._detached:
                raise KeyError(f"{name!r} is not a trainable parameter of this backend")
            current = self._value(name)
            if np.shape(value) != current.shape:
                raise ValueError(f"parameter {name!r} has shape {current.shape}, got {np.shape(value)}")
            if name in self._detached:
                self._detached[name] = np.array(value, dtype=np.float32)
            else:
                # np.require keeps 0-d values 0-d (ascontiguousarray would make them 1-d: a scalar Gemm C).
                self._params[name].data = np.require(value, dtype=np.float32, requirements="C")

    def loss_and_gradients(self, inputs: Mapping[str, np.ndarray], target: np.ndarray | Sequence[np.ndarray]
                           ) -> tuple[float, dict[str, np.ndarray]]:
        """Forward and backward pass for one batch: the mean loss and the gradient of every trainable parameter."""
        feeds = self._input_feeds(inputs)
        batch = next(iter(feeds.values())).shape[0]
        feeds.update(self._target_feeds(target, batch))
        self._module.train()
        self._module.lazy_reset_grad()
        loss = self._module(*[feeds[name] for name in self._feed_order])
        # .grad is a view of ORT's accumulation buffer, overwritten by the next step: copy it.
        grads = {name: param.grad.copy() for name, param in self._params.items()}
        grads.update((name, np.zeros_like(value)) for name, value in self._detached.items())
        return float(loss), grads

    # -- inference and export ---------------------------------------------------------------------------------

    def predict(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """All outputs of the model (as the original, Softmax included) with the current parameter values."""
        if self._predict_session is None:
            self._predict_session = self._make_predict_session()
        feeds = self._input_feeds(inputs)
        feeds.update((name, self._value(name)) for name in self.parameter_names)
        return self._predict_session.run(self.output_names, feeds)

    def export_parameters_to(self, model: onnx.ModelProto | None = None) -> onnx.ModelProto:
        """A copy of `model` (default: the model given at construction, not the training copy) holding the
        current values of the trainable parameters."""
        exported = copy.deepcopy(self._original if model is None else model)
        initializers = {init.name: init for init in exported.graph.initializer}
        missing = [name for name in self.parameter_names if name not in initializers]
        if missing:
            raise ModelError(f"the model to export to has no initializers {missing}")
        for name in self.parameter_names:
            initializers[name].CopyFrom(numpy_helper.from_array(self._value(name), name))
        return exported

    def close(self) -> None:
        """Release the ORT session and delete the artifacts."""
        self._predict_session = None
        self.__dict__.pop("_module", None)
        self.__dict__.pop("_params", None)
        self.__dict__.pop("_state", None)
        self._cleanup()

    def __enter__(self) -> OrtGradientBackend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- helpers ----------------------------------------------------------------------------------------------

    def _value(self, name: str) -> np.ndarray:
        """The parameter's current value; for ORT-held ones a view of ORT's buffer, not to be kept or modified."""
        detached = self._detached.get(name)
        return self._params[name].data if detached is None else detached

    def _input_feeds(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise DataError(f"missing model inputs {missing}")
        feeds, batch = {}, None
        for name in self.input_names:
            array = np.ascontiguousarray(inputs[name], dtype=self._input_dtypes[name])
            if array.shape[1:] != self._sample_shapes[name]:
                raise DataError(f"input {name!r}: samples of shape {array.shape[1:]}, the backend was built for "
                                f"{self._sample_shapes[name]}")
            if batch is not None and array.shape[0] != batch:
                raise DataError(f"input {name!r} has {array.shape[0]} samples, other inputs {batch}")
            batch = array.shape[0]
            feeds[name] = array
        return feeds

    def _target_feeds(self, target: np.ndarray | Sequence[np.ndarray], batch: int) -> dict[str, np.ndarray]:
        if self.loss == "cross_entropy":
            labels = np.asarray(target)
            if labels.shape != (batch,) or not np.issubdtype(labels.dtype, np.integer):
                raise DataError(f"cross-entropy targets must be {batch} integer labels, got {labels.dtype} "
                                f"array of shape {labels.shape}")
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(f"labels must be in [0, {self.num_classes}), got [{labels.min()}, {labels.max()}]")
            return {self._target_names[0]: np.ascontiguousarray(labels, dtype=np.int64)}
        targets = [target] if isinstance(target, np.ndarray) else list(target)
        if len(targets) == len(self.output_names) and len(targets) != len(self.loss_outputs):
            targets = [t for t, name in zip(targets, self.output_names) if name in self.loss_outputs]
        if len(targets) != len(self.loss_outputs):
            raise DataError(f"distillation needs one teacher output per float model output "
                            f"({len(self.loss_outputs)}: {self.loss_outputs}), got {len(targets)}")
        feeds = {}
        for name, target_name, value in zip(self.loss_outputs, self._target_names, targets):
            array = np.ascontiguousarray(value, dtype=np.float32)
            expected = self._target_shapes[name]
            if array.shape[:1] != (batch,) or (expected is not None and (
                    len(array.shape) != len(expected)
                    or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(expected[1:], array.shape[1:])))):
                raise DataError(f"teacher output for {name!r} has shape {array.shape}, expected {batch} samples "
                                f"of shape {tuple(expected[1:]) if expected else '?'}")
            feeds[target_name] = array
        return feeds

    def _make_predict_session(self):
        """A session on the forward model whose trainable initializers are inputs, fed on every run."""
        model = copy.deepcopy(self._forward)
        trainable = set(self.parameter_names)
        kept = [init for init in model.graph.initializer if init.name not in trainable]
        for init in model.graph.initializer:
            if init.name in trainable:
                model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        return self._ort.ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _cap_ir_version(path: str) -> None:
    """generate_artifacts may stamp the installed onnx's IR version; ORT 1.19 loads at most IR 10."""
    model = onnx.load(path)
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, path)


@contextlib.contextmanager
def _quiet_graph_builder():
    """generate_artifacts optimizes the graph with a default SessionOptions, which logs at INFO level to stderr
    and cannot be passed in: hand it options with a quieter log while it runs."""
    graph_utils = sys.modules["onnxruntime.training.onnxblock._training_graph_utils"]
    session_options = graph_utils.SessionOptions

    def quiet_options():
        options = session_options()
        options.log_severity_level = _BUILD_LOG_SEVERITY
        return options

    graph_utils.SessionOptions = quiet_options
    try:
        yield
    finally:
        graph_utils.SessionOptions = session_options


def _layers_before(model: onnx.ModelProto, node_name: str, parameters: Sequence[str]) -> list[str]:
    """The nodes reading one of `parameters` that node `node_name` depends on, in graph order."""
    producers = {out: node for node in model.graph.node for out in node.output}
    start = next((node for node in model.graph.node if node.name == node_name), None)
    seen, stack = set(), [start] if start is not None else []
    while stack:
        node = stack.pop()
        for name in node.input:
            producer = producers.get(name)
            if producer is not None and id(producer) not in seen:
                seen.add(id(producer))
                stack.append(producer)
    wanted = set(parameters)
    return [n.name for n in model.graph.node if id(n) in seen and wanted.intersection(n.input)]


def _rephrase(exc: Exception, version: str, model: onnx.ModelProto, parameters: Sequence[str]) -> ModelError:
    message = str(exc)
    match = _NO_GRADIENT.search(message) or _NO_CPU_GRADIENT.search(message)
    if match:
        op, node = match.groups()
        layers = _layers_before(model, node, parameters)
        named = ", ".join(layers[:4]) + (f" … ({len(layers) - 4} more)" if len(layers) > 4 else "")
        before = f" (it lies between the loss and {named})" if layers else ""
        return ModelError(f"onnxruntime-training {version} has no gradient for {op} (node {node!r}){before}, so "
                          f"retraining cannot pass it: quantize with --no-retrain, or --exclude the layers before it")
    match = _NO_PARAMETER_GRADIENT.search(message)
    if match:
        return ModelError(f"onnxruntime-training {version} computes no gradient for parameter {match.group(1)!r}: "
                          f"it only feeds inputs ORT does not differentiate (such as BatchNormalization's mean and "
                          f"variance); leave it out of the trainable parameters")
    last_line = message.strip().splitlines()[-1] if message.strip() else type(exc).__name__
    return ModelError(f"onnxruntime-training {version} cannot build the training graph: {last_line}")


def _cross_entropy_block(onnxblock, labels_name: str):
    class CrossEntropy(onnxblock.Block):
        """SoftmaxCrossEntropyLoss, mean reduction, on the logits vs int64 labels named `labels_name`."""

        def __init__(self) -> None:
            super().__init__()
            self._loss = onnxblock.loss.CrossEntropyLoss(reduction="mean")

        def build(self, logits_name: str) -> str:
            return self._loss(logits_name, labels_name)

    return CrossEntropy()


def _distillation_block(onnxblock, target_names: Sequence[str]):
    blocks = onnxblock.blocks

    class SummedMse(onnxblock.Block):
        """Sum over outputs of mean((output - target)^2); one target graph input per output."""

        def __init__(self) -> None:
            super().__init__()
            count = len(target_names)
            self._sub = [blocks.Sub() for _ in range(count)]
            self._square = [blocks.Mul() for _ in range(count)]
            self._mean = [blocks.ReduceMean(keepdims=False) for _ in range(count)]
            self._add = [blocks.Add() for _ in range(count - 1)]

        def build(self, *output_names: str) -> str:
            graph_outputs = {out.name: out for out in self.base.graph.output}
            terms = []
            for i, (output_name, target_name) in enumerate(zip(output_names, target_names)):
                target_input = copy.deepcopy(graph_outputs[output_name])
                target_input.name = target_name
                self.base.graph.input.append(target_input)
                diff = self._sub[i](output_name, target_name)
                terms.append(self._mean[i](self._square[i](diff, diff)))
            total = terms[0]
            for add, term in zip(self._add, terms[1:]):
                total = add(total, term)
            return total

    return SummedMse()
