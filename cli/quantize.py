"""`inq-onnx quantize`: INQ-retrain a model and rewrite it into com.inq ops."""

from __future__ import annotations

import warnings

import click

from inq_onnx.api import quantize as quantize_file
from inq_onnx.errors import ConfigError
from inq_onnx.integer_mode import ACTIVATION_MODES
from inq_onnx.pipeline import LOSSES, QuantizeConfig
from inq_onnx.quantizer import GRANULARITIES, RANGE_RULES
from inq_onnx.refusals import group_reasons
from inq_onnx.retrain import RetrainConfig
from inq_onnx.schedule import STRATEGIES, parse_portions
from inq_onnx.training.optim import DECAYS, OPTIMIZERS

from ._data import DATA_HELP, image_options, preprocess_from
from ._output import StepProgress, echo_mode, percent, table


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--bits", type=int, default=5, show_default=True, help="Bits per weight, 2..8.")
@click.option("--data", "data", type=click.Path(), help=DATA_HELP + ". Without it: one-shot.")
@image_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output path [default: <stem>.inq.onnx].")
@click.option("--portions", help="Accumulated portions, e.g. 0.5,0.75,0.875,1 [default: the paper's for --bits].")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="magnitude", show_default=True,
              help="Which weights each step freezes: largest magnitude first, or random.")
@click.option("--epochs", type=int, help="Epochs per INQ step [default: enough for a minimum of optimizer steps "
                                         "per step, scaled to the data size].")
@click.option("--batch-size", type=int, default=RetrainConfig.batch_size, show_default=True)
@click.option("--lr", type=float, help="Learning rate [default: a tenth of where a short range test on the data "
                                      "diverges].")
@click.option("--decay", type=click.Choice(DECAYS), help="Learning-rate decay within each INQ step [default: cosine].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True,
              help="sgd: momentum 0.9, weight decay 5e-4 (the paper's); adamw.")
