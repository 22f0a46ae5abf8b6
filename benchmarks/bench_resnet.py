"""A larger benchmark: a small ResNet on rendered 32x32 shapes, FP32 vs one-shot vs INQ vs onnxruntime int8.

Data: ten classes of shapes (disk, ring, square, square outline, triangle, plus, X, diamond, diamond outline,
two bars) rendered here with numpy at 32x32, each with a random centre, size, stroke, rotation (±15 degrees),
background and contrast, plus pixel noise; a training set and a held-out test set from different seeds.
Network (built here from a seed, no BatchNorm): Conv 3x3/2 1->16, then three residual stages of one basic block
each (two Conv 3x3 + identity, or a 1x1/2 projection when the shape changes) at 16, 32 and 64 channels,
GlobalAveragePool, Gemm to 10 logits: 9 Conv + 1 Gemm, 77k weights, about 3 M multiply-adds per image.
It is trained in FP32 with onnxruntime-training (AdamW), then quantized at each --bits:

- one-shot: `quantize_model` without retraining;
- INQ: `quantize_model` on the training set with its labels and the library's default recipe (--epochs and
  --lr override it; the table header says what ran), with float activations and, converted without
  retraining, with uint8 activations (integer mode, calibrated on the images onnxruntime's int8 model saw);
- onnxruntime int8: `quantize_static` (QDQ, per-channel s8 weights, u8 activations) calibrated on 256 training
  images.

Accuracy is on the held-out test set; size is the serialized model; latency is the median of interleaved runs
(each round runs every model once in a rotating order, idle threads not spinning) at batch 1 and --batch, one
thread, in this process. Needs onnxruntime-training (.venv-train), whose onnxruntime has the quantization tool.

    python benchmarks/bench_resnet.py                         # bits 5 4 3 2
    python benchmarks/bench_resnet.py --bits 4 --epochs 1     # quicker
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import inq_onnx
from inq_onnx.data import Dataset
from inq_onnx.demo import train_float
from inq_onnx.integer_mode import set_activations
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.quantizer import RANGE_RULES
from inq_onnx.retrain import RetrainConfig
from inq_onnx.runtime import get_library_path, run_batched
from inq_onnx.schemas import DOMAIN
from inq_onnx.validate import accuracy

sys.path.insert(0, str(Path(__file__).parent))
from bench_speed import cpu_name, interleaved_medians, session_options  # noqa: E402

INPUT, OUTPUT, SIZE, CLASSES = "image", "logits", 32, 10
SHAPES = ("disk", "ring", "square", "square outline", "triangle", "plus", "X", "diamond", "diamond outline",
          "two bars")


# ---------------------------------------------------------------------------------------------- data

def _distance(shape: int, x: np.ndarray, y: np.ndarray, size: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of every pixel to the shape, in the shape's own rotated frame."""
    if shape == 0:
        return np.hypot(x, y) - size
    if shape == 1:
        return np.abs(np.hypot(x, y) - size) - stroke
    if shape == 2:
        return np.maximum(np.abs(x), np.abs(y)) - size
    if shape == 3:
        return np.abs(np.maximum(np.abs(x), np.abs(y)) - size) - stroke
    if shape == 4:  # equilateral, point up: three half-planes
        edges = [y - size / 2, -0.866 * x - 0.5 * y - size / 2, 0.866 * x - 0.5 * y - size / 2]
        return np.maximum.reduce(edges)
    if shape in (5, 6):
        if shape == 6:
            x, y = (x - y) * 0.7071, (x + y) * 0.7071
        bar = lambda a, b: np.maximum(np.abs(a) - stroke, np.abs(b) - size)  # noqa: E731
        return np.minimum(bar(x, y), bar(y, x))
    if shape == 7:
        return (np.abs(x) + np.abs(y)) * 0.7071 - size * 0.85
    if shape == 8:
        return np.abs((np.abs(x) + np.abs(y)) * 0.7071 - size * 0.85) - stroke
    bars = np.minimum(np.abs(y - size / 2), np.abs(y + size / 2)) - stroke  # shape 9: "="
    return np.maximum(bars, np.abs(x) - size)


