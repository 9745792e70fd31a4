"""Commands about job specs: render (the dry run) and list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json
from deltajobs.cli.options import ClusterOpt, JobFlags, JsonOpt, PayloadArg, ScriptArgs, job_flags
from deltajobs.osutil import write_atomic


@app.command("render")
@job_flags
def render_command(
    job: PayloadArg = None,
    script_args: ScriptArgs = None,
    *,
    flags: JobFlags,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory to render for (default: a new one).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the script to FILE instead of stdout.")
    ] = None,
) -> None:
    """Print the sbatch script a job would get; submit nothing.

    Print the exact sbatch script a job would be submitted with (a dry run: nothing is submitted)."""
    from deltajobs.spec.context import new_run_dir
    from deltajobs.spec.render import render
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    resolved = flags.resolve(job, settings, args=script_args)
    script = render(resolved, run_dir or new_run_dir(settings, resolved.spec.name))
    if output is None:
        typer.echo(script, nl=False)
        return
    write_atomic(output, script)
    typer.echo(f"wrote {output}", err=True)


@app.command("list")
def list_command(cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """List job specs, models and the active cluster's partitions."""
    from deltajobs.spec.catalogue import catalogue
    from deltajobs.spec.settings import load_settings

    found = catalogue(load_settings(), cluster)
    if as_json:
        emit_json(found.to_dict())
        return
    typer.echo("Job specs:")
    for j in found.jobs:
        typer.echo(f"  {j['job']:<16} {j['model']:<7} {j['description']}")
    typer.echo(f"\nModels: {', '.join(found.models)}")
    typer.echo(f"\nPartitions on {found.cluster}:")
    typer.echo(f"  {'partition':<24}{'GPUs':>5}{'CPUs':>6}{'mem':>7}{'max time':>10}{'factor':>8}  notes")
    for p in found.partitions:
        flags = [("interactive", p["interactive"]), ("preemptible", p["preempt"]), ("default", p["default"])]
        notes = [str(p["gpu_type"] or ""), *(word for word, on in flags if on)]
        mark = "  " + ", ".join(n for n in notes if n) if any(notes) else ""
        typer.echo(
            f"  {p['partition']:<24}{p['gpus']:>5}{p['cpus']:>6}{p['mem_gb']:>6g}G{p['max_time']:>10}"
            f"{p['charge_factor']:>8g}{mark}"
        )


@app.command("check")
@job_flags
def check_command(
    script: Annotated[Path, typer.Argument(help="An sbatch script, e.g. train.sh.", show_default=False)],
    flags: JobFlags,
    as_json: JsonOpt = False,
) -> None:
    """Check an sbatch script as sbatch would, and price it.

    Read an existing sbatch script as sbatch does, check every directive against the cluster's
    limits, say what sbatch would ignore or what will hurt, and price it (an array per task and in
    all); nothing is submitted.
    Exit 2 if sbatch or the cluster would refuse it."""
    from deltajobs.charge.advice import one_unit_fewer
    from deltajobs.charge.estimate import describe
    from deltajobs.charge.sbatch_price import account_membership, price, price_array
    from deltajobs.clusters.profile import load_profile
    from deltajobs.errors import SpecError
    from deltajobs.payloads.sbatch import read
    from deltajobs.payloads.sbatch_file import to_spec_dict
    from deltajobs.payloads.sbatch_lint import lint
    from deltajobs.payloads.sbatch_request import check_request
    from deltajobs.spec.settings import load_settings

    if not script.is_file():
        raise SpecError("SCRIPT", f"no such file: {script}")
    if flags.sets:
        raise SpecError("--set", "takes job spec keys; an sbatch script takes sbatch's: -A, -p, -N, --gpus, --mem, -t")
    settings = load_settings()
    profile = load_profile(flags.cluster_name(settings))
    parsed = read(script)
    overrides = {option: str(value) for name, option in SBATCH_FLAGS.items() if (value := getattr(flags, name))}
    checked = check_request(parsed, profile, overrides, settings.account)
    findings = sorted(lint(parsed) + checked.findings, key=lambda f: f.line or 0)
    request = checked.request
    if request is not None and not any(f.level == "error" for f in findings):
        findings += account_membership(parsed, request.account)
    errors = [f.message for f in findings if f.level == "error"]
    warnings = [f.message for f in findings if f.level == "warning"]
    estimate = price(request) if request is not None and not errors else None
    array = price_array(request, estimate) if request is not None and estimate is not None else None
    fewer = one_unit_fewer(estimate, request.tasks_per_node) if request is not None and estimate is not None else None
    if as_json:
        emit_json(
            {
                "script": str(script),
                "ok": not errors,
                "errors": errors,
                "warnings": warnings,
                "job": to_spec_dict(parsed) if request is not None else None,
                "defaults": list(request.defaults) if request is not None else [],
                "estimate": estimate.to_dict() if estimate else None,
                "array": array.to_dict() if array else None,
                "one_fewer": fewer.to_dict() if fewer else None,
            }
        )
    else:
        if request is not None:
            gpus = f" x {request.gpus_per_node} GPU" if request.gpus_per_node else ""
            nodes = f"{request.nodes} node{'s' if request.nodes != 1 else ''}"
            typer.echo(
                f"{script}: {request.name} on {','.join(p.name for p in request.partitions)} ({profile.name}): "
                f"{nodes}{gpus}, {request.tasks_per_node} task(s) x {request.cpus_per_task} CPU, {request.mem}, "
                f"{request.time}"
            )
        for message in errors:
            typer.echo(f"  error: {message}")
        for message in warnings:
            typer.echo(f"  warning: {message}")
        if request is not None and request.defaults and estimate is not None:
            title = profile.title or profile.name
            typer.echo(f"  defaults: {title}'s, where the script says nothing: {', '.join(request.defaults)}")
        if estimate is not None:
            typer.echo(f"  estimate: at most {describe(estimate)}" + (" per task" if array else ""))
        if array is not None:
            typer.echo(f"  array: {array.describe()}")
        if fewer is not None:  # whole units (DeltaAI): the request that bills one unit fewer
            typer.echo(f"  advice: {fewer.message}")
        if errors:
            typer.echo("refused")
        elif array is not None:
            typer.echo(
                f"ok: `deltajobs submit {script}` submits it as written and tracks its {array.array.tasks} tasks"
            )
        else:
            typer.echo(f"ok: `deltajobs submit {script}` submits it as written")
    if errors:
        raise typer.Exit(2)


# The job flags that are sbatch options too, by sbatch's name: `check` applies them over the script's.
SBATCH_FLAGS = {
    "account": "account",
    "partition": "partition",
    "nodes": "nodes",
    "gpus": "gpus-per-node",
    "cpus": "cpus-per-task",
    "mem": "mem",
    "time": "time",
    "constraint": "constraint",
}
