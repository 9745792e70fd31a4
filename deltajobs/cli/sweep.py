"""`deltajobs sweep`: run a job over a grid or random points as one SLURM job array, and read it back.

    deltajobs sweep mnist --grid train.lr=1e-3,1e-2 --grid train.batch_size=32,64 --max-parallel 2
    deltajobs sweep status sw-1a2b3c
    deltajobs sweep results sw-1a2b3c --metric test_acc --plot sweep.png

`sweep` is a group (status, results, cancel) whose first argument may also be a JOB: `SweepGroup`
reads anything that is not a subcommand's name as `sweep run JOB ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

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
    note,
)
from deltajobs.cli.jobs import overrides
from deltajobs.cli.lifecycle import choose_backend
from deltajobs.cli.tables import table


class SweepGroup(TyperGroup):
    """A group whose first argument, unless it names a subcommand, is the JOB of `sweep run`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: click's or typer's vendored Context
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    cls=SweepGroup,
    no_args_is_help=True,
    help="Sweep a job over a grid or random points as ONE SLURM job array; then `status` and `results` of it.",
)
app.add_typer(sweep_app, name="sweep")

GridOpt = typer.Option(None, "--grid", help="KEY=V1,V2,...: values of a train.* key; axes multiply.")
RangeOpt = typer.Option(None, "--range", help="KEY=LO:HI[:log]: where --random draws a key from.")
PlotOpt = typer.Option(None, "--plot", help="Write the metric against each swept key to this PNG.")
SweepIdArg = typer.Argument(..., help="The sweep id `deltajobs sweep JOB ...` printed, e.g. sw-1a2b3c.")


