"""Per model of the real-export corpus: rewritten/expected layers, fidelity to its float export, one-shot
agreement and accuracy, with the commands that produced them, as a Markdown table.

Usage: python summarize.py CORPUS_DIR [--bits 5] [--work DIR]  (in an environment with inq-onnx installed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exported_models import class_scores, linear_layers_with_constant_weight, write_data  # noqa: E402
from inq_onnx.cli.main import cli  # noqa: E402
from inq_onnx.runtime import make_session, run_batched  # noqa: E402


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def summarize(entry: dict, corpus: Path, digits: dict, bits: int, work: Path) -> dict:
    name = entry["name"]
    original = corpus / entry["file"]
    quantized, exported = work / f"{name}.inq.onnx", work / f"{name}.float.onnx"
    val = write_data(entry, digits, "val", work / f"{name}.val.npz")
    row = {"name": name, "expected": len(linear_layers_with_constant_weight(onnx.load(original))),
           "commands": [f"inq-onnx quantize {entry['file']} --bits {bits} --no-retrain -o {quantized.name}",
                        f"inq-onnx validate {entry['file']} {quantized.name} --data {val.name}",
                        f"inq-onnx export {quantized.name} --format float -o {exported.name}"]}
    code, output = run("quantize", original, "--bits", bits, "--no-retrain", "--quiet", "-o", quantized)
    if code != 0:
        row["error"] = output.strip().splitlines()[-1]
        return row
    model = onnx.load(quantized)
    row["rewritten"] = sum(n.domain == "com.inq" for n in model.graph.node)
    row["batchnorm_left"] = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    inputs = {entry["input"]: np.load(val)[entry["input"]]}
    code, output = run("export", quantized, "--format", "float", "-o", exported)
    if code == 0:
        ref, got = run_batched(make_session(exported), inputs), run_batched(make_session(quantized), inputs)
        row["fidelity"] = max(float(np.max(np.abs(r - g)) / max(float(np.max(np.abs(r))), 1e-6))
                              for r, g in zip(ref, got))
    scores = class_scores(onnx.load(original))
    reference = run_batched(make_session(original), inputs)[scores]
    result = run_batched(make_session(quantized), inputs)[scores]
    labels = digits["val_labels"]
    row.update(agreement=float(np.mean(reference.argmax(1) == result.argmax(1))),
               accuracy_original=float(np.mean(reference.argmax(1) == labels)),
               accuracy_quantized=float(np.mean(result.argmax(1) == labels)))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--work", type=Path, help="keep the quantized models here [default: a temporary folder]")
    args = parser.parse_args(argv)
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    digits = dict(np.load(args.corpus / "digits.npz"))
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        rows = [(e, summarize(e, args.corpus, digits, args.bits, work)) for e in manifest["models"]]
    print("| model | exporter | opset | nodes | rewritten / expected | BN left | max diff vs float export "
          "| top-1 agreement | accuracy float → INQ |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for e, r in rows:
        head = (f"| {e['name']} | {e['exporter']} {e['exporter_version']} ({e['framework']} "
                f"{e['framework_version']}) | {e['opset']} | {e['nodes']} ")
        if "error" in r:
            print(head + f"| 0 / {r['expected']} | | | | {r['error']} |")
            continue
        fidelity = f"{r['fidelity']:.1e} of max" if "fidelity" in r else "export failed"
        print(head + f"| {r['rewritten']} / {r['expected']} | {r['batchnorm_left']} | {fidelity} "
              f"| {100 * r['agreement']:.1f}% | {100 * r['accuracy_original']:.2f}% → "
              f"{100 * r['accuracy_quantized']:.2f}% |")
    print()
    for _, r in rows:
        print(f"{r['name']}: " + "; ".join(r["commands"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
