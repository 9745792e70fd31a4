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
    help="Take a PyTorch experiment from a laptop to the GPUs of a SLURM cluster (NCSA Delta) and back.",
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


def main() -> None:
    try:
        app()
    except DeltaJobsError as err:
        typer.echo(f"deltajobs: error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("deltajobs: interrupted", err=True)
        sys.exit(130)
