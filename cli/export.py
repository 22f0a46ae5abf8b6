"""`inq-onnx export`: a standard-op model for runtimes without the com.inq library."""

from __future__ import annotations

import warnings

import click

from inq_onnx.api import export as export_file
from inq_onnx.export import EXPORT_FORMATS, QdqNote

from ._data import image_options, preprocess_from


@click.command("export")
@click.argument("quantized", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="float", show_default=True,
              help="float: Conv/Gemm/MatMul with the decoded float32 weights. qdq: int8 QuantizeLinear/DequantizeLinear "
                   "with the exact INQ weights, for onnxruntime's QLinearConv/QGemm.")
@click.option("--data", type=click.Path(),
              help="qdq: .npz of inputs, or a folder of images (decoded one batch at a time), to calibrate "
                   "activation ranges [default: the model's stored ranges].")
@image_options
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="qdq: calibration batch size.")
@click.option("--strict", is_flag=True, help="qdq: fail when a layer's weights do not fit int8 exactly.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def command(quantized, fmt, data, batch_size, strict, output, **images):
    """Write QUANTIZED with standard Conv/Gemm/MatMul in place of the com.inq ops."""
    preprocess = preprocess_from(images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QdqNote)
        path = export_file(quantized, output, fmt, data, strict, batch_size, preprocess)
    for w in caught:
        if issubclass(w.category, QdqNote):
            click.echo(f"Note: {w.message}", err=True)
    click.echo(f"Wrote {path}")
