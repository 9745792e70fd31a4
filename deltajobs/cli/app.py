"""The Typer app, shared options, output helpers and the error boundary."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

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

# Options shared by every command that takes a job spec.
SetOpt = typer.Option(None, "--set", help="Override a spec key, dotted and typed by the schema: --set train.epochs=3")
AccountOpt = typer.Option(None, "--account", "-A", help="Account to charge, e.g. bgvu-delta-gpu.")
PartitionOpt = typer.Option(None, "--partition", "-p", help="Partition, e.g. gpuA100x4.")
NodesOpt = typer.Option(None, "--nodes", "-N", help="Number of nodes.")
GpusOpt = typer.Option(None, "--gpus", help="GPUs per node.")
CpusOpt = typer.Option(None, "--cpus", help="CPUs per task.")
MemOpt = typer.Option(None, "--mem", help="Memory per node, e.g. 16G.")
TimeOpt = typer.Option(None, "--time", "-t", help="Walltime HH:MM:SS.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of text.")
ClusterOpt = typer.Option(None, "--cluster", help="Cluster profile (delta, minidelta); default: detected.")


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"deltajobs: error: {message}", err=True)
    raise typer.Exit(code)


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