@sweep_app.command("run")
def run(
    job: str = typer.Argument(..., help="A job name from jobs/ (e.g. mnist) or a path to a YAML spec."),
    grid: list[str] = GridOpt,
    random_points: int = typer.Option(None, "--random", help="Draw N random points from the --range's."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random draws (the same seed, the same points)."),
    ranges: list[str] = RangeOpt,
    max_parallel: int = typer.Option(
        None, "--max-parallel", min=1, help="Run at most P points at once (SLURM's %P; local default: the CPUs)."
    ),
    sets: list[str] = SetOpt,
    account: str = AccountOpt,
    partition: str = PartitionOpt,
    nodes: int = NodesOpt,
    gpus: int = GpusOpt,
    cpus: int = CpusOpt,
    mem: str = MemOpt,
    time_: str = TimeOpt,
    cluster: str = ClusterOpt,
    local: bool = typer.Option(False, "--local", help="Run the points on this machine (submitit's local executor)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, print the points and the array script."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Submit even if the estimate exceeds balance or cap."),
    as_json: bool = JsonOpt,
) -> None:
    """Sweep JOB (`deltajobs sweep JOB ...` for short): every point is validated, then all are submitted."""
    from deltajobs.config import load_settings
    from deltajobs.context import active_cluster
    from deltajobs.sweep import parse_sweep, plan_sweep, sweep_points_text
    from deltajobs.sweep_submit import new_sweep_id, render_sweep, submit_sweep, sweep_dir_for

    settings = load_settings()
    backend = choose_backend(local, settings)
    spec = parse_sweep(grid or [], ranges or [], random_points, seed, sets or [])
    plan = plan_sweep(
        job,
        spec,
        overrides(sets, account, partition, nodes, gpus, cpus, mem, time_),
        settings,
        active_cluster(settings, cluster),
        require_account=backend == "slurm",
    )
    if dry_run:
        sweep_id = new_sweep_id()
        script = render_sweep(plan, sweep_dir_for(settings, plan.name, sweep_id), max_parallel)
        if as_json:
            emit_json({"sweep_id": sweep_id, **plan.params(), "script": script})
            return
        typer.echo(script, nl=False)  # first, so that `> sweep.sh` keeps the #! line first
        typer.echo(f"\n# {len(plan.points)} points of {plan.job}; nothing submitted (--dry-run)")
        typer.echo("\n".join(f"# {line}" for line in sweep_points_text(plan).splitlines()))
        return
    if backend == "slurm":
        guard_sweep_budget(plan, settings, yes, quiet=as_json)
    sub = submit_sweep(plan, settings, backend, max_parallel)
    if as_json:
        emit_json(sub.to_dict())
        return
    how = f"array job {sub.array_job_id}" if sub.array_job_id else "local jobs"
    limit = f", at most {sub.max_parallel} at once" if sub.max_parallel and sub.max_parallel < len(plan.points) else ""
    typer.echo(f"submitted sweep {sub.sweep_id}: {len(plan.points)} points as {how} ({sub.backend}{limit})")
    typer.echo(f"  sweep dir: {sub.sweep_dir}")
    typer.echo(f"  logs:      {sub.log_pattern}")
    typer.echo(f"  follow:    deltajobs sweep status {sub.sweep_id}")


def guard_sweep_budget(plan: Any, settings: Any, yes: bool, quiet: bool) -> None:
    """Show the worst-case charge of all points; refuse a point over the cap or a total over the balance."""
    from deltajobs import charge
    from deltajobs.errors import BudgetError

    count = len(plan.points)
    per_point = charge.estimate_job(plan.resolved[0]).su
    total = per_point * count
    if not quiet:
        note(f"estimate: at most {charge.format_su(total)} SU ({count} points x {charge.format_su(per_point)} SU)")
    if yes:
        return
    cap = settings.max_su_per_job
    if cap is not None and per_point > cap:
        raise BudgetError(f"each point may take {per_point:.2f} SU, over max_su_per_job {cap:g}; pass --yes")
    account = plan.resolved[0].spec.account
    balance = charge.balance(account)
    if balance is not None and total > balance:
        raise BudgetError(
            f"the sweep may take {total:.2f} SU, over the balance of {account} ({balance:g} SU); pass --yes"
        )


@sweep_app.command("status")
def status(sweep_id: str = SweepIdArg, as_json: bool = JsonOpt) -> None:
    """Each point's parameters and state (one squeue and one sacct call for the whole sweep)."""
    from deltajobs.sweep_results import format_value, short_key
    from deltajobs.units import format_duration

    view = _load(sweep_id)
    if as_json:
        emit_json({**_header(view), "points": [p.to_dict() for p in view.points]})
    else:
        typer.echo(_summary(view))
        rows = [
            [str(p.index), *[format_value(p.params.get(k)) for k in view.keys], p.job_id, p.shown_state]
            + [format_duration(p.elapsed_s) if p.elapsed_s is not None else "", p.reason or ""]
            for p in view.points
        ]
        headers = ["POINT", *[short_key(k).upper() for k in view.keys], "JOBID", "STATE", "ELAPSED", "REASON"]
        typer.echo(table(headers, rows))
    if view.warning:
        note(view.warning)
        raise typer.Exit(3)


@sweep_app.command("results")
def results(
    sweep_id: str = SweepIdArg,
    metric: str = typer.Option(
        "test_acc", "--metric", help="Rank by this result (*acc: higher is better, else lower)."
    ),
    as_json: bool = JsonOpt,
    plot: Path = PlotOpt,
) -> None:
    """One row per point, best first by --metric (marked *): parameters, state and metrics."""
    from deltajobs.sweep_results import TABLE_METRICS, best_point, format_value, higher_is_better, rank, short_key

    view = _load(sweep_id)
    ranked = rank(view.points, metric)
    best = best_point(view.points, metric)
    if plot is not None:
        from deltajobs.sweep_plot import plot_sweep

        plot_sweep(view, metric, plot)
    if as_json:
        emit_json(
            {
                **_header(view),
                "metric": metric,
                "higher_is_better": higher_is_better(metric),
                "best": best.to_dict() if best else None,
                "points": [p.to_dict() for p in ranked],
            }
        )
        return
    names = [metric, *[m for m in TABLE_METRICS if m != metric]]
    rows = [
        ["*" if p is best else "", str(p.index), *[format_value(p.params.get(k)) for k in view.keys], p.shown_state]
        + [f"{p.metrics[m]:.4f}" if m in p.metrics else "" for m in names]
        for p in ranked
    ]
    typer.echo(_summary(view))
    headers = ["", "POINT", *[short_key(k).upper() for k in view.keys], "STATE", *[m.upper() for m in names]]
    typer.echo(table(headers, rows))
    if best is not None:
        params = ", ".join(f"{k}={format_value(best.params.get(k))}" for k in view.keys)
        typer.echo(f"\nbest by {metric}: point {best.index} ({params}) in {best.run_dir}")
    if plot is not None:
        typer.echo(f"wrote {plot}")
    if view.warning:
        note(view.warning)


@sweep_app.command("cancel")
def cancel(sweep_id: str = SweepIdArg) -> None:
    """Cancel every point of a sweep that is not final (one scancel for the array)."""
    from deltajobs.config import load_settings
    from deltajobs.lifecycle import cancel as cancel_rows
    from deltajobs.registry import Registry

    registry = Registry.open(load_settings())
    try:
        registry.sweep(sweep_id)
        done = cancel_rows(registry, registry.query(sweep_id=sweep_id))
    finally:
        registry.close()
    typer.echo(f"{sweep_id}: cancelled {len(done)} point(s)")


def _load(sweep_id: str) -> Any:
    from deltajobs.config import load_settings
    from deltajobs.registry import Registry
    from deltajobs.sweep_results import load_sweep

    registry = Registry.open(load_settings())
    try:
        return load_sweep(registry, sweep_id)
    finally:
        registry.close()


def _header(view: Any) -> dict[str, Any]:
    keys = ("sweep_id", "job", "backend", "array_job_id", "sweep_dir", "keys", "log_keys")
    return {key: getattr(view, key) for key in keys} | {"counts": view.counts}


def _summary(view: Any) -> str:
    how = f"array job {view.array_job_id}" if view.array_job_id else view.backend
    counts = ", ".join(f"{n} {state}" for state, n in sorted(view.counts.items()))
    return f"sweep {view.sweep_id} of {view.job} ({how}) in {view.sweep_dir}: {len(view.points)} points, {counts}\n"
