"""`inq-onnx export`: a standard-op model for runtimes without the com.inq library."""

from __future__ import annotations

import click

from inq_onnx.api import export as export_file
from inq_onnx.export import EXPORT_FORMATS


@click.command("export")
@click.argument("quantized", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="float", show_default=True,
              help="float: Conv/Gemm with the decoded float32 weights.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def command(quantized, fmt, output):
    """Write QUANTIZED with standard Conv/Gemm in place of ShiftConv/ShiftGemm."""
    path = export_file(quantized, output, fmt)
    click.echo(f"Wrote {path}")
