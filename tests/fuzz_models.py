"""Fuzz the loader, the normalizer and the com.inq ops with malformed and hostile models.

    python tests/fuzz_models.py --cases 5000 [--seed 0] [--timeout 20]

Each case mutates one of the test models (truncated or random bytes, huge or negative dims, wrong dtypes, cycles,
dangling inputs, duplicate names, bad attributes, odd opsets, huge constants, external data outside the folder,
data whose shapes differ from the model's) and runs `info` and `quantize --no-retrain` in process. Every run must
end with exit 0, or exit 1/2 and one short `Error:` line: never exit 3, an uncaught exception, a hang, or an output
file left behind. Models that quantize are exported and run through the com.inq ops with inputs of other shapes,
which onnxruntime must either run or refuse. The test suite runs a few dozen cases (tests/test_fuzz_models.py).
"""

from __future__ import annotations

import argparse
import collections
import copy
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from models import conv_gemm_model, constant_subgraph_model, opset6_gemm_model, residual_model  # noqa: E402

MAX_ERROR_CHARS = 400
BASES = {"conv_gemm": conv_gemm_model, "constant_subgraph": constant_subgraph_model, "opset6_gemm": opset6_gemm_model,
         "residual": residual_model}
_DTYPES = [TensorProto.INT32, TensorProto.INT64, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.UINT8,
           TensorProto.BOOL, TensorProto.STRING, TensorProto.BFLOAT16, 0, 999]


# --- model mutations: each changes `model` in place and returns a short description -------------------------------

def _pick(rng, items):
    return items[int(rng.integers(len(items)))] if len(items) else None


def _layer(rng, model):
    return _pick(rng, [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")])


def huge_or_negative_dim(rng, model):
    value = int(_pick(rng, [-1, -7, 0, 2**31, 2**40, 2**62]))
    if rng.random() < 0.5 and model.graph.initializer:
        tensor = _pick(rng, list(model.graph.initializer))
        if tensor.dims:
            tensor.dims[int(rng.integers(len(tensor.dims)))] = value
            return f"initializer {tensor.name} dim {value}"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims:
        dims[int(rng.integers(len(dims)))].dim_value = value
    return f"input dim {value}"


def wrong_dtype(rng, model):
    tensor = _pick(rng, list(model.graph.initializer))
    if tensor is None:
        return "no initializer"
    dtype = int(_pick(rng, _DTYPES))
    if rng.random() < 0.5 and dtype in (TensorProto.INT32, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64):
        array = numpy_helper.to_array(tensor).astype(helper.tensor_dtype_to_np_dtype(dtype))
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))  # a consistent tensor of the wrong type
    else:
        tensor.data_type = dtype  # the bytes stay: sizes may no longer match
    return f"{tensor.name} as {dtype}"


def cycle(rng, model):
    nodes = model.graph.node
    if len(nodes) < 2:
        return "too few nodes"
    i = int(rng.integers(len(nodes) - 1))
    j = int(rng.integers(i + 1, len(nodes)))
    source = nodes[j].output[0] if rng.random() < 0.5 else nodes[i].output[0]
    if nodes[i].input:
        nodes[i].input[0] = source
    else:
        nodes[i].input.append(source)
    return f"node {i} reads node {j}"


def dangling_input(rng, model):
    node = _pick(rng, list(model.graph.node))
    if node is None:
        return "no node"
    if node.input:
        node.input[int(rng.integers(len(node.input)))] = "nowhere"
    else:
        node.input.append("nowhere")
    return f"{node.op_type} reads nowhere"


def duplicate_names(rng, model):
    nodes, choice = model.graph.node, int(rng.integers(4))
    if choice == 0 and len(nodes) > 1:
        nodes[-1].output[0] = nodes[0].output[0]
        return "two nodes write one value"
    if choice == 1:
        for node in nodes:
            node.name = "same"
        return "every node named 'same'"
    if choice == 2 and model.graph.initializer:
        twin = copy.deepcopy(model.graph.initializer[0])
        model.graph.initializer.append(twin)
        return f"initializer {twin.name} twice"
    if not model.graph.input:
        return "nothing to duplicate"
    model.graph.input.append(copy.deepcopy(model.graph.input[0]))
    return "input twice"


def bad_attribute(rng, model):
    node = _layer(rng, model)
    if node is None:
        return "no layer"
    name = str(_pick(rng, ["strides", "pads", "dilations", "group", "kernel_shape", "transB", "alpha", "auto_pad"]))
    values = [[0, 1], [-1, -1], [1, 1, 1], [1] * 9, [2**40, 1], 0, -3, 2**31, 7, 1.5, "VALID", "bogus", [1.0, 2.0]]
    value = values[int(rng.integers(len(values)))]
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))
    return f"{node.name}.{name}={value!r}"


def odd_versions(rng, model):
    if rng.random() < 0.2:
        del model.opset_import[:]
        return "no opset import"
    model.opset_import[0].version = int(rng.integers(1, 26))
    model.ir_version = int(rng.integers(0, 14))
    return f"opset {model.opset_import[0].version}, IR {model.ir_version}"


