"""`inq-onnx info`: per-layer bits, exponent range, zeros and bytes of a model."""

from __future__ import annotations

import click

from inq_onnx.api import info as model_info
from inq_onnx.model_info import QUANTIZABLE
from inq_onnx.refusals import group_reasons

from ._output import echo_json, percent, table


@click.command("info")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(model, as_json):
    """Describe MODEL's quantized layers and the layers left float, with the reason."""
    report = model_info(model)
    if as_json:
        echo_json(report.to_dict())
        return
    if report.layers:
        rows = [(l.node, l.op_type, l.bits,
                 "-" if l.exponent_min is None else f"2^{l.exponent_min}..2^{l.exponent_max}",
                 percent(l.zero_fraction), l.parameters, l.packed_bytes, l.float_bytes, l.activations,
                 l.fused or "-") for l in report.layers]
        click.echo(table(["layer", "op", "bits", "exponents", "zeros", "weights", "bytes", "fp32 bytes",
                          "inputs", "fused"], rows))
    else:
        click.echo("No com.inq layers: a float model.")
    for note in report.notes:
        click.echo(f"Normalized: {note}")
    quantizable = [f for f in report.float_layers if f.reason == QUANTIZABLE]
    if quantizable:
        click.echo("")
        click.echo(table(["float layer", "op", "weights", "why"],
                         [(f.node, f.op_type, f.parameters, f.reason) for f in quantizable]))
    refused = group_reasons(f for f in report.float_layers if f.reason != QUANTIZABLE)
    if refused:
        click.echo("")
        click.echo("Left float (--json lists every node):")
        for group in refused:
            click.echo(f"  {group.summary()}")
    click.echo("")
    if not report.layers:
        click.echo(f"model: {report.model_bytes} bytes; {len(quantizable)} quantizable layer(s) hold "
                   f"{4 * sum(f.parameters for f in quantizable)} bytes of fp32 weights")
        return
    click.echo(f"model: {report.model_bytes} bytes; with fp32 weights: {report.float_model_bytes} bytes; "
               f"compression {report.compression_ratio:.2f}x "
               f"(quantized weights {report.packed_bytes} vs {report.float_bytes} bytes)")
    if report.granularity:
        ranges = ("per channel in some layers, per tensor in others" if report.granularity == "mixed"
                  else f"per {report.granularity}")
        placed = {"max": "from each largest weight", "mse": "placed by squared rounding error"}.get(
            report.range_rule or "", "")
        click.echo(f"exponent ranges: {ranges}" + (f", {placed}" if placed else ""))
    if report.accuracy_control:
        click.echo(f"accuracy control: {report.accuracy_control}")
