"""Per-tensor against per-channel exponent ranges on a BatchNorm network: one-shot drift and retrained accuracy.

The network (built here from a seed) is (Conv-BatchNorm-Relu) x 4 on scikit-learn's 8x8 digits: 3x3 1->16,
3x3 16->32, MaxPool, depthwise 3x3 32, pointwise 1x1 32->32, then Flatten-Gemm to 10 logits. It is trained in
FP32 with onnxruntime-training (AdamW); the BN statistics are re-measured on the training set before every epoch
(the running statistics of BN training), scale and shift train with the weights. The quantize pipeline then
folds every BN into its Conv and INQ-quantizes at each --bits with --granularity tensor and channel:

- one shot: drift of the quantized model from the original on the validation split (what `validate` prints:
  max |diff| of the logits, SQNR, top-1 agreement) and its accuracy;
- retrained: accuracy after INQ on the labels (cross-entropy), SGD at --lr, 2 epochs per step (6 below
  4 bits). The demo's recipe (distillation at lr 1e-2 below 4 bits) kills this net's ReLUs at either
  granularity: its logits are an order of magnitude larger than the demo CNN's.

Needs onnxruntime-training (.venv-train). Prints a Markdown table.

    python benchmarks/bn_granularity.py                       # bits 3 4 5, seed 0
    python benchmarks/bn_granularity.py --bits 4 --no-retrain
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.batchnorm import fold_batchnorm
from inq_onnx.data import Dataset
from inq_onnx.demo import INPUT, OUTPUT, digits_datasets
from inq_onnx.layers import match_layers
from inq_onnx.pipeline import QuantizeConfig, quantize_model, trainable_parameters, with_initializers
from inq_onnx.retrain import RetrainConfig
from inq_onnx.runtime import make_session, run_batched
from inq_onnx.training.optim import make_optimizer
from inq_onnx.validate import accuracy, compare_models

# (name, input channels, output channels, kernel, group, MaxPool after)
BLOCKS = [("conv1", 1, 16, 3, 1, False), ("conv2", 16, 32, 3, 1, True), ("dw3", 32, 32, 3, 32, False),
          ("pw4", 32, 32, 1, 1, False)]


def build_bn_cnn(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, init, src, size = [], {}, INPUT, 8
    for name, cin, cout, k, group, pool in BLOCKS:
        fan_in = cin // group * k * k
        init[f"{name}.weight"] = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2 / fan_in)
                                  ).astype(np.float32)
        stats = {"scale": np.ones(cout), "bias": np.zeros(cout), "mean": np.zeros(cout), "var": np.ones(cout)}
        init.update({f"{name}.bn.{key}": v.astype(np.float32) for key, v in stats.items()})
        nodes += [helper.make_node("Conv", [src, f"{name}.weight"], [f"{name}.c"], name=name, group=group,
                                   pads=[k // 2] * 4),
                  helper.make_node("BatchNormalization", [f"{name}.c", *(f"{name}.bn.{key}" for key in stats)],
                                   [f"{name}.n"], name=f"{name}.bn"),
                  helper.make_node("Relu", [f"{name}.n"], [f"{name}.r"], name=f"{name}.relu")]
        src = f"{name}.r"
        if pool:
            nodes.append(helper.make_node("MaxPool", [src], [f"{name}.p"], name=f"{name}.pool", kernel_shape=[2, 2],
                                          strides=[2, 2]))
            src, size = f"{name}.p", size // 2
    features = BLOCKS[-1][2] * size * size
    init["fc.weight"] = (rng.standard_normal((10, features)) * np.sqrt(1 / features)).astype(np.float32)
    init["fc.bias"] = np.zeros(10, np.float32)
    nodes += [helper.make_node("Flatten", [src], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], [OUTPUT], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "digits_bn_cnn",
                              [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 10])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def measure_batch_norms(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Each BN's mean/var set to its input's statistics on `inputs`, one BN after the other."""
    for node in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
        (value,) = run_batched(make_session(probe), inputs)
        value = value.astype(np.float64)
        model = with_initializers(model, {node.input[3]: value.mean(axis=(0, 2, 3)),
                                          node.input[4]: value.var(axis=(0, 2, 3))})
    return model


