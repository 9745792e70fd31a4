"""Commands about job specs: render (the dry run) and list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json
from deltajobs.cli.options import ClusterOpt, JobFlags, JsonOpt, PayloadArg, ScriptArgs, job_flags


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
    """Print the exact sbatch script a job would be submitted with (a dry run: nothing is submitted)."""
    from deltajobs.spec.context import new_run_dir
    from deltajobs.spec.render import render
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    resolved = flags.resolve(job, settings, args=script_args)
    script = render(resolved, run_dir or new_run_dir(settings, resolved.spec.name))
    if output is None:
        typer.echo(script, nl=False)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(script)
    tmp.replace(output)
    typer.echo(f"wrote {output}", err=True)


@app.command("list")
def list_command(cluster: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """List job specs, models and the active cluster's partitions."""
    from deltajobs.clusters.profile import load_profile
    from deltajobs.spec.context import active_cluster
    from deltajobs.spec.resolve import find_job, job_names, read_job
    from deltajobs.spec.settings import load_settings
    from deltajobs.train.config import MODEL_NAMES

    settings = load_settings()
    profile = load_profile(active_cluster(settings, cluster))
    jobs = []
    for name in job_names():
        raw = read_job(find_job(name))
        train = raw.get("train") or {}
        jobs.append({"job": name, "model": train.get("model", "mlp"), "description": raw.get("description", "")})
    partitions = [
        {
            "partition": p.name,
            "kind": p.kind,
            "gpus": p.gpus,
            "cpus": p.cpus,
            "mem_gb": p.mem_gb,
            "max_time": p.max_time,
            "charge_factor": p.charge_factor,
            "gpu_type": p.gpu_type,
            "interactive": p.interactive,
            "preempt": p.preempt,
            "default": p.name == profile.default_partition,
        }
        for p in profile.partitions.values()
    ]
    if as_json:
        emit_json({"cluster": profile.name, "jobs": jobs, "models": list(MODEL_NAMES), "partitions": partitions})
        return
    typer.echo("Job specs:")
    for j in jobs:
        typer.echo(f"  {j['job']:<16} {j['model']:<7} {j['description']}")
    typer.echo(f"\nModels: {', '.join(MODEL_NAMES)}")
    typer.echo(f"\nPartitions on {profile.name}:")
    typer.echo(f"  {'partition':<24}{'GPUs':>5}{'CPUs':>6}{'mem':>7}{'max time':>10}{'factor':>8}  notes")
    for p in partitions:
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
    """Read an existing sbatch script as sbatch does, check every directive against the cluster's
    limits, say what sbatch would ignore or what will hurt, and price it; nothing is submitted.
    Exit 2 if sbatch or the cluster would refuse it."""
    from deltajobs.charge.advice import one_unit_fewer
    from deltajobs.charge.estimate import describe, estimate_job
    from deltajobs.errors import SpecError
    from deltajobs.payloads.sbatch import directive_for, read
    from deltajobs.payloads.sbatch_lint import lint
    from deltajobs.spec.settings import load_settings

    if not script.is_file():
        raise SpecError("SCRIPT", f"no such file: {script}")
    parsed = read(script)
    findings = lint(parsed)
    errors = [f.message for f in findings if f.level == "error"]
    warnings = [f.message for f in findings if f.level == "warning"]
    resolved, estimate, fewer = None, None, None
    if not errors:
        try:
            resolved = flags.resolve(str(script), load_settings(), require_account=False)
            estimate = estimate_job(resolved)
            fewer = one_unit_fewer(estimate, resolved.spec.resources.ntasks_per_node)
        except SpecError as err:
            where = directive_for(parsed, err.field)
            errors.append(f"{where}: {err}" if where else str(err))
    if as_json:
        emit_json(
            {
                "script": str(script),
                "ok": not errors,
                "errors": errors,
                "warnings": warnings,
                "job": resolved.spec.to_dict() if resolved else None,
                "estimate": estimate.to_dict() if estimate else None,
                "one_fewer": fewer.to_dict() if fewer else None,
            }
        )
    else:
        if resolved is not None:
            res = resolved.spec.resources
            gpus = f" x {res.gpus_per_node} GPU" if res.gpus_per_node else ""
            typer.echo(
                f"{script}: {resolved.spec.name} on {resolved.partition.name} ({resolved.profile.name}): "
                f"{res.nodes} node{'s' if res.nodes != 1 else ''}{gpus}, {res.ntasks_per_node} task(s) x "
                f"{res.cpus_per_task} CPU, {res.mem}, {res.time}"
            )
        for message in errors:
            typer.echo(f"  error: {message}")
        for message in warnings:
            typer.echo(f"  warning: {message}")
        if estimate is not None:
            typer.echo(f"  estimate: at most {describe(estimate)}")
        if fewer is not None:  # whole units (DeltaAI): the request that bills one unit fewer
            typer.echo(f"  advice: {fewer.message}")
        typer.echo("ok: `deltajobs submit " + str(script) + "` submits it as written" if not errors else "refused")
    if errors:
        raise typer.Exit(2)
