"""`inq-onnx convert`: switch a quantized model between float and int8 activations, without retraining."""

from __future__ import annotations

import click

from inq_onnx.api import convert as convert_file
from inq_onnx.integer_mode import ACTIVATION_MODES

from ._output import echo_mode


@click.command("convert")
@click.argument("quantized", type=click.Path(dir_okay=False))
@click.option("--activations", type=click.Choice(ACTIVATION_MODES), required=True,
              help="float: weights-only INQ. int8: uint8 activations and integer accumulation.")
@click.option("--data", type=click.Path(dir_okay=False),
              help="int8: .npz of inputs to calibrate static scales [default: the model's stored ranges, else "
                   "scales computed per run].")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Calibration batch size.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def command(quantized, activations, data, batch_size, output):
    """Write QUANTIZED with its com.inq nodes in the given activation mode; the weights are unchanged."""
    path, report = convert_file(quantized, output, activations, data, batch_size)
    echo_mode(report)
    click.echo(f"Wrote {path}")
