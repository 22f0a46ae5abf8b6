"""`inq-onnx validate`: compare a quantized model with its original on data."""

from __future__ import annotations

import click

from inq_onnx.api import validate as validate_files

from ._data import DATA_HELP, image_options, preprocess_from
from ._output import SampleProgress, echo_json, percent, table


@click.command("validate")
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("quantized", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(), help=DATA_HELP + ".")
@image_options
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(original, quantized, data, batch_size, as_json, quiet, **images):
    """Per-output drift of QUANTIZED from ORIGINAL: max/mean |diff|, cosine, SQNR, top-1 agreement, accuracy."""
    preprocess = preprocess_from(images)
    with SampleProgress("Validating", enabled=not quiet) as progress:
        report = validate_files(original, quantized, data, batch_size, progress, preprocess)
    if as_json:
        echo_json(report.to_dict())
        return
    rows = [(c.name, c.max_abs_diff, c.mean_abs_diff, c.cosine, c.sqnr_db, percent(c.top1_agreement))
            for c in report.outputs]
    click.echo(f"{report.samples} samples")
    click.echo(table(["output", "max |diff|", "mean |diff|", "cosine", "SQNR dB", "top-1 agree"], rows))
    if report.accuracy_original is not None:
        click.echo(f"accuracy: original {percent(report.accuracy_original)}, "
                   f"quantized {percent(report.accuracy_quantized)}")