def render_shapes(count: int, seed: int) -> Dataset:
    """`count` images (N, 1, 32, 32) in about [0, 1] with int64 labels, classes balanced and shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % CLASSES).astype(np.int64)
    grid = np.arange(SIZE, dtype=np.float32) + 0.5
    images = np.empty((count, 1, SIZE, SIZE), np.float32)
    for i, shape in enumerate(labels):
        size = rng.uniform(6.0, 12.0)
        stroke = rng.uniform(1.0, 2.2)
        cx, cy = rng.uniform(size + 2, SIZE - size - 2, 2)
        angle = np.deg2rad(rng.uniform(-15, 15))
        dx, dy = grid[None, :] - cx, grid[:, None] - cy
        x = np.cos(angle) * dx + np.sin(angle) * dy
        y = -np.sin(angle) * dx + np.cos(angle) * dy
        ink = np.clip(0.5 - _distance(int(shape), x, y, np.float32(size), np.float32(stroke)), 0.0, 1.0)
        background, contrast = rng.uniform(0.0, 0.3), rng.uniform(0.5, 1.0)
        images[i, 0] = background + contrast * ink + rng.normal(0.0, 0.15, (SIZE, SIZE))
    return Dataset({INPUT: images}, labels)


# ---------------------------------------------------------------------------------------------- model

class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.init: dict[str, np.ndarray] = {}

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
             gain: float = 1.0) -> str:
        fan_in = cin * k * k
        self.init[f"{name}.weight"] = (self.rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2 / fan_in)
                                       ).astype(np.float32)
        self.init[f"{name}.bias"] = np.zeros(cout, np.float32)
        self.nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
                                           kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return name
        self.nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    def block(self, x: str, name: str, cin: int, cout: int, stride: int) -> str:
        """A basic residual block; the second conv starts small so that the block starts near the identity."""
        y = self.conv(x, f"{name}.conv1", cin, cout, 3, stride)
        y = self.conv(y, f"{name}.conv2", cout, cout, 3, relu=False, gain=0.3)
        shortcut = x if stride == 1 and cin == cout else self.conv(x, f"{name}.down", cin, cout, 1, stride,
                                                                   relu=False)
        self.nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.add"], name=f"{name}.add"))
        self.nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"], name=f"{name}.relu"))
        return f"{name}.out"


def build_resnet(seed: int = 0) -> onnx.ModelProto:
    net = _Builder(seed)
    x = net.conv(INPUT, "stem", 1, 16, 3, stride=2)
    cin = 16
    for stage, cout in enumerate((16, 32, 64), start=1):
        x = net.block(x, f"stage{stage}", cin, cout, 1 if stage == 1 else 2)
        cin = cout
    net.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
                  helper.make_node("Flatten", ["gap"], ["features"], name="flatten")]
    net.init["fc.weight"] = (net.rng.standard_normal((CLASSES, cin)) * np.sqrt(1 / cin)).astype(np.float32)
    net.init["fc.bias"] = np.zeros(CLASSES, np.float32)
    net.nodes.append(helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], [OUTPUT], name="fc", transB=1))
    graph = helper.make_graph(net.nodes, "shapes_resnet",
                              [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, SIZE, SIZE])],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", CLASSES])],
                              [numpy_helper.from_array(v, k) for k, v in net.init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------------------------- variants

def ort_int8(model: onnx.ModelProto, calibration: np.ndarray, workdir: Path) -> onnx.ModelProto:
    """onnxruntime's static int8 quantization: QDQ, per-channel s8 weights, u8 activations."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{INPUT: calibration[i:i + 32]} for i in range(0, len(calibration), 32)])

        def get_next(self):
            return next(self.items, None)

    source, target = workdir / "fp32.onnx", workdir / "int8.onnx"
    onnx.save(model, source)
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model first
    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx.load(str(target))