def huge_constant(rng, model):
    """A ConstantOfShape of up to exabytes in place of a layer's weight or beside it."""
    node = _layer(rng, model)
    if node is None:
        return "no layer"
    dims = [int(d) for d in rng.choice([1, 3, 2**20, 2**31, -2], size=int(rng.integers(1, 5)))]
    shape = numpy_helper.from_array(np.array(dims, np.int64), "huge_shape")
    model.graph.initializer.append(shape)
    maker = helper.make_node("ConstantOfShape", ["huge_shape"], ["huge"], value=numpy_helper.from_array(
        np.ones(1, np.float32)))
    model.graph.node.insert(0, maker)
    node.input[1] = "huge"
    return f"weight of {node.name} is ConstantOfShape{dims}"


def weight_from_input(rng, model):
    node = _layer(rng, model)
    if node is None:
        return "no layer"
    weight = node.input[1]
    dims = [list(t.dims) for t in model.graph.initializer if t.name == weight]
    kept = [t for t in model.graph.initializer if t.name != weight]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.input.append(helper.make_tensor_value_info(weight, TensorProto.FLOAT, dims[0] if dims else ["d"]))
    return f"weight of {node.name} is a graph input"


def drop_types(rng, model):
    value = _pick(rng, [*model.graph.output, *model.graph.input])
    if value is None:
        return "no value"
    value.type.ClearField("tensor_type") if rng.random() < 0.5 else value.type.tensor_type.ClearField("shape")
    return f"{value.name} untyped"


def empty_graph(rng, model):
    kept = int(rng.integers(len(model.graph.node) + 1))
    del model.graph.node[kept:]
    return f"graph cut after {kept} node(s)"


def other_opset(rng, model):
    """A valid model at another opset, as an older or newer exporter would write it (when onnx converts it)."""
    opset = int(rng.integers(7, 23))
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except Exception:
        return f"opset {opset} not reachable"
    converted.ir_version = max(3, min(model.ir_version, 10))
    model.CopyFrom(converted)
    return f"converted to opset {opset}"


MUTATIONS = [huge_or_negative_dim, wrong_dtype, cycle, dangling_input, duplicate_names, bad_attribute, odd_versions,
             huge_constant, weight_from_input, drop_types, empty_graph]


# --- file-level cases ------------------------------------------------------------------------------------------------

def _external(rng, model, path: Path) -> str:
    location = str(_pick(rng, ["../outside.bin", "/etc/hostname", "missing.bin", "weights.bin"]))
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    graph_only = onnx.load(str(path), load_external_data=False)
    tensor = graph_only.graph.initializer[0]
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location
        elif entry.key == "offset" and rng.random() < 0.3:
            entry.value = str(int(_pick(rng, [-5, 2**40])))
    onnx.save(graph_only, path)
    return f"external data at {location}"


def _data(rng, model, path: Path) -> str:
    """An .npz for the model's first input, sometimes with other shapes, a wrong dtype or NaN."""
    value = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") and 0 < d.dim_value < 64 else 4
            for d in value.type.tensor_type.shape.dim]
    change = int(rng.integers(5))
    if change == 1 and dims:
        dims[int(rng.integers(len(dims)))] += int(rng.integers(1, 4))
    elif change == 2:
        dims = dims[:-1] or [3]
    array = np.random.default_rng(int(rng.integers(1 << 30))).standard_normal(dims).astype(np.float32)
    if change == 3:
        array = array.astype(np.int32)
    elif change == 4 and array.size:
        array.flat[0] = np.nan
    np.savez(path, **{value.name: array})
    return ["data", "data of another shape", "data of another rank", "int data", "data with NaN"][change]


@dataclass
class Case:
    index: int
    description: str
    model: Path
    data: Path | None = None


def make_case(index: int, seed: int, folder: Path) -> Case:
    rng = np.random.default_rng([seed, index])
    base = str(_pick(rng, list(BASES)))
    model = BASES[base](seed=int(rng.integers(100)))
    folder.mkdir()
    path = folder / "model.onnx"
    kind = rng.random()
    if kind < 0.08:
        data = model.SerializeToString()
        path.write_bytes(data[:int(rng.integers(len(data)))])
        return Case(index, f"{base}: truncated", path)
    if kind < 0.12:
        path.write_bytes(rng.bytes(int(rng.integers(0, 4096))))
        return Case(index, "random bytes", path)
    described = [other_opset(rng, model)] if rng.random() < 0.3 else []
    if rng.random() < 0.75:  # else a valid model: the success path and the ops get their share
        for mutation in rng.choice(MUTATIONS, size=int(rng.integers(1, 3)), replace=False):
            try:
                described.append(mutation(rng, model))
            except (ValueError, IndexError, KeyError, TypeError):  # an earlier mutation left nothing to apply it to
                described.append(f"{mutation.__name__} not applicable")
    if kind < 0.22:
        data = bytearray(model.SerializeToString())
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            data[position] = int(rng.integers(256))
        path.write_bytes(bytes(data))
        described.append("bytes flipped")
    elif kind < 0.3:
        (folder.parent / "outside.bin").write_bytes(b"\0" * 4096)
        described.append(_external(rng, model, path))
    else:
        path.write_bytes(model.SerializeToString())
    case = Case(index, f"{base}: {'; '.join(described) or 'valid'}", path)
    if rng.random() < 0.3 and model.graph.input:
        case.data = folder / "data.npz"
        case.description += "; " + _data(rng, model, case.data)
    return case