def train(model: onnx.ModelProto, data: Dataset, epochs: int, seed: int, lr: float = 3e-3) -> onnx.ModelProto:
    from inq_onnx.training.ort_backend import OrtGradientBackend

    rng = np.random.default_rng(seed)
    layers, _ = match_layers(model)
    for _ in range(epochs):
        model = measure_batch_norms(model, data.inputs)
        with OrtGradientBackend(model, trainable_parameters(model, layers), "cross_entropy",
                                data.sample_shapes()) as backend:
            params = backend.get_parameters()
            optimizer = make_optimizer("adamw", lr, weight_decay=1e-4)
            order = rng.permutation(len(data))
            for start in range(0, len(data), 32):
                index = order[start:start + 32]
                _, grads = backend.loss_and_gradients(data.batch(index), data.labels[index])
                optimizer.step(params, grads, {})
                backend.set_parameters(params)
        model = with_initializers(model, params)
    return model


def channel_spread(model: onnx.ModelProto) -> dict[str, float]:
    """Per folded layer: largest over smallest per-channel max|W| (output channels)."""
    folded, _ = fold_batchnorm(model)
    layers, _ = match_layers(folded)
    weights = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    spread = {}
    for layer in layers:
        w = np.moveaxis(np.abs(weights[layer.weight]), layer.channel_axis, 0).reshape(layer.shape[
            layer.channel_axis], -1).max(axis=1)
        spread[layer.node] = float(w.max() / w.min())
    return spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15, help="FP32 training epochs")
    parser.add_argument("--lr", type=float, default=3e-3, help="INQ retraining rate")
    parser.add_argument("--no-retrain", action="store_true", help="one-shot figures only")
    args = parser.parse_args()

    train_set, val = digits_datasets(args.seed)
    start = time.perf_counter()
    model = train(build_bn_cnn(args.seed), train_set, args.epochs, args.seed)
    fp32 = accuracy(run_batched(make_session(model), val.inputs)[0], val.labels)
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    print(f"# BN CNN on digits, seed {args.seed}, {datetime.date.today()}, {cpu}, "
          f"onnxruntime {onnxruntime.__version__}; FP32 validation accuracy {100 * fp32:.1f}% ({time.perf_counter() - start:.0f} s training)")
    print("folded per-channel max|W| spread (max/min): " +
          ", ".join(f"{k} {v:.1f}x" for k, v in channel_spread(model).items()))
    print()
    print("| bits | ranges | one-shot max abs diff | one-shot SQNR dB | one-shot top-1 agree | one-shot acc | "
          "retrained acc |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for bits in args.bits:
        for granularity in ("tensor", "channel"):
            # The paper's ranges from each largest weight: the granularity alone changes between the rows.
            config = QuantizeConfig(bits=bits, retrain=False, granularity=granularity, range_rule="max")
            one_shot = quantize_model(model, config)
            report = compare_models(model, one_shot.model, val)
            (out,) = report.outputs
            retrained = "-"
            if not args.no_retrain:
                # Fixed settings (not the per-model recipe) keep the two granularities comparable.
                training = RetrainConfig(lr=args.lr, epochs=6 if bits < 4 else 2, decay="none", seed=args.seed)
                recipe = dataclasses.replace(config, retrain=True, training=training, loss="cross-entropy")
                result = quantize_model(model, recipe, train_set)
                acc = accuracy(run_batched(make_session(result.model), val.inputs)[0], val.labels)
                retrained = f"{100 * acc:.1f}%"
            print(f"| {bits} | {granularity} | {out.max_abs_diff:.3g} | {out.sqnr_db:.1f} | "
                  f"{100 * out.top1_agreement:.1f}% | {100 * report.accuracy_quantized:.1f}% | {retrained} |",
                  flush=True)


if __name__ == "__main__":
    main()
