"""Latency of ShiftConv against onnxruntime's FP32 Conv and int8 (QDQ) Conv on a conv-heavy model.

Builds a stack of 3x3 convolutions (64 channels at 56x56, then 128 channels at 28x28) with onnx.helper,
rounds its weights to INQ power-of-two levels, and times, in one process with the same thread count:
  fp32   onnxruntime Conv on the decoded float weights,
  int8   the fp32 model through onnxruntime.quantization.quantize_static (QDQ), when available,
  shift  the com.inq ShiftConv model run by libinq_onnx_ops.so.
Runs are interleaved (one run of each model per round) so machine noise hits all three alike; prints medians.

    python benchmarks/bench_ops.py --library build/libinq_onnx_ops.so --threads 1 --batch 1 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inq_onnx.packing import pack_weight  # noqa: E402

# (in channels, out channels, stride) of each 3x3 conv; input 64 x 56 x 56.
LAYERS = [(64, 64, 1), (64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1)]
BITS = 5


def inq_round(w: np.ndarray, bits: int):
    """Rounds each output channel of `w` to {0, +-2^n2 .. +-2^n1}; returns levels and per-channel n2."""
    levels = 1 << (bits - 2)
    out = np.zeros_like(w)
    bases = []
    for c in range(w.shape[0]):
        mag = np.abs(w[c])
        n1 = int(np.floor(np.log2(4.0 * mag.max() / 3.0)))
        n2 = n1 - levels + 1
        e = np.clip(np.round(np.log2(np.maximum(mag, 1e-30))), n2, n1)
        q = np.where(mag >= 2.0 ** (n2 - 1), np.sign(w[c]) * 2.0 ** e, 0.0)
        out[c] = q
        bases.append(n2)
    return out.astype(np.float32), bases


def build_models(batch: int, rng):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 64, 56, 56])
    fp_nodes, sh_nodes, fp_inits, sh_inits = [], [], [], []
    prev = "X"
    for i, (cin, cout, stride) in enumerate(LAYERS):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        q, base = inq_round(w, BITS)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        conv_out, relu_out = f"c{i}", f"r{i}"
        attrs = dict(pads=[1, 1, 1, 1], strides=[stride, stride])
        fp_nodes.append(helper.make_node("Conv", [prev, f"W{i}", f"B{i}"], [conv_out], kernel_shape=[3, 3], **attrs))
        sh_nodes.append(helper.make_node("ShiftConv", [prev, f"P{i}", f"B{i}"], [conv_out], domain="com.inq",
                                         bits=BITS, weight_shape=list(q.shape), exponent_base=base, **attrs))
        for nodes in (fp_nodes, sh_nodes):
            nodes.append(helper.make_node("Relu", [conv_out], [relu_out]))
        fp_inits += [numpy_helper.from_array(q, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        sh_inits += [numpy_helper.from_array(pack_weight(q, BITS, base), f"P{i}"), numpy_helper.from_array(b, f"B{i}")]
        prev = relu_out
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)
    opset = [helper.make_opsetid("", 17), helper.make_opsetid("com.inq", 1)]
    fp = helper.make_model(helper.make_graph(fp_nodes, "fp32", [x], [y], fp_inits), opset_imports=opset[:1],
                           ir_version=8)
    sh = helper.make_model(helper.make_graph(sh_nodes, "shift", [x], [y], sh_inits), opset_imports=opset,
                           ir_version=8)
    return fp, sh


def int8_model(fp_path: Path, out_path: Path, batch: int, rng):
    """QDQ int8 version via quantize_static; None (with a reason) when unavailable."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except Exception as exc:  # onnxruntime builds without the quantization tool
        return None, f"onnxruntime.quantization unavailable ({exc})"

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"X": rng.standard_normal((batch, 64, 56, 56)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    try:
        quantize_static(str(fp_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    except Exception as exc:
        return None, f"quantize_static failed ({type(exc).__name__}: {exc})"
    return onnx.load(str(out_path)), ""


def session(model, threads: int, library: str | None = None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if library:
        so.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench(sessions: dict, feed: dict, runs: int, warmup: int):
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feed)
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def default_library():
    try:
        import inq_onnx

        return str(inq_onnx.get_library_path())
    except Exception:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", default=None, help="libinq_onnx_ops.so (default: inq_onnx.get_library_path())")
    ap.add_argument("--threads", type=int, default=1, help="intra_op_num_threads for every session")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--runs", type=int, default=30, help="timed rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    library = args.library or default_library()
    if not library or not Path(library).is_file():
        ap.error("custom-op library not found; pass --library PATH")

    print(f"onnxruntime {ort.__version__}, threads={args.threads}, library={library}")
    print(f"{'batch':>5} {'fp32 ms':>9} {'int8 ms':>9} {'shift ms':>9} {'shift/fp32':>10} {'shift/int8':>10}")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            fp, sh = build_models(batch, rng)
            fp_path = Path(tmp) / f"fp32_b{batch}.onnx"
            onnx.save(fp, str(fp_path))
            q8, why = int8_model(fp_path, Path(tmp) / f"int8_b{batch}.onnx", batch, rng)
            sessions = {"fp32": session(fp, args.threads)}
            if q8 is not None:
                sessions["int8"] = session(q8, args.threads)
            sessions["shift"] = session(sh, args.threads, library)
            feed = {"X": rng.standard_normal((batch, 64, 56, 56)).astype(np.float32)}
            ref = sessions["fp32"].run(None, feed)[0]
            got = sessions["shift"].run(None, feed)[0]
            err = float(np.max(np.abs(got - ref)) / max(1e-12, float(np.max(np.abs(ref)))))
            med = bench(sessions, feed, args.runs, args.warmup)
            i8 = med.get("int8")
            print(f"{batch:>5} {med['fp32']:>9.2f} {i8 if i8 else float('nan'):>9.2f} {med['shift']:>9.2f} "
                  f"{med['shift'] / med['fp32']:>10.2f} "
                  f"{(med['shift'] / i8) if i8 else float('nan'):>10.2f}   (max rel err vs fp32 {err:.1e})")
            if q8 is None:
                print(f"      int8 skipped: {why}")


if __name__ == "__main__":
    main()
