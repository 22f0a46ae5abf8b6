"""`inq-onnx convert`: switch a quantized model between float and int8 activations, without retraining."""

from __future__ import annotations

import click

from inq_onnx.api import convert as convert_file
from inq_onnx.integer_mode import ACTIVATION_MODES

from ._data import image_options, preprocess_from
from ._output import echo_mode


@click.command("convert")
@click.argument("quantized", type=click.Path(dir_okay=False))
@click.option("--activations", type=click.Choice(ACTIVATION_MODES), required=True,
              help="float: weights-only INQ. int8: uint8 activations and integer accumulation.")
@click.option("--data", type=click.Path(),
              help="int8: .npz of inputs, or a folder of images, to calibrate static scales (images are decoded "
                   "one batch at a time) [default: the model's stored ranges, else scales computed per run].")
@image_options
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Calibration batch size.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def command(quantized, activations, data, batch_size, output, **images):
    """Write QUANTIZED with its com.inq nodes in the given activation mode; the weights are unchanged."""
    path, report = convert_file(quantized, output, activations, data, batch_size, preprocess_from(images))
    echo_mode(report)
    click.echo(f"Wrote {path}")
