"""`deltajobs registry rebuild`: the job registry is a cache of the run directories; rebuild it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JsonOpt

registry_app = typer.Typer(
    no_args_is_help=True,
    help="The job registry: rebuild it from the run directories.\n\n"
    "The job registry (a cache of the run directories): `rebuild` it when it is damaged or gone.",
)
app.add_typer(registry_app, name="registry")


@registry_app.command("rebuild")
def rebuild_command(
    more: Annotated[
        list[Path] | None,
        typer.Option("--from", help="Another runs directory to read too (an earlier runs_dir); repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recreate the registry from the run directories.

    Recreate the registry from the run directories (job.json and sweep-row.json; older runs from
    spec.yaml, submitit's files and sweep.json) and the scheduler (one squeue and one sacct bring
    states and SU up to date). The old file is kept beside the new one."""
    from deltajobs.registry.rebuild import rebuild
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    done = rebuild(settings, [p.expanduser() for p in more or []])
    if as_json:
        emit_json(
            {
                "registry": str(done.path),
                "kept_as": str(done.kept_as) if done.kept_as else None,
                "damaged": done.damaged,
                "jobs": done.jobs,
                "sweeps": done.sweeps,
                "inferred": done.inferred,
                "from_old": done.from_old,
                "skipped": done.skipped,
                "warning": done.warning,
            }
        )
    else:
        typer.echo(f"rebuilt {done.path}: {done.jobs} jobs, {done.sweeps} sweeps from {settings.runs_path}")
        if done.kept_as:
            typer.echo(f"  the {'damaged' if done.damaged else 'old'} file is kept as {done.kept_as}")
        if done.inferred:
            typer.echo(f"  {done.inferred} jobs from runs older than job.json (spec.yaml and submitit's files)")
        if done.from_old:
            typer.echo(f"  {done.from_old} jobs kept from the old file (their run directories hold no record)")
        for line in done.skipped:
            note(f"skipped {line}")
    if done.warning:
        note(f"{done.warning}: states are as the run directories recorded them")
        raise typer.Exit(3)
