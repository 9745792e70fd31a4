"""Commands about job specs: render (the dry run) and list."""

from __future__ import annotations

from pathlib import Path

import typer

from deltajobs.cli.app import (
    AccountOpt,
    ClusterOpt,
    CpusOpt,
    GpusOpt,
    JsonOpt,
    MemOpt,
    NodesOpt,
    PartitionOpt,
    SetOpt,
    TimeOpt,
    app,
    emit_json,
)
from deltajobs.context import active_cluster, new_run_dir
from deltajobs.spec import Overrides, resolve_job


def overrides(
    sets: list[str] | None,
    account: str | None,
    partition: str | None,
    nodes: int | None,
    gpus: int | None,
    cpus: int | None,
    mem: str | None,
    time: str | None,
) -> Overrides:
    return Overrides(
        sets=list(sets or []),
        account=account,
        partition=partition,
        nodes=nodes,
        gpus=gpus,
        cpus=cpus,
        mem=mem,
        time=time,
    )


@app.command()
def render(
    job: str = typer.Argument(..., help="A job name from jobs/ (e.g. mnist) or a path to a YAML spec."),
    sets: list[str] = SetOpt,
    account: str = AccountOpt,
    partition: str = PartitionOpt,
    nodes: int = NodesOpt,
    gpus: int = GpusOpt,
    cpus: int = CpusOpt,
    mem: str = MemOpt,
    time: str = TimeOpt,
    cluster: str = ClusterOpt,
    run_dir: Path = typer.Option(None, "--run-dir", help="Run directory to render for (default: a new one)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the script to FILE instead of stdout."),
) -> None:
    """Print the exact sbatch script a job would be submitted with (a dry run: nothing is submitted)."""
    from deltajobs.config import load_settings
    from deltajobs.render import render as render_script

    settings = load_settings()
    resolved = resolve_job(
        job,
        overrides(sets, account, partition, nodes, gpus, cpus, mem, time),
        settings,
        active_cluster(settings, cluster),
    )
    script = render_script(resolved, run_dir or new_run_dir(settings, resolved.spec.name))
    if output is None:
        typer.echo(script, nl=False)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(script)
    tmp.replace(output)
    typer.echo(f"wrote {output}", err=True)


@app.command("list")
def list_(
    cluster: str = ClusterOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List job specs, models and the active cluster's partitions."""
    from deltajobs.cluster import load_profile
    from deltajobs.config import load_settings
    from deltajobs.spec import find_job, job_names, read_job
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
    typer.echo(f"  {'partition':<24}{'GPUs':>5}{'CPUs':>6}{'mem':>7}{'max time':>10}{'factor':>8}")
    for p in partitions:
        mark = " (default)" if p["default"] else ""
        typer.echo(
            f"  {p['partition']:<24}{p['gpus']:>5}{p['cpus']:>6}{p['mem_gb']:>6g}G{p['max_time']:>10}"
            f"{p['charge_factor']:>8g}{mark}"
        )
