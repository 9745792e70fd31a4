"""`deltajobs sweep status|results|cancel|logs`: reading a sweep back, point by point (the commands
that start one, `sweep JOB ...` and `sweep resume`, are in sweeps.py; searches' views in searches.py).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from deltajobs.cli.app import emit_json, note
from deltajobs.cli.options import JsonOpt, PlotOpt, SweepIdArg
from deltajobs.cli.sweeps import sweep_app


@sweep_app.command("status")
def status_command(sweep_id: SweepIdArg, as_json: JsonOpt = False) -> None:
    """Each point's parameters and state.

    One squeue and one sacct call for the whole sweep."""
    from deltajobs.cli.views import table
    from deltajobs.clusters.units import format_duration
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.results import format_value, short_key
    from deltajobs.sweep.trials import is_search

    settings = load_settings()
    if is_search(settings, sweep_id):
        from deltajobs.cli.searches import search_status

        search_status(settings, sweep_id, as_json)
        return
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
def results_command(
    sweep_id: SweepIdArg,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="Rank by this result (*acc: higher is better, else lower); default test_acc, or a script's *acc.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
) -> None:
    """One row per point, best first by --metric.

    The best is marked *; each row: parameters, state and metrics."""
    from deltajobs.cli.views import table
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.results import (
        TABLE_METRICS,
        best_point,
        default_metric,
        format_value,
        higher_is_better,
        rank,
        short_key,
    )
    from deltajobs.sweep.trials import is_search

    settings = load_settings()
    if is_search(settings, sweep_id):
        from deltajobs.cli.searches import search_results

        search_results(settings, sweep_id, plot, as_json)
        return
    from deltajobs.sweep.advise import sweep_advice

    view = _load(sweep_id)
    advice = sweep_advice(view)
    metric = metric or default_metric(view.points)
    ranked = rank(view.points, metric)
    best = best_point(view.points, metric)
    if plot is not None:
        from deltajobs.sweep.plot import plot_sweep

        plot_sweep(view, metric, plot)
    if as_json:
        emit_json(
            {
                **_header(view),
                "metric": metric,
                "higher_is_better": higher_is_better(metric),
                "best": best.to_dict() if best else None,
                "points": [p.to_dict() for p in ranked],
                "advice": [a.to_dict() for a in advice],
            }
        )
        return
    names = [metric, *[m for m in TABLE_METRICS if m != metric and any(m in p.metrics for p in view.points)]]
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
    if advice:
        typer.echo("\nAdvice:\n" + "\n".join(f"  - {a.message}" for a in advice))
    if plot is not None:
        typer.echo(f"wrote {plot}")
    if view.warning:
        note(view.warning)


@sweep_app.command("cancel")
def cancel_command(sweep_id: SweepIdArg) -> None:
    """Cancel every point of a sweep that is not final.

    One scancel for the whole array."""
    from deltajobs.slurm.parse import FINAL_STATES
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.submit import cancel_sweep

    before = _load(sweep_id)
    done = cancel_sweep(load_settings(), sweep_id)
    if len({p.job_id for p in before.points}) == len(before.points):
        typer.echo(f"{sweep_id}: cancelled {len(done)} point(s)")  # one point per task
        return
    tasks = set(done)
    points = [p for p in before.points if p.job_id in tasks and p.state not in FINAL_STATES]
    typer.echo(f"{sweep_id}: cancelled {len(points)} point(s) in {len(tasks)} array task(s)")


@sweep_app.command("logs")
def logs_command(
    sweep_id: SweepIdArg,
    point: Annotated[int, typer.Option("--point", min=0, help="The point whose log to print.")],
    err: Annotated[bool, typer.Option("--err", help="Its stderr (tracebacks) instead of stdout.")] = False,
) -> None:
    """One point's log.

    Its task's log, or its part of it when the task ran several points."""
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.pointlog import point_log

    found = point_log(load_settings(), sweep_id, point, err)
    if found.note:
        note(found.note)
    typer.echo(found.text, nl=False)


def _load(sweep_id: str) -> Any:
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.results import load_sweep

    return load_sweep(load_settings(), sweep_id)


def _header(view: Any) -> dict[str, Any]:
    keys = ("sweep_id", "job", "backend", "array_job_id", "sweep_dir", "keys", "log_keys")
    return {key: getattr(view, key) for key in keys} | {"counts": view.counts}


def _summary(view: Any) -> str:
    how = f"array job {view.array_job_id}" if view.array_job_id else view.backend
    counts = ", ".join(f"{n} {state}" for state, n in sorted(view.counts.items()))
    return f"sweep {view.sweep_id} of {view.job} ({how}) in {view.sweep_dir}: {len(view.points)} points, {counts}\n"
