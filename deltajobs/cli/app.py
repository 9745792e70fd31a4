"""The Typer app, output helpers and the error boundary."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from deltajobs.errors import DeltaJobsError

app = typer.Typer(
    name="deltajobs",
    help="Take a PyTorch experiment from a laptop to the GPUs of a SLURM cluster (NCSA Delta) and back. "
    "Every command takes --remote NAME (or DELTAJOBS_REMOTE) to run on a login node over SSH "
    "(`deltajobs remote add`), --no-remote to run here.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None if os.environ.get("NO_COLOR") else "rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def note(message: str) -> None:
    """A line for the user on stderr (keeps stdout clean for scripts and --json)."""
    typer.echo(f"deltajobs: {message}", err=True)


def _print_version(value: bool) -> None:
    if value:
        from deltajobs import __version__

        typer.echo(f"deltajobs {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print deltajobs' version and exit."
    ),
) -> None:
    """The options before the command."""


def main() -> None:
    """The entry point: a command for a remote (--remote NAME, DELTAJOBS_REMOTE, `remote:` in the
    config) is taken out of Typer's hands and run there (deltajobs.remote.dispatch)."""
    try:
        from deltajobs.remote.dispatch import route

        args, code = route(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        app(args=args)
    except DeltaJobsError as err:
        typer.echo(f"deltajobs: error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("deltajobs: interrupted", err=True)
        sys.exit(130)
