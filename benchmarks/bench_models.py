"""Latency and size of INQ models (com.inq ops) against onnxruntime's own FP32 and int8 versions, in one run.

For each model: the FP32 original; its int8 QDQ version from onnxruntime.quantization.quantize_static
(per-channel weights, calibrated on random inputs); and its INQ rewrite from inq-onnx (one-shot at --bits:
latency does not depend on retraining). The FP32 timing uses the INQ-rounded float weights (same arithmetic
as the original). Sessions share one process and thread count, and runs are interleaved (one run of each model
per round) so machine noise hits all alike, with idle pool threads not spinning (or one session's spinning
threads would slow the next one down); medians are printed with ratios.

    python benchmarks/bench_models.py                          # conv-heavy and digits models, 1 thread
    python benchmarks/bench_models.py --threads 2 --batch 1 8 --model my_model.onnx
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import inq_onnx
from inq_onnx.data import model_inputs
from inq_onnx.demo import build_digits_cnn
from inq_onnx.pipeline import QuantizeConfig, quantize_model

# (in channels, out channels, stride) of each 3x3 conv + ReLU of the conv-heavy model; input 64 x 56 x 56.
CONV_HEAVY_LAYERS = [(64, 64, 1), (64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1)]


def conv_heavy_model(seed: int = 0) -> onnx.ModelProto:
    """Six 3x3 convolutions with ReLU, ResNet-stage sized (64 ch at 56x56, 128 ch at 28x28)."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (cin, cout, stride) in enumerate(CONV_HEAVY_LAYERS):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1], strides=[stride, stride]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "conv_heavy",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 56, 56])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", 128, 28, 28])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def random_feed(model: onnx.ModelProto, batch: int, rng) -> dict[str, np.ndarray]:
    feed = {}
    for spec in model_inputs(model):
        dims = [batch] + list(spec.shape[1:])
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise SystemExit(f"input {spec.name} has symbolic non-batch dims {spec.shape}: not benchmarkable")
        feed[spec.name] = rng.standard_normal(dims).astype(spec.dtype)
    return feed


def int8_model(fp32_path: Path, out_path: Path, feeds: list[dict]) -> tuple[Path | None, str]:
    """onnxruntime's own int8 (QDQ) model, or None with the reason."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        return None, f"onnxruntime.quantization unavailable ({exc})"

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    try:
        quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    except Exception as exc:  # the tool rejects some graphs
        return None, f"quantize_static failed ({type(exc).__name__}: {exc})"
    return out_path, ""


def session(path: Path, threads: int, library: bool):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Sessions take turns: a spinning idle pool of one would steal the cores from the next.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if library:
        so.register_custom_ops_library(inq_onnx.get_library_path())
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved_medians(sessions: dict, feed: dict, runs: int, warmup: int = 3) -> dict[str, float]:
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feed)
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def bench_model(name: str, model: onnx.ModelProto, args, tmp: Path, rng) -> None:
    result = quantize_model(model, QuantizeConfig(bits=args.bits, retrain=False))
    paths = {"fp32": tmp / f"{name}.fp32.onnx", "inq": tmp / f"{name}.inq.onnx"}
    onnx.save(result.float_model, paths["fp32"])
    onnx.save(result.model, paths["inq"])
    sizes = {"fp32": paths["fp32"].stat().st_size, "inq": paths["inq"].stat().st_size}
    for batch in args.batch:
        feed = random_feed(model, batch, rng)
        int8_path, why = int8_model(paths["fp32"], tmp / f"{name}.b{batch}.int8.onnx",
                                    [random_feed(model, batch, rng) for _ in range(4)])
        sessions = {"fp32": session(paths["fp32"], args.threads, False)}
        if int8_path is not None:
            sessions["int8"] = session(int8_path, args.threads, False)
            sizes["int8"] = int8_path.stat().st_size
        sessions["inq"] = session(paths["inq"], args.threads, True)
        ref = sessions["fp32"].run(None, feed)[0]
        got = sessions["inq"].run(None, feed)[0]
        rel_err = float(np.max(np.abs(got - ref)) / max(1e-12, float(np.max(np.abs(ref)))))
        ms = interleaved_medians(sessions, feed, args.runs)
        i8 = ms.get("int8", float("nan"))
        print(f"{name:<12} {batch:>5} {ms['fp32']:>9.3f} {i8:>9.3f} {ms['inq']:>9.3f} "
              f"{ms['inq'] / ms['fp32']:>9.2f} {ms['inq'] / i8:>9.2f} {i8 / ms['fp32']:>9.2f}   "
              f"(INQ vs FP32 max rel err {rel_err:.1e})")
        if int8_path is None:
            print(f"{'':<12} int8 skipped: {why}")
    size_line = ", ".join(f"{k} {v:,} B" for k, v in sizes.items())
    print(f"{'':<12} file sizes: {size_line}; FP32/INQ {sizes['fp32'] / sizes['inq']:.2f}x"
          + (f", int8/INQ {sizes['int8'] / sizes['inq']:.2f}x" if "int8" in sizes else ""))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=["conv-heavy", "digits"],
                    help="conv-heavy, digits, or paths of ONNX models with fixed non-batch input dims")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="intra_op_num_threads of every session")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--runs", type=int, default=30, help="timed rounds; medians are reported")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    builtin = {"conv-heavy": conv_heavy_model, "digits": build_digits_cnn}

    print(f"onnxruntime {ort.__version__}, threads {args.threads}, INQ {args.bits}-bit, "
          f"median of {args.runs} interleaved runs")
    print(f"{'model':<12} {'batch':>5} {'fp32 ms':>9} {'int8 ms':>9} {'inq ms':>9} "
          f"{'inq/fp32':>9} {'inq/int8':>9} {'int8/fp32':>9}")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            model = builtin[name](args.seed) if name in builtin else onnx.load(name)
            bench_model(Path(name).stem, model, args, Path(tmp), rng)


if __name__ == "__main__":
    main()
