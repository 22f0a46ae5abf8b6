"""Held-out accuracy of FP32, one-shot and INQ with the default recipe at 5/4/3/2 bits, on small CNNs of digits.

Every network is built from a seed and trained in FP32 here (onnxruntime-training, AdamW) on the training split
of scikit-learn's 8x8 digits (1,347 images); accuracy is measured on the held-out split (450 images), which
neither training nor quantization sees. INQ runs with `QuantizeConfig(bits=b)` and the training data: every
retraining setting at its default, i.e. chosen by inq_onnx.recipe.

Networks (`--models`):
- cnn16: the demo's Conv-Conv-MaxPool-Gemm-Gemm CNN, width 16, seed 0 (the one the recipe constants were set on)
- cnn8, cnn24: the same shape at widths 8 and 24, seeds 1 and 2 (not tuned for)
- mobile: (Conv-BatchNorm-Relu) x 4 with a depthwise 3x3 and a pointwise 1x1 conv (benchmarks/bn_granularity.py),
  seed 3 (not tuned for)

Needs onnxruntime-training (.venv-train). Prints a Markdown table and the recipe chosen per model and width.

    python benchmarks/recipe_accuracy.py                        # all four networks, bits 5 4 3 2
    python benchmarks/recipe_accuracy.py --models cnn8 --bits 3
    python benchmarks/recipe_accuracy.py --seed 10             # another split, other network seeds
    python benchmarks/recipe_accuracy.py --models mobile --bits 2 --max-drop 3   # with accuracy control

With `--max-drop X`, INQ runs under accuracy control (`quantize --val-data ... --max-drop X`): the first half of
the held-out split steers it, and the accuracies shown are on the second half only (FP32's too).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import time

import onnx

from inq_onnx.data import Dataset
from inq_onnx.demo import build_digits_cnn, digits_datasets, train_float
from inq_onnx.accuracy_control import quantize_with_control
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.quantizer import RANGE_RULES
from inq_onnx.runtime import make_session, run_batched
from inq_onnx.validate import accuracy

from bn_granularity import build_bn_cnn, train as train_bn_cnn  # the neighbouring benchmark's network

# (name, seed, builder and trainer)
MODELS = {
    "cnn16": (0, lambda seed, data: train_float(build_digits_cnn(seed, 16), data, seed=seed)),
    "cnn8": (1, lambda seed, data: train_float(build_digits_cnn(seed, 8), data, seed=seed)),
    "cnn24": (2, lambda seed, data: train_float(build_digits_cnn(seed, 24), data, seed=seed)),
    "mobile": (3, lambda seed, data: train_bn_cnn(build_bn_cnn(seed), data, 15, seed)),
}
TARGET_DROP = {5: 0.5, 4: 1.0, 3: 2.0, 2: 4.0}  # points below FP32 allowed


def held_out_accuracy(model: onnx.ModelProto, val: Dataset) -> float:
    return accuracy(run_batched(make_session(model, threads=1), val.inputs)[0], val.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--bits", type=int, nargs="+", default=[5, 4, 3, 2])
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train/held-out split, added to every network's own seed")
    parser.add_argument("--range-rule", choices=RANGE_RULES, default=QuantizeConfig.range_rule,
                        help="where each exponent range sits (quantize --range-rule)")
    parser.add_argument("--max-drop", type=float, default=None,
                        help="accuracy control: steer on the first half of the held-out split, report the second")
    args = parser.parse_args()

    import onnxruntime

    train, val = digits_datasets(args.seed)
    steer = None
    if args.max_drop is not None:
        half = len(val) // 2
        steer = Dataset({k: v[:half] for k, v in val.inputs.items()}, val.labels[:half])
        val = Dataset({k: v[half:] for k, v in val.inputs.items()}, val.labels[half:])
    cpu = platform.processor() or platform.machine()
    steering = f" / {len(steer)} steering accuracy control (--max-drop {args.max_drop:g})" if steer is not None else ""
    print(f"# digits ({len(train)} train / {len(val)} held out{steering}), {datetime.date.today()}, {cpu}, "
          f"onnxruntime {onnxruntime.__version__}")
    rows, recipes = [], []
    for name in args.models:
        seed, make = MODELS[name]
        model = make(seed + args.seed, train)
        fp32 = held_out_accuracy(model, val)
        for bits in args.bits:
            config = QuantizeConfig(bits=bits, range_rule=args.range_rule)
            one_shot = quantize_model(model, dataclasses.replace(config, retrain=False))
            start = time.perf_counter()
            control = None
            if steer is None:
                inq = quantize_model(model, config, train)
            else:
                inq, control = quantize_with_control(model, config, train, steer, args.max_drop)
            seconds = time.perf_counter() - start
            acc_one_shot = held_out_accuracy(one_shot.float_model, val)
            acc_inq = held_out_accuracy(inq.float_model, val)
            drop, gain = 100 * (fp32 - acc_inq), 100 * (acc_inq - acc_one_shot)
            rows.append(f"| {name} | {seed + args.seed} | {bits} | {100 * fp32:.1f} | {100 * acc_one_shot:.1f} | "
                        f"{100 * acc_inq:.1f} | {drop:+.1f} ({'met' if drop <= TARGET_DROP[bits] else 'MISSED'}) | "
                        f"{gain:+.1f} | {seconds:.0f} |")
            print(rows[-1], flush=True)
            recipes.append(f"{name} {bits} bits: " + "; ".join(inq.recipe.lines()))
            if control is not None:
                recipes.append(f"{name} {bits} bits, accuracy control: {control.summary()}")
    print()
    print("| model | seed | bits | FP32 % | one-shot % | INQ % | FP32 - INQ, points (target) | INQ - one-shot | "
          "INQ seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print()
    print("\n".join(recipes))


if __name__ == "__main__":
    main()
