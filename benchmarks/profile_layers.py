"""Per-layer time of inq-onnx's ShiftConv/ShiftGemm against onnxruntime FP32's own (fused, NCHWc) Conv/Gemm nodes.

Both sessions run the same weights (the INQ-rounded float model and its com.inq rewrite) with onnxruntime's
profiler on, alternating one run each; each node's median kernel time over the runs is kept. onnxruntime fuses
Relu and Add into its Conv nodes, so its per-layer time includes what the com.inq graph runs as separate Relu/Add
nodes (listed apart below). Layers of the same shape are summed into one row, sorted by the time INQ loses.

    python benchmarks/profile_layers.py                              # resnet18, batch 1, 2 threads, 5 bits
    python benchmarks/profile_layers.py --model mobilenet --threads 1 --runs 50 --per-layer
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench_speed import MODELS, open_session, random_inputs, session_options
from inq_onnx.pipeline import QuantizeConfig, quantize_model

LAYER_OPS = ("Conv", "Gemm")


def layer_shapes(model: onnx.ModelProto) -> dict[str, str]:
    """Each Conv/Gemm node's name -> a label of its shape: 'Cin->Cout kxk/s @HxW' (output size) or 'Gemm KxN'."""
    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    labels = {}
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        w = weights[node.input[1]]
        if node.op_type == "Gemm":
            labels[node.name] = f"Gemm {w[1]}->{w[0]}"
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        group, stride = attrs.get("group", 1), attrs.get("strides", [1])[0]
        kind = "dw " if group > 1 and group == w[0] else ""
        cin = w[1] * group
        out = dims.get(node.output[0], [0, 0, 0, 0])
        labels[node.name] = f"{kind}{cin}->{w[0]} {w[2]}x{w[3]}/{stride} @{out[2]}x{out[3]}"
    return labels


def node_times(profile: Path) -> dict[str, tuple[str, list[float]]]:
    """Node name -> (op type, kernel times in ms of each run) from an onnxruntime profile."""
    times: dict[str, tuple[str, list[float]]] = {}
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][:-len("_kernel_time")]
            times.setdefault(name, (event["args"]["op_name"], []))[1].append(event["dur"] / 1e3)
    return times


def fusion_names(model: onnx.ModelProto, layers: dict[str, str]) -> dict[str, str]:
    """Node name -> the Conv/Gemm it belongs to, for the layers and the activations that follow them directly
    (onnxruntime names a fused Conv+Relu after the Relu)."""
    producer = {out: node.name for node in model.graph.node for out in node.output}
    names = {name: name for name in layers}
    for node in model.graph.node:
        if node.op_type in ("Relu", "Clip") and producer.get(node.input[0]) in layers:
            names[node.name] = producer[node.input[0]]
    return names


def layer_of(node: str, names: dict[str, str]) -> str | None:
    """The original Conv/Gemm a node comes from, also when onnxruntime renamed it (NCHWc, fusions)."""
    return names.get(node) or names.get(re.sub(r"(_nchwc|_token_\d+)+$", "", node))


def profile_pair(paths: dict[str, tuple[Path, str]], feed: dict, threads: int, runs: int, warmup: int, tmp: Path):
    sessions = {}
    for name, (path, opener) in paths.items():
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp / name)
        sessions[name] = open_session(path, opener, threads, so)
    for _ in range(warmup):
        for s in sessions.values():
            s.run(None, feed)
    for _ in range(runs):
        for s in sessions.values():
            s.run(None, feed)
    # The warm-up runs are in the profile too: keep the last `runs` times of each node.
    result = {}
    for name, s in sessions.items():
        times = node_times(Path(s.end_profiling()))
        result[name] = {n: (op, statistics.median(t[-runs:])) for n, (op, t) in times.items()}
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--per-layer", action="store_true", help="also print every layer, not only shapes")
    args = ap.parse_args(argv)

    model = MODELS[args.model](0)
    result = quantize_model(model, QuantizeConfig(bits=args.bits, retrain=False))
    layers = layer_shapes(result.float_model)
    names = fusion_names(result.float_model, layers)
    feed = {"x": random_inputs(model, args.batch, np.random.default_rng(1))}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx.save(result.float_model, tmp / "fp32.onnx")
        onnx.save(result.model, tmp / "inq.onnx")
        times = profile_pair({"fp32": (tmp / "fp32.onnx", "ort"), "inq": (tmp / "inq.onnx", "ort+lib")},
                             feed, args.threads, args.runs, args.warmup, tmp)

    per_layer = {side: collections.defaultdict(float) for side in times}
    other = {side: collections.defaultdict(float) for side in times}
    ops = {side: collections.defaultdict(set) for side in times}
    for side, nodes in times.items():
        for node, (op, ms) in nodes.items():
            layer = layer_of(node, names) if side == "fp32" or op.startswith("Shift") else None
            if layer is not None:
                per_layer[side][layer] += ms
                ops[side][layer].add(op)
            else:
                other[side][op] += ms

    print(f"# {args.model}, batch {args.batch}, {args.threads} threads, INQ {args.bits}-bit, onnxruntime "
          f"{ort.__version__}; median per-node kernel ms of {args.runs} alternating profiled runs")
    fp32_ops = sorted({op for s in ops["fp32"].values() for op in s})
    print(f"# fp32 layer nodes run as: {', '.join(fp32_ops)} (Relu/Add fused in); inq: "
          f"{', '.join(sorted({op for s in ops['inq'].values() for op in s}))}")
    by_shape: dict[str, list] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for layer, label in layers.items():
        row = by_shape[label]
        row[0] += 1
        row[1] += per_layer["fp32"].get(layer, float("nan"))
        row[2] += per_layer["inq"].get(layer, float("nan"))
    print(f"\n{'layer shape':<28} {'n':>2} {'fp32 ms':>8} {'inq ms':>8} {'inq/fp32':>8} {'lost ms':>8}")
    for label, (n, f, q) in sorted(by_shape.items(), key=lambda kv: kv[1][1] - kv[1][2]):
        print(f"{label:<28} {n:>2} {f:>8.3f} {q:>8.3f} {q / f:>8.2f} {q - f:>8.3f}")
    total_f, total_q = sum(per_layer["fp32"].values()), sum(per_layer["inq"].values())
    print(f"{'all Conv/Gemm layers':<28} {len(layers):>2} {total_f:>8.3f} {total_q:>8.3f} {total_q / total_f:>8.2f} "
          f"{total_q - total_f:>8.3f}")
    for side in ("fp32", "inq"):
        rest = ", ".join(f"{op} {ms:.3f}" for op, ms in sorted(other[side].items(), key=lambda kv: -kv[1]))
        print(f"{side} other nodes (ms): {rest}; total {sum(other[side].values()):.3f}")
    if args.per_layer:
        print(f"\n{'layer':<24} {'shape':<28} {'fp32 ms':>8} {'inq ms':>8} {'inq/fp32':>8}")
        for layer, label in layers.items():
            f, q = per_layer["fp32"].get(layer, float("nan")), per_layer["inq"].get(layer, float("nan"))
            print(f"{layer:<24} {label:<28} {f:>8.3f} {q:>8.3f} {q / f:>8.2f}")


if __name__ == "__main__":
    main()