@click.option("--weight-decay", type=float, default=RetrainConfig.weight_decay, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--exclude", multiple=True, metavar="NODE", help="Leave this node float (repeatable).")
@click.option("--loss", type=click.Choice(LOSSES), default="auto", show_default=True,
              help="auto: distillation from the original's outputs, or cross-entropy on the labels when the "
                   "original does not fit them.")
@click.option("--activations", type=click.Choice(ACTIVATION_MODES), default="float", show_default=True,
              help="float: weights-only INQ. int8: uint8 activations (scales calibrated on --data, else per run) "
                   "and integer accumulation, for speed.")
@click.option("--granularity", type=click.Choice(GRANULARITIES), default=QuantizeConfig.granularity,
              show_default=True, help="Exponent range (n1, n2) per output channel, one per weight tensor, or auto: "
                                      "per channel below 5 bits, per tensor from 5 bits.")
@click.option("--range-rule", type=click.Choice(RANGE_RULES), default=QuantizeConfig.range_rule,
              show_default=True, help="Where each exponent range sits: mse: the paper's range moved down by up to 3 "
                                      "octaves where that lowers the squared rounding error; max: the paper's "
                                      "rule, from the largest weight.")
@click.option("--layer-bits", multiple=True, metavar="NODE=B",
              help="Quantize this node to B bits instead of --bits (repeatable).")
@click.option("--val-data", type=click.Path(),
              help="Data held out from --data (an .npz or an image folder, like --data); with --max-drop, the "
                   "accuracy (with labels, else top-1 agreement with the original) to keep.")
@click.option("--max-drop", type=float, metavar="POINTS",
              help="Largest accuracy drop on --val-data, in points; beyond it the most sensitive layers get more "
                   "bits or stay float, one per extra run.")
@click.option("--no-retrain", is_flag=True, help="One-shot quantization, no retraining.")
@click.option("--resume", type=click.Path(file_okay=False), metavar="DIR",
              help="Continue an interrupted retraining (or accuracy-control loop) from the checkpoint folder it "
                   "left (<output>.ckpt); same options and data as the interrupted run.")
@click.option("--no-checkpoint", is_flag=True, help="Write no checkpoint after each INQ step.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Also write an HTML report (index.html and PNG plots) into this directory; needs matplotlib.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(model, bits, data, output, portions, strategy, epochs, batch_size, lr, decay, optimizer, weight_decay,
            seed, exclude, loss, activations, granularity, range_rule, layer_bits, val_data, max_drop, no_retrain,
            resume, no_checkpoint, report_dir, quiet, **images):
    """Quantize MODEL's Conv/Gemm/MatMul weights to 0 or ±2^k in BITS bits with INQ and write the rewritten model."""
    preprocess = preprocess_from(images)
    training = RetrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, decay=decay, optimizer=optimizer,
                             weight_decay=weight_decay, strategy=strategy, seed=seed)
    config = QuantizeConfig(bits=bits, portions=parse_portions(portions) if portions else None,
                            exclude=tuple(exclude), retrain=not no_retrain, training=training, loss=loss,
                            activations=activations, granularity=granularity, range_rule=range_rule,
                            layer_bits=_parse_layer_bits(layer_bits))
    if data is None and not no_retrain:
        click.echo("Warning: no --data given: one-shot quantization without retraining (expect lower accuracy).",
                   err=True)
    with StepProgress(enabled=not quiet) as progress, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = quantize_file(model, config, data, output, progress, resume=resume,
                                checkpoints=not no_checkpoint, preprocess=preprocess, val_data_path=val_data,
                                max_drop=max_drop, report_dir=report_dir)
    for w in caught:
        click.echo(f"Warning: {w.message}", err=True)
    result = summary.result
    for note in result.normalization:
        click.echo(f"Normalized: {note}")
    mixed = {layer.node: result.levels[layer.weight].bits for layer in result.layers
             if result.levels[layer.weight].bits != bits}
    widths = "" if not mixed else " (" + ", ".join(f"{node} {b}" for node, b in mixed.items()) + ")"
    click.echo(f"Quantized {len(result.layers)} layer(s) to {bits} bits{widths} ({result.mode}); "
               f"{len(result.skipped)} layer(s) left float.")
    for note in result.notes:
        if data is not None or not note.startswith("one-shot"):  # without data the warning above said why
            click.echo(f"Note: {note}")
    if summary.control is not None:
        _echo_control(summary.control)
    if result.recipe is not None:
        for line in result.recipe.lines():
            click.echo(f"Retraining: {line}")
    folded = result.batchnorm.summary() if result.batchnorm is not None else None
    if folded:
        click.echo(f"BatchNormalization: {folded}.")
    for group in group_reasons(result.skipped):
        click.echo(f"  float: {group.summary()}")
    if summary.rewrite_check:
        worst = max(c.max_abs_diff for c in summary.rewrite_check)
        click.echo(f"Rewrite check: com.inq ops match the float model with the same weights (max diff {worst:.3g}).")
    if result.activation_mode is not None:
        echo_mode(result.activation_mode)
    if summary.validation is not None:
        v = summary.validation
        rows = [(c.name, c.max_abs_diff, c.cosine, c.sqnr_db, percent(c.top1_agreement)) for c in v.outputs]
        click.echo(table(["output vs original", "max |diff|", "cosine", "SQNR dB", "top-1 agree"], rows))
        if v.accuracy_original is not None:
            click.echo(f"Accuracy on --data: original {percent(v.accuracy_original)}, "
                       f"quantized {percent(v.accuracy_quantized)}")
    click.echo(f"Wrote {summary.output}" + (f" with its weights in {summary.external_data}"
                                            if summary.external_data else " (one file)"))
    if summary.report is not None:
        click.echo(f"Wrote the report {summary.report}")


def _parse_layer_bits(values: tuple[str, ...]) -> dict[str, int]:
    layer_bits: dict[str, int] = {}
    for value in values:
        node, sep, width = value.rpartition("=")
        if not sep or not node or not width.strip().isdigit():
            raise ConfigError(f"--layer-bits takes NODE=B (e.g. conv1=6), got {value!r}")
        if node in layer_bits:
            raise ConfigError(f"--layer-bits gives node {node} twice")
        layer_bits[node] = int(width)
    return layer_bits


def _echo_control(control) -> None:
    click.echo(f"Accuracy control on --val-data ({control.metric}, float model {control.reference:.2f}%): drop "
               + " -> ".join(f"{d:.2f}" for d in control.drops) + f" points over {control.runs} run(s), "
               f"{control.evaluations} one-layer measurement(s).")
    for change in control.applied:
        after = "float" if change.bits_after is None else f"{change.bits_after} bits"
        click.echo(f"  {', '.join(change.nodes)}: {change.bits_before} bits -> {after}: {change.reason}")
    if control.met:
        click.echo(f"Max drop {control.max_drop:g} held: drop {control.drop:.2f} points.")
    else:
        click.echo(f"Warning: max drop {control.max_drop:g} not met: nothing left to relax; wrote the run with the "
                   f"smallest drop ({control.drop:.2f} points).", err=True)
