"""`inq-onnx demo`: train a CNN on scikit-learn's digits, INQ-quantize it, and show before/after."""

from __future__ import annotations

import click

from inq_onnx.demo import DemoFiles, prepare_demo, quantize_demo

from ._output import StepProgress, percent, table


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default="inq-demo", show_default=True,
              help="Where the models and data are left.")
@click.option("--bits", type=click.IntRange(2, 8), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(workdir, bits, seed, quiet):
    """Train a small CNN on digits (FP32), INQ-quantize it, validate, and print accuracy, size and latency."""
    files = DemoFiles(workdir)
    with StepProgress("FP32 training on digits", enabled=not quiet) as progress:
        prepare_demo(files, seed, progress)
    with StepProgress(f"INQ {bits}-bit step", enabled=not quiet) as progress:
        report = quantize_demo(files, bits, seed, progress)
    rows = [
        ("accuracy (validation)", percent(report.accuracy_float), percent(report.accuracy_quantized),
         f"{100 * (report.accuracy_quantized - report.accuracy_float):+.2f} pt"),
        ("model file (bytes)", report.bytes_float, report.bytes_quantized,
         f"{report.bytes_float / report.bytes_quantized:.2f}x smaller"),
        (f"latency, batch {report.batch} (ms, median)", f"{report.latency_float * 1e3:.3f}",
         f"{report.latency_quantized * 1e3:.3f}", f"{report.latency_quantized / report.latency_float:.2f}x FP32"),
    ]
    click.echo("")
    click.echo(f"INQ retraining on the training split (recipe chosen from the data): {report.mode}, "
               f"SGD lr {report.lr:.3g} with cosine decay, {report.epochs} epoch(s) per step.")
    click.echo(table(["", "FP32 (onnxruntime)", f"INQ {bits}-bit (com.inq)", "change"], rows))
    click.echo("")
    click.echo(f"Models and data are in {files.workdir}/ ({files.model.name}, {files.quantized.name}, "
               f"{files.train.name}, {files.val.name}).")