def session(model: onnx.ModelProto, threads: int):
    options = session_options(threads)
    if any(n.domain == DOMAIN for n in model.graph.node):
        options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_accuracy(model: onnx.ModelProto, test: Dataset) -> float:
    return accuracy(run_batched(session(model, 2), test.inputs)[0], test.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[5, 4, 3, 2])
    parser.add_argument("--train", type=int, default=4000, help="training images")
    parser.add_argument("--test", type=int, default=2000, help="held-out test images")
    parser.add_argument("--fp32-epochs", type=int, default=12)
    parser.add_argument("--epochs", type=int, help="INQ epochs per step [default: the library's]")
    parser.add_argument("--lr", type=float, help="INQ learning rate [default: the library's]")
    parser.add_argument("--batch", type=int, default=32, help="the second latency batch (the first is 1)")
    parser.add_argument("--rounds", type=int, default=200, help="latency rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--range-rule", choices=RANGE_RULES, default=QuantizeConfig.range_rule,
                        help="where each exponent range sits (quantize --range-rule)")
    args = parser.parse_args()

    clock = time.perf_counter()
    train_set, test = render_shapes(args.train, args.seed), render_shapes(args.test, args.seed + 1000)
    fp32 = train_float(build_resnet(args.seed), train_set, epochs=args.fp32_epochs, seed=args.seed)
    fp32_seconds = time.perf_counter() - clock
    training = RetrainConfig(seed=args.seed, **{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr))
                                                 if v is not None})

    variants: dict[str, tuple[onnx.ModelProto, str]] = {"FP32": (fp32, f"{fp32_seconds:.0f} s training")}
    with tempfile.TemporaryDirectory() as tmp:
        variants["onnxruntime int8 (QDQ)"] = (ort_int8(fp32, train_set.inputs[INPUT][:256], Path(tmp)), "")
    for bits in args.bits:
        config = QuantizeConfig(bits=bits, retrain=False, range_rule=args.range_rule)
        variants[f"one-shot {bits}-bit"] = (quantize_model(fp32, config).model, "")
        clock = time.perf_counter()
        result = quantize_model(fp32, dataclasses.replace(config, retrain=True, training=training), train_set)
        seconds = time.perf_counter() - clock
        steps = sum(len(s.epoch_losses) for s in result.steps)
        chosen = result.recipe.training(training) if result.recipe is not None else training
        variants[f"INQ {bits}-bit"] = (result.model, f"{seconds:.0f} s retraining, {steps} epochs, lr {chosen.lr:.2g}"
                                                     f", {result.recipe.loss if result.recipe else 'labels'}")
        # The same weights with uint8 activations (integer mode), calibrated on the images int8 PTQ saw.
        integer, _ = set_activations(result.model, "int8", {INPUT: train_set.inputs[INPUT][:256]})
        variants[f"INQ {bits}-bit, int8 activations"] = (integer, "")
        print(f"# INQ {bits}-bit done in {seconds:.0f} s", file=sys.stderr, flush=True)

    accuracies = {name: test_accuracy(model, test) for name, (model, _) in variants.items()}
    latency = {}
    for batch in (1, args.batch):
        feed = {INPUT: test.inputs[INPUT][:batch]}
        runs = {name: (lambda s=session(model, 1): s.run(None, feed)) for name, (model, _) in variants.items()}
        latency[batch] = interleaved_medians(runs, args.rounds, warmup=10)

    command = "python benchmarks/bench_resnet.py " + " ".join(sys.argv[1:])
    print(f"# Small ResNet on rendered shapes, {datetime.date.today()}: {command.strip()}")
    print(f"# {cpu_name()}; onnxruntime {ort.__version__}, inq-onnx {inq_onnx.__version__}; latency: one thread, "
          f"median of {args.rounds} interleaved rounds")
    inq = (f"{training.epochs if training.epochs is not None else 'recipe-chosen'} epoch(s) per step, "
           f"{training.optimizer} lr {training.lr if training.lr is not None else 'from the recipe'}")
    print(f"# {args.train} training / {args.test} test images; FP32: {args.fp32_epochs} epochs AdamW; INQ: {inq}")
    print()
    base = variants["FP32"][0].ByteSize()
    print(f"| model | test accuracy | size (bytes) | smaller | latency b1 (ms) | latency b{args.batch} (ms) | note |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, (model, note) in variants.items():
        size = model.ByteSize()
        print(f"| {name} | {100 * accuracies[name]:.2f}% | {size:,} | {base / size:.1f}x | {latency[1][name]:.3f} | "
              f"{latency[args.batch][name]:.3f} | {note} |")


if __name__ == "__main__":
    main()
