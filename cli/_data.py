"""The `--data` option and the image preprocessing options shared by the commands that read data."""

from __future__ import annotations

import click

from inq_onnx.images import CHANNEL_ORDERS, LAYOUTS, Preprocess, parse_floats, parse_size

DATA_HELP = (".npz with one array per model input and optional int 'labels', or a folder of images (one "
             "sub-folder per class gives labels) read with the preprocessing options")

_PREPROCESS = ("resize", "crop", "mean", "std", "scale", "channels", "layout")


def image_options(command):
    """Add --resize, --crop, --mean, --std, --scale, --channels, --layout (in that order in --help)."""
    options = [
        click.option("--resize", metavar="N|H,W",
                     help="Images: scale the shorter side to N (aspect kept), or to exactly H,W [default: as is]."),
        click.option("--crop", metavar="N|H,W", help="Images: the center NxN (or HxW) after resizing."),
        click.option("--mean", metavar="M[,M,M]", help="Images: subtracted per channel after --scale [default: 0]."),
        click.option("--std", metavar="S[,S,S]", help="Images: divides per channel after the mean [default: 1]."),
        click.option("--scale", type=float, help="Images: pixel values 0..255 times this [default: 1/255]."),
        click.option("--channels", type=click.Choice(CHANNEL_ORDERS),
                     help="Images: channel order, or one gray channel [default: rgb]."),
        click.option("--layout", type=click.Choice(LAYOUTS), help="Images: input layout [default: nchw]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def preprocess_from(options: dict) -> Preprocess | None:
    """The Preprocess the options describe (removing them from `options`); None when none was given."""
    given = {name: options.pop(name) for name in _PREPROCESS}
    if all(value is None for value in given.values()):
        return None
    values = {"resize": parse_size(given["resize"], "--resize"), "crop": parse_size(given["crop"], "--crop"),
              "mean": parse_floats(given["mean"], "--mean"), "std": parse_floats(given["std"], "--std"),
              "scale": given["scale"], "channels": given["channels"], "layout": given["layout"]}
    return Preprocess(**{name: value for name, value in values.items() if value is not None})
