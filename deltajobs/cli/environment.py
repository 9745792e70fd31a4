"""The job's software environment from the login node: `doctor` checks it, `shell` opens it on a
compute node."""

from __future__ import annotations

import copy
import os
import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JobFlags, JsonOpt, PayloadArg, ScriptArgs, YesOpt, job_flags

BARE = {"name": "shell", "run": {"command": "bash", "snapshot": False}}  # no JOB: the environment alone
if TYPE_CHECKING:
    from deltajobs.spec.resolve import ResolvedJob
    from deltajobs.spec.settings import Settings

MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@app.command("doctor")
@job_flags
def doctor_command(
    job: PayloadArg = None, script_args: ScriptArgs = None, *, flags: JobFlags, as_json: JsonOpt = False
) -> None:
    """Check what a job will need, with the fix for each problem.

    Check on the login node what a job will need (account, directories, modules, the job's python
    and its packages, data, script), with the fix for each problem. Exit 1 if any check fails."""
    from deltajobs.environment.doctor import run_checks, summary
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    resolved = resolve(job, flags, script_args, settings, require_account=False)  # a missing account is a check
    checks = run_checks(resolved, settings, program=job is not None or flags.command is not None)
    if as_json:
        emit_json({"job": resolved.spec.name, "cluster": resolved.profile.name, **summary(checks)})
    else:
        typer.echo(f"deltajobs doctor: {resolved.spec.name} on {resolved.profile.name} ({resolved.partition.name})")
        for check in checks:
            typer.echo(f"  {MARKS[check.status]}  {check.name}: {check.detail}")
            if check.fix and check.status != "ok":
                typer.echo(f"        fix: {check.fix}")
        failed = sum(c.status == "fail" for c in checks)
        typer.echo("all checks passed" if not failed else f"{failed} problem(s): fix them, then run doctor again")
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command("shell")
@job_flags
def shell_command(
    job: PayloadArg = None,
    *,
    flags: JobFlags,
    yes: YesOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the srun command and the set-up; start nothing.")
    ] = False,
) -> None:
    """A shell on a compute node with the job's modules and venv.

    An interactive shell on a compute node with the job's modules and venv: validated and priced
    like a job, on the partition's -interactive sibling unless you pick one."""
    from deltajobs.charge.budget import check_budget
    from deltajobs.charge.estimate import describe, estimate_job
    from deltajobs.environment.shell import interactive, shell_argv, write_rcfile
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    resolved = resolve(job, flags, None, settings)
    picked = flags.partition is not None
    resolved = interactive(resolved, picked=picked, settings=settings, flags=flags)
    sibling = resolved.partition.name + "-interactive"
    if not picked and sibling in resolved.profile.partitions:  # the walltime did not fit there
        limit = resolved.profile.partitions[sibling].max_time
        note(f"on {resolved.partition.name}: {resolved.spec.resources.time} is longer than {sibling} allows ({limit})")
    estimate = estimate_job(resolved)
    check_budget(resolved, settings, yes)
    rcfile = write_rcfile(resolved, settings)
    argv = shell_argv(resolved, rcfile)
    note(f"at most {describe(estimate)}")
    if dry_run:
        typer.echo(shlex.join(argv))
        typer.echo(rcfile.read_text(), nl=False)
        return
    os.execvp(argv[0], argv)


def resolve(
    job: str | None, flags: JobFlags, script_args: list[str] | None, settings: Settings, require_account: bool = True
) -> ResolvedJob:
    """JOB as the other commands read it; none: the environment alone (a bare `bash` job)."""
    from deltajobs.spec.resolve import resolve_job

    source = flags.job(job, script_args) if job is not None or flags.command else copy.deepcopy(BARE)
    return resolve_job(source, flags.overrides, settings, flags.cluster_name(settings), require_account=require_account)
