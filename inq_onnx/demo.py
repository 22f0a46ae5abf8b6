"""The embedded demo: a small CNN trained on scikit-learn's digits, then INQ-quantized and compared."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .data import Dataset
from .errors import InqError, RuntimeUnavailableError
from .model_io import atomic_write, save_model
from .retrain import ProgressCallback
from .runtime import make_session, run_batched
from .training.optim import make_optimizer
from .validate import accuracy

__all__ = ["digits_datasets", "build_digits_cnn", "train_float", "save_dataset", "compare_latency", "DemoFiles",
           "prepare_demo", "quantize_demo", "DemoReport"]

INPUT, OUTPUT = "image", "logits"


def digits_datasets(seed: int = 0, validation_fraction: float = 0.25) -> tuple[Dataset, Dataset]:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package) as (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise RuntimeUnavailableError("the demo needs scikit-learn: pip install 'inq-onnx[train]'") from None
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(len(labels) * (1 - validation_fraction))
    train, val = order[:cut], order[cut:]
    return Dataset({INPUT: images[train]}, labels[train]), Dataset({INPUT: images[val]}, labels[val])


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def build_digits_cnn(seed: int = 0, width: int = 16) -> onnx.ModelProto:
    """Conv-ReLU-Conv-ReLU-MaxPool-Gemm-ReLU-Gemm on (N, 1, 8, 8): 10 logits. Randomly initialised."""
    rng = np.random.default_rng(seed)
    c1, c2, hidden = width, 2 * width, 64
    weights = {
        "conv1.weight": _he(rng, (c1, 1, 3, 3), 9), "conv1.bias": np.zeros(c1, np.float32),
        "conv2.weight": _he(rng, (c2, c1, 3, 3), 9 * c1), "conv2.bias": np.zeros(c2, np.float32),
        "fc1.weight": _he(rng, (hidden, c2 * 16), c2 * 16), "fc1.bias": np.zeros(hidden, np.float32),
        "fc2.weight": _he(rng, (10, hidden), hidden), "fc2.bias": np.zeros(10, np.float32),
    }
    nodes = [
        helper.make_node("Conv", [INPUT, "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["g1"], name="fc1", transB=1),
        helper.make_node("Relu", ["g1"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "fc2.weight", "fc2.bias"], [OUTPUT], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    # IR 8 / opset 17: readable by every onnxruntime from 1.14 on, onnxruntime-training 1.19 included.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="inq-onnx demo")
    onnx.checker.check_model(model)
    return model


def train_float(model: onnx.ModelProto, dataset: Dataset, epochs: int = 15, lr: float = 3e-3,
                batch_size: int = 32, seed: int = 0, progress: ProgressCallback | None = None) -> onnx.ModelProto:
    """Plain FP32 training with onnxruntime-training (AdamW): the 'pre-trained' model INQ starts from."""
    from .layers import match_layers
    from .pipeline import trainable_parameters, with_initializers
    from .training.ort_backend import OrtGradientBackend

    rng = np.random.default_rng(seed)
    layers, _ = match_layers(model)
    with OrtGradientBackend(model, trainable_parameters(model, layers), "cross_entropy",
                            dataset.sample_shapes()) as backend:
        params = backend.get_parameters()
        optimizer = make_optimizer("adamw", lr, weight_decay=1e-4)
        count = len(dataset)
        total = epochs * -(-count // batch_size)
        done = 0
        for _ in range(epochs):
            order = rng.permutation(count)
            for start in range(0, count, batch_size):
                index = order[start:start + batch_size]
                loss, grads = backend.loss_and_gradients(dataset.batch(index), dataset.labels[index])
                optimizer.step(params, grads, {})
                backend.set_parameters(params)
                done += 1
                if progress is not None:
                    progress(0, 1, done, total, loss)
    return with_initializers(model, params)


def save_dataset(dataset: Dataset, path: Path) -> None:
    """The dataset as an .npz that `--data` reads, written atomically."""
    arrays = dict(dataset.inputs)
    if dataset.labels is not None:
        arrays["labels"] = dataset.labels
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def compare_latency(models: list[onnx.ModelProto | str], inputs: dict[str, np.ndarray], repeats: int = 50,
                    threads: int | None = None) -> list[float]:
    """Median seconds per run of each model, runs interleaved so that machine noise hits all alike."""
    sessions = [make_session(model, threads, spinning=False) for model in models]
    for session in sessions:
        for _ in range(5):
            session.run(None, inputs)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for session, series in zip(sessions, times):
            start = time.perf_counter()
            session.run(None, inputs)
            series.append(time.perf_counter() - start)
    return [float(np.median(series)) for series in times]


@dataclass
class DemoFiles:
    workdir: Path
    model: Path = field(init=False)
    train: Path = field(init=False)
    val: Path = field(init=False)
    quantized: Path = field(init=False)

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.model = self.workdir / "digits_cnn.onnx"
        self.train = self.workdir / "digits_train.npz"
        self.val = self.workdir / "digits_val.npz"
        self.quantized = self.workdir / "digits_cnn.inq.onnx"


def prepare_demo(files: DemoFiles, seed: int = 0, progress: ProgressCallback | None = None) -> float:
    """Train the FP32 CNN and write it with the train/val splits; returns its validation accuracy."""
    try:
        files.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InqError(f"cannot create the work folder {files.workdir}: {exc.strerror or exc}") from None
    train, val = digits_datasets(seed)
    model = train_float(build_digits_cnn(seed), train, seed=seed, progress=progress)
    save_model(model, files.model)
    save_dataset(train, files.train)
    save_dataset(val, files.val)
    return accuracy(run_batched(make_session(model), val.inputs)[0], val.labels)


@dataclass
class DemoReport:
    files: DemoFiles
    bits: int
    accuracy_float: float
    accuracy_quantized: float
    bytes_float: int
    bytes_quantized: int
    latency_float: float  # median seconds for one batch
    latency_quantized: float
    batch: int
    mode: str  # the loss retraining used: labels or distillation
    lr: float  # as the recipe chose them
    epochs: int


def demo_config(bits: int, seed: int = 0):
    """The demo runs with the defaults: inq_onnx.recipe chooses epochs, learning rate, decay and loss."""
    from .pipeline import QuantizeConfig
    from .retrain import RetrainConfig

    return QuantizeConfig(bits=bits, training=RetrainConfig(seed=seed))


def quantize_demo(files: DemoFiles, bits: int = 5, seed: int = 0, progress: ProgressCallback | None = None
                  ) -> DemoReport:
    """INQ-quantize the prepared model, validate it, and time both: what `demo` shows."""
    from .api import quantize, validate

    config = demo_config(bits, seed)
    summary = quantize(files.model, config, files.train, files.quantized, progress)
    report = validate(files.model, files.quantized, files.val)
    val = np.load(files.val)
    batch = {INPUT: val[INPUT][:256]}
    latency_float, latency_quantized = compare_latency([str(files.model), str(files.quantized)], batch)
    return DemoReport(files, bits, report.accuracy_original, report.accuracy_quantized,
                      files.model.stat().st_size, files.quantized.stat().st_size,
                      latency_float, latency_quantized, len(batch[INPUT]), summary.result.mode,
                      summary.result.recipe.lr, summary.result.recipe.epochs)
