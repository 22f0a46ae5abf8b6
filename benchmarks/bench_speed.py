"""Latency, file size and session memory of inq-onnx variants against onnxruntime FP32 and int8, on standard nets.

Models are built here with onnx.helper from a seed (no downloads): `resnet18` (ResNet-18 without BatchNorm,
3x224x224), `mobilenet` (MobileNet-v1, 3x224x224) and `mlp` (three 4096x4096 Gemm + Relu). The batch is symbolic.
`--model` also takes the path of an .onnx file with one float input (fixed dims but the batch).

Variants come from one list of specs (`variant_specs`): onnxruntime FP32 with the INQ-rounded weights (the
`float_model` of quantize_model at the first --bits), onnxruntime's static int8 QDQ model (quantize_static,
per-channel, u8 activations / s8 weights, calibrated on random inputs), and inq-onnx one-shot at each --bits:
`inqB-float` and `inqB-int8` (activations calibrated on the same inputs) through the op library, `-std-ops` /
`-int8-std` the same models through inq_onnx.InferenceSession (expanded into onnxruntime's own ops).

All sessions of one (model, batch, threads) live in this process with idle pool threads not spinning; after
warm-up, each round runs every variant once (in a rotating order) and medians are printed, with speed-ups
against FP32 and int8 (>1 = faster). Memory is measured in a fresh subprocess per variant: peak (VmHWM) and
resident (VmRSS) memory after creating the session and running it 3 times, minus the RSS after imports.

    python benchmarks/bench_speed.py                                   # all models, batch 1, threads 1 and 2
    python benchmarks/bench_speed.py --model resnet18 --batch 1 8 --threads 2 --runs 50 --bits 5 4 3
    python benchmarks/bench_speed.py --no-memory                       # skip the subprocesses
    python benchmarks/bench_speed.py --model resnet18 --variants 'inq4-*' --threads 2   # some variants only
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import functools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import inq_onnx
from inq_onnx.data import Dataset
from inq_onnx.pipeline import QuantizeConfig, quantize_model
from inq_onnx.schemas import DOMAIN

MB = 1e6


# ---------------------------------------------------------------------------------------------- models

class _Net:
    """A small graph builder: He-initialized Conv/Gemm with small biases, seeded."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def _param(self, name: str, shape, fan_in: int | None) -> str:
        scale = np.sqrt(2.0 / fan_in) if fan_in else 0.01
        self.inits.append(numpy_helper.from_array(
            (self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
             relu: bool = True) -> str:
        w = self._param(f"{name}.w", (cout, cin // group, k, k), cin // group * k * k)
        b = self._param(f"{name}.b", (cout,), None)
        y = self.node("Conv", [x, w, b], name, kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4, group=group)
        return self.node("Relu", [y], f"{name}.relu") if relu else y

    def gemm(self, x: str, name: str, cin: int, cout: int) -> str:
        w = self._param(f"{name}.w", (cout, cin), cin)
        return self.node("Gemm", [x, w, self._param(f"{name}.b", (cout,), None)], name, transB=1)

    def head(self, x: str, channels: int, classes: int = 1000) -> str:
        x = self.node("Flatten", [self.node("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
        return self.gemm(x, "fc", channels, classes)

    def model(self, name: str, x_shape: list, y: str, y_shape: list) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model, full_check=True)
        return model


def resnet18(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 without BatchNorm: 20 Conv + 1 Gemm."""
    net = _Net(seed)
    x = net.conv("x", "conv1", 3, 64, 7, stride=2)
    x = net.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            y = net.conv(x, f"{name}.conv1", cin, cout, 3, stride)
            y = net.conv(y, f"{name}.conv2", cout, cout, 3, relu=False)
            shortcut = net.conv(x, f"{name}.down", cin, cout, 1, stride, relu=False) if stride != 1 else x
            x = net.node("Relu", [net.node("Add", [y, shortcut], f"{name}.add")], f"{name}.relu")
            cin = cout
    return net.model("resnet18", ["N", 3, 224, 224], net.head(x, 512), ["N", 1000])


# (output channels, stride of the depthwise conv) of MobileNet-v1's 13 depthwise-separable blocks.
MOBILENET_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def mobilenet(seed: int = 0) -> onnx.ModelProto:
    """MobileNet-v1 (width 1.0): conv3x3/2 then 13 depthwise 3x3 + pointwise 1x1 pairs, 27 Conv + 1 Gemm."""
    net = _Net(seed)
    x, cin = net.conv("x", "conv0", 3, 32, 3, stride=2), 32
    for i, (cout, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        x = net.conv(x, f"block{i}.dw", cin, cin, 3, stride, group=cin)
        x, cin = net.conv(x, f"block{i}.pw", cin, cout, 1), cout
    return net.model("mobilenet", ["N", 3, 224, 224], net.head(x, 1024), ["N", 1000])


def mlp(seed: int = 0) -> onnx.ModelProto:
    """Three 4096x4096 Gemm + Relu layers."""
    net = _Net(seed)
    x = "x"
    for i in range(3):
        x = net.node("Relu", [net.gemm(x, f"fc{i}", 4096, 4096)], f"fc{i}.relu")
    return net.model("mlp", ["N", 4096], x, ["N", 4096])


MODELS = {"resnet18": resnet18, "mobilenet": mobilenet, "mlp": mlp}


def load_model(name: str, seed: int) -> onnx.ModelProto:
    if name in MODELS:
        return MODELS[name](seed)
    if not Path(name).is_file():
        raise SystemExit(f"--model {name}: neither {', '.join(MODELS)} nor an .onnx file")
    return onnx.load(name)


def random_inputs(model: onnx.ModelProto, batch: int, rng) -> np.ndarray:
    dims = [batch] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    if not all(d > 0 for d in dims):
        raise SystemExit(f"input {model.graph.input[0].name} needs fixed dims but the batch: not benchmarkable")
    return rng.standard_normal(dims).astype(np.float32)


# ---------------------------------------------------------------------------------------------- variants

@dataclass
class Context:
    """What the variant builders of one model share: the model, calibration inputs, a cache of quantizations."""
    model: onnx.ModelProto
    input: str  # the model's (one) input
    calibration: np.ndarray  # (samples, ...) random inputs
    fp32_bits: int
    tmp: Path
    cache: dict

    def quantized(self, **config):
        key = tuple(sorted(config.items()))
        if key not in self.cache:
            data = Dataset({self.input: self.calibration}, None) if config.get("activations") else None
            self.cache[key] = quantize_model(self.model, QuantizeConfig(retrain=False, **config), data)
        return self.cache[key]

    def reference(self, bits: int, x: np.ndarray) -> np.ndarray:
        """Output of the float model with the weights INQ-rounded to `bits`: what rel.err compares with."""
        model = self.quantized(bits=bits).float_model
        return ort.InferenceSession(model.SerializeToString(), session_options(2)).run(None, {self.input: x})[0]


@dataclass(frozen=True)
class Variant:
    name: str
    build: Callable[[Context], onnx.ModelProto | Path]  # the model to run (a path when written by a tool)
    opener: str = "ort"  # "ort": onnxruntime session (with the op library if com.inq); "inq": inq_onnx.InferenceSession
    bits: int | None = None  # INQ bits of its weights (None: the FP32 model's); rel.err compares with those floats


def _fp32(ctx: Context) -> Path:
    path = ctx.tmp / "fp32.onnx"
    if not path.exists():
        onnx.save(ctx.quantized(bits=ctx.fp32_bits).float_model, path)
    return path


def _ort_int8(ctx: Context) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{ctx.input: s[None]} for s in ctx.calibration])

        def get_next(self):
            return next(self.items, None)

    fp32, out = _fp32(ctx), ctx.tmp / "ort-int8.onnx"
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _inq(ctx: Context, bits: int, activations: str | None = None) -> onnx.ModelProto:
    return ctx.quantized(bits=bits, **({"activations": activations} if activations else {})).model


def variant_specs(bits: list[int]) -> list[Variant]:
    """The rows of every table, in order; `fp32` first (speed-ups are against it and `ort-int8`)."""
    specs = [Variant("fp32", _fp32), Variant("ort-int8", _ort_int8)]
    for b in bits:
        specs += [Variant(f"inq{b}-float", functools.partial(_inq, bits=b), bits=b),
                  Variant(f"inq{b}-int8", functools.partial(_inq, bits=b, activations="int8"), bits=b),
                  Variant(f"inq{b}-std-ops", functools.partial(_inq, bits=b), opener="inq", bits=b),
                  Variant(f"inq{b}-int8-std", functools.partial(_inq, bits=b, activations="int8"), opener="inq",
                          bits=b)]
    return specs


def session_options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # Sessions take turns: a spinning idle pool of one would steal the cores from the next.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def open_session(path: Path, opener: str, threads: int, so: ort.SessionOptions | None = None):
    """`opener` as in Variant, plus "ort+lib" for an onnxruntime session that registers the op library."""
    so = so or session_options(threads)
    if opener == "inq":
        return inq_onnx.InferenceSession(str(path), so)
    if opener == "ort+lib":
        so.register_custom_ops_library(inq_onnx.get_library_path())
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@dataclass
class Built:
    variant: Variant
    path: Path | None = None
    opener: str = ""
    error: str = ""  # "n/a (...)" when the variant cannot run


def build_variants(specs: list[Variant], ctx: Context) -> list[Built]:
    built = []
    for spec in specs:
        try:
            result = spec.build(ctx)
        except Exception as exc:  # a tool or an unfinished feature failing is a row, not the end of the run
            built.append(Built(spec, error=f"n/a (build failed: {type(exc).__name__}: {str(exc)[:120]})"))
            continue
        if isinstance(result, onnx.ModelProto):
            path = ctx.tmp / f"{spec.name}.onnx"
            onnx.save(result, path)
            uses_library = any(n.domain == DOMAIN for n in result.graph.node)
        else:
            path, uses_library = result, False
        opener = "ort+lib" if spec.opener == "ort" and uses_library else spec.opener
        built.append(Built(spec, path, opener))
    return built


# ---------------------------------------------------------------------------------------------- measuring

def interleaved_medians(runs: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    for run in runs.values():
        for _ in range(warmup):
            run()
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate so no variant always goes first
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) * 1e3 for n, t in times.items()}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_rss(opener: str, path: str, threads: int, batch: int) -> dict[str, float]:
    """In a fresh process: memory added by creating the session and running it 3 times, in MB."""
    base = _status_kb("VmRSS")
    session = open_session(Path(path), opener, threads)
    inp = session.get_inputs()[0]
    dims = [batch] + [d if isinstance(d, int) else batch for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    for _ in range(3):
        session.run(None, {inp.name: x})
    return {"peak": (_status_kb("VmHWM") - base) * 1e3 / MB, "rss": (_status_kb("VmRSS") - base) * 1e3 / MB}


def memory_in_subprocess(b: Built, threads: int, batch: int) -> dict[str, float] | None:
    cmd = [sys.executable, __file__, "--measure-rss", b.opener, str(b.path), "--threads", str(threads),
           "--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    isa = "/".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags)
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model {info.get('model', '?')}), "
            f"{os.cpu_count()} logical CPUs, {isa}")


# ---------------------------------------------------------------------------------------------- table

HEADER = (f"{'model':<10} {'batch':>5} {'thr':>3}  {'variant':<15} {'ms':>9} {'xFP32':>6} {'xInt8':>6} "
          f"{'file MB':>8} {'peak MB':>8} {'rss MB':>7} {'rel.err':>8}")


def bench(name: str, args, rng) -> None:
    model = load_model(name, args.seed)
    feed_name = model.graph.input[0].name
    name = Path(name).stem if name not in MODELS else name
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(model, feed_name, random_inputs(model, args.calibration, rng), args.bits[0], Path(tmp), {})
        specs = [v for v in variant_specs(args.bits)
                 if v.name in ("fp32", "ort-int8") or not args.variants
                 or any(fnmatch.fnmatch(v.name, p) for p in args.variants)]
        built = build_variants(specs, ctx)
        ready = [b for b in built if not b.error]
        for batch in args.batch:
            x = random_inputs(model, batch, rng)
            references = {bits: ctx.reference(bits, x) for bits in args.bits}
            for threads in args.threads:
                sessions, failed = {}, {}
                for b in ready:
                    try:
                        sessions[b.variant.name] = open_session(b.path, b.opener, threads)
                    except Exception as exc:  # e.g. an op library or API that does not take this model
                        failed[b.variant.name] = f"n/a (session failed: {type(exc).__name__}: {str(exc)[:120]})"
                outputs = {n: s.run(None, {feed_name: x})[0] for n, s in sessions.items()}
                runs = {n: functools.partial(s.run, None, {feed_name: x}) for n, s in sessions.items()}
                ms = interleaved_medians(runs, args.runs, args.warmup)
                del runs, sessions
                for b in built:
                    label = f"{name:<10} {batch:>5} {threads:>3}  {b.variant.name:<15}"
                    n = b.variant.name
                    if b.error or n in failed:
                        print(f"{label} {b.error or failed[n]}", flush=True)
                        continue
                    ref = references[b.variant.bits or args.bits[0]]
                    err = float(np.max(np.abs(outputs[n] - ref)) / max(float(np.max(np.abs(ref))), 1e-12))
                    mem = None if args.no_memory else memory_in_subprocess(b, threads, batch)
                    mem_text = f"{mem['peak']:>8.1f} {mem['rss']:>7.1f}" if mem else f"{'-':>8} {'-':>7}"
                    int8 = ms.get("ort-int8")
                    print(f"{label} {ms[n]:>9.3f} {ms['fp32'] / ms[n]:>6.2f} "
                          f"{(int8 / ms[n] if int8 else float('nan')):>6.2f} {b.path.stat().st_size / MB:>8.2f} "
                          f"{mem_text} {err:>8.1e}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=list(MODELS), help=f"{', '.join(MODELS)}, or .onnx paths")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra_op_num_threads of every session")
    ap.add_argument("--runs", type=int, default=30, help="timed rounds; medians are reported")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bits", type=int, nargs="+", default=[5, 4],
                    help="INQ bit widths; the first also gives the FP32 model's INQ-rounded weights")
    ap.add_argument("--calibration", type=int, default=8, help="random samples for int8 calibration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    ap.add_argument("--variants", nargs="+", metavar="GLOB",
                    help="only these inq variants (e.g. 'inq4-int8' '*-float'); fp32 and ort-int8 always run")
    ap.add_argument("--measure-rss", nargs=2, metavar=("OPENER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure_rss:
        print(json.dumps(measure_rss(*args.measure_rss, args.threads[0], args.batch[0])))
        return

    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {cpu_name()}")
    print(f"# onnxruntime {ort.__version__}, inq_onnx {inq_onnx.__version__}, onnx {onnx.__version__}, "
          f"numpy {np.__version__}, Python {platform.python_version()}")
    print(f"# threads {args.threads}, batch {args.batch}, median of {args.runs} interleaved rounds after "
          f"{args.warmup} warm-up runs, spinning off")
    print("# ms: median latency; xFP32/xInt8: speed-up vs onnxruntime FP32 / int8 QDQ (>1 = faster); memory: "
          "session + 3 runs in a fresh process, minus the RSS after imports; "
          "rel.err: max |y - y_ref| / max |y_ref|, y_ref from onnxruntime on the float model with the same weights")
    print(HEADER)
    rng = np.random.default_rng(args.seed)
    for name in args.model:
        bench(name, args, rng)


if __name__ == "__main__":
    main()
