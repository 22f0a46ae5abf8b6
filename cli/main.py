"""Entry point: the command group, and the one place user errors become `Error: ...` and an exit code."""

from __future__ import annotations

import os
import sys
import traceback

import click

from inq_onnx import __version__
from inq_onnx.errors import InqError

from . import convert, demo, export, info, quantize, validate


_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def _exit_code(args) -> int:
    """Run click without its own error printing and map every failure to one `Error: ...` line."""
    try:
        result = click.Group.main(*args, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except _NoArgsIsHelp as exc:  # bare `inq-onnx`: the help text, not an error
        click.echo(exc.format_message())
        return 0
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code
    except InqError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Error: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug, not a user error: one line, and the traceback on request
        if os.environ.get("INQ_ONNX_DEBUG"):
            traceback.print_exc()
        click.echo(f"Error: internal error: {type(exc).__name__}: {exc} (set INQ_ONNX_DEBUG=1 for the traceback)",
                   err=True)
        return 3


class _InqGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        sys.exit(_exit_code((self, args, prog_name or "inq-onnx", complete_var)))


@click.group(cls=_InqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="inq-onnx")
def cli() -> None:
    """Incremental Network Quantization for ONNX models: power-of-two weights in b bits, run by com.inq ops."""


for command in (quantize.command, validate.command, info.command, export.command, convert.command, demo.command):
    cli.add_command(command)

if __name__ == "__main__":
    cli()