# --- running ---------------------------------------------------------------------------------------------------------

class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


@dataclass
class Outcome:
    exit_codes: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    op_runs: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)  # error lines, numbers and paths masked


def _invoke(args: list[str], timeout: float):
    from click.testing import CliRunner

    from inq_onnx.cli.main import cli

    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return CliRunner().invoke(cli, args, catch_exceptions=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _check_run(case: Case, command: str, result, outcome: Outcome, output: Path | None) -> bool:
    """Record the run; False (and a failure) when it broke a rule."""
    code = result.exit_code
    outcome.exit_codes[f"{command} exit {code}"] += 1
    problem = None
    if isinstance(result.exception, Hang):
        problem = "hang"
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        problem = f"uncaught {type(result.exception).__name__}: {result.exception}"
    elif code not in (0, 1, 2):
        problem = f"exit {code}"
    elif code != 0:
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        for line in errors:
            outcome.errors[f"exit {code}: " + re.sub(r"\S*/\S*|\d+", "#", line[7:])[:100]] += 1
        if len(errors) != 1 or len(errors[0]) > MAX_ERROR_CHARS or "Traceback" in result.output:
            problem = f"error output not one short line: {result.output[-600:]!r}"
        elif output is not None and output.exists():
            problem = "output file left after a failure"
    leftovers = [p.name for p in case.model.parent.iterdir() if p.name.endswith(".tmp")]
    if leftovers:
        problem = f"temporary files left: {leftovers}"
    if problem:
        outcome.failures.append(f"case {case.index} ({case.description}) {command}: {problem}: "
                                f"{result.output.strip()[-300:]}")
    return problem is None and code == 0


def _run_ops(rng, path: Path, outcome: Outcome, timeout: float) -> None:
    """The quantized model with inputs of other shapes: onnxruntime runs it or raises, nothing else."""
    from inq_onnx.model_io import load_model
    from inq_onnx.runtime import make_session

    session = make_session(load_model(path))
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        for _ in range(3):
            feeds = {}
            for value in session.get_inputs():
                dims = [d if isinstance(d, int) and d > 0 else 2 for d in value.shape]
                if dims and rng.random() < 0.7:
                    axis = int(rng.integers(len(dims)))
                    dims[axis] = int(_pick(rng, [0, 1, dims[axis] + 1, 3 * dims[axis] + 2]))
                dtype = np.float32 if "float" in value.type else np.int64
                feeds[value.name] = np.random.default_rng(1).standard_normal(dims).astype(dtype)
            try:
                session.run(None, feeds)
                outcome.op_runs["ran"] += 1
            except Hang:
                raise
            except Exception:  # onnxruntime refusing the shapes is the expected answer
                outcome.op_runs["refused by onnxruntime"] += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run_cases(cases: int, seed: int = 0, timeout: float = 20.0, folder: Path | None = None) -> Outcome:
    outcome = Outcome()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            for index in range(cases):
                case = make_case(index, seed, Path(tmp) / f"case{index}")
                _check_run(case, "info", _invoke(["info", str(case.model)], timeout), outcome, None)
                output = case.model.with_name("out.onnx")
                args = ["quantize", str(case.model), "--no-retrain", "--quiet", "-o", str(output)]
                if case.data is not None:
                    args += ["--data", str(case.data)]
                if not _check_run(case, "quantize", _invoke(args, timeout), outcome, output):
                    continue
                exported = case.model.with_name("float.onnx")
                _check_run(case, "export", _invoke(["export", str(output), "-o", str(exported)], timeout), outcome,
                           exported)
                try:
                    _run_ops(np.random.default_rng([seed, index, 1]), output, outcome, timeout)
                except Hang:
                    outcome.failures.append(f"case {case.index} ({case.description}): ops hang")
    finally:
        signal.signal(signal.SIGALRM, previous)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--errors", type=int, default=0, help="also print the N most frequent error messages")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per command before it counts as a hang")
    args = parser.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")
    start = time.perf_counter()
    outcome = run_cases(args.cases, args.seed, args.timeout)
    elapsed = time.perf_counter() - start
    print(f"{args.cases} cases (seed {args.seed}) in {elapsed:.1f} s")
    for key, count in sorted(outcome.exit_codes.items()):
        print(f"  {key}: {count}")
    for key, count in sorted(outcome.op_runs.items()):
        print(f"  com.inq ops with other input shapes, {key}: {count}")
    for message, count in outcome.errors.most_common(args.errors):
        print(f"  {count:5d}  {message}")
    print(f"failures: {len(outcome.failures)}")
    for failure in outcome.failures:
        print(f"  {failure}")
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
