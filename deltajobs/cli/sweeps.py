"""`deltajobs sweep`: run a job over a grid or random points as one SLURM job array, and read it back.

    deltajobs sweep mnist --grid train.lr=1e-3,1e-2 --grid train.batch_size=32,64 --max-parallel 2
    deltajobs sweep status sw-1a2b3c
    deltajobs sweep results sw-1a2b3c --metric test_acc --plot sweep.png

`sweep` is a group (status, results, cancel) whose first argument may also be a JOB: `SweepGroup`
reads anything that is not a subcommand's name as `sweep run JOB ...`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import (
    JobFlags,
    JsonOpt,
    LocalOpt,
    PayloadArg,
    PlotOpt,
    ScriptArgs,
    SweepIdArg,
    YesOpt,
    chosen_backend,
    job_flags,
)
from deltajobs.errors import SpecError


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


@sweep_app.command("run")
@job_flags
def run_command(
    job: PayloadArg = None,
    script_args: ScriptArgs = None,
    *,
    flags: JobFlags,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="KEY=V1,V2,...: values of a train.* key or a script's --KEY; axes multiply."),
    ] = None,
    random_points: Annotated[
        int | None, typer.Option("--random", help="Draw N random points from the --range's.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random draws (the same seed, the same points).")] = 0,
    ranges: Annotated[
        list[str] | None,
        typer.Option("--range", help="KEY=LO:HI[:log]: where --random draws a key from, or --search searches."),
    ] = None,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel",
            min=1,
            help="Run at most P points at once (SLURM's %P; local default: the CPUs); a search's workers.",
        ),
    ] = None,
    per_task: Annotated[
        int | None,
        typer.Option(
            "--per-task",
            min=1,
            help="Run K points one after another in each array task (its walltime: K x --time); "
            "default: from the points' typical runtime and the minimum charge per task, else 1.",
        ),
    ] = None,
    pack: Annotated[
        int,
        typer.Option("--pack", min=1, help="Run K points at once on one GPU in each task (separate processes)."),
    ] = 1,
    stagger: Annotated[
        float,
        typer.Option(
            "--stagger", min=0, help="Seconds between the starts of array tasks that would start together (charged)."
        ),
    ] = 0.0,
    search: Annotated[
        str | None, typer.Option("--search", help="Adaptive search with Optuna: tpe (Bayesian), random or grid.")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="How many trials the search runs in all.")] = None,
    choices: Annotated[
        list[str] | None, typer.Option("--choice", help="KEY=V1,V2,...: values a search chooses from.")
    ] = None,
    prune: Annotated[
        str, typer.Option("--prune", help="Stop bad trials early: hyperband, asha, median or none.")
    ] = "none",
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="What the search optimises: val_acc, val_loss or train_loss; for a script, any key it reports.",
        ),
    ] = "val_acc",
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction", help="max or min (default: max when the objective's name has acc, score, auc or f1)."
        ),
    ] = None,
    budget_su: Annotated[
        float | None, typer.Option("--budget-su", help="Never spend more than this many SU on the search.")
    ] = None,
    storage: Annotated[
        str | None, typer.Option("--storage", help="An RDB URL for the study instead of the journal file.")
    ] = None,
    local: LocalOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, print the points and the array script.")
    ] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sweep JOB (`deltajobs sweep JOB ...` for short): every point is validated, then all are submitted."""
    from deltajobs.charge.budget import check_budget
    from deltajobs.charge.estimate import describe_count, estimate_job
    from deltajobs.config import load_settings
    from deltajobs.sweep.layout import plan_layout
    from deltajobs.sweep.plan import parse_sweep, plan_sweep, sweep_points_text
    from deltajobs.sweep.submit import new_sweep_id, render_sweep, submit_sweep, sweep_dir_for, task_job

    settings = load_settings()
    backend = chosen_backend(local, settings)
    if search is not None:
        if random_points is not None:
            raise SpecError("--random", "is for random sweeps; a search draws its own: use --search random")
        if per_task is not None or pack > 1 or stagger:
            raise SpecError(
                "--per-task", "--per-task, --pack and --stagger are for grid and random sweeps, not --search"
            )
        options = (search, trials, ranges or [], [*(grid or []), *(choices or [])], prune, objective)
        from deltajobs.cli.searches import start_search

        start_search(
            flags.job(job, script_args),
            flags,
            settings,
            backend,
            options,
            seed,
            budget_su,
            storage,
            max_parallel,
            dry_run,
            yes,
            as_json,
            direction,
        )
        return
    searching = [trials is not None, bool(choices), prune != "none", budget_su is not None, storage is not None]
    if any(searching) or direction is not None:
        raise SpecError(
            "--search",
            "--trials, --choice, --prune, --direction, --budget-su and --storage need --search tpe|random|grid",
        )
    spec = parse_sweep(grid or [], ranges or [], random_points, seed, flags.sets or [])
    plan = plan_sweep(
        flags.job(job, script_args),
        spec,
        flags.overrides,
        settings,
        flags.cluster_name(settings),
        require_account=backend.needs_account,
    )
    layout = plan_layout(
        plan.resolved,
        settings,
        per_task=per_task,
        pack=pack,
        stagger_s=stagger,
        max_parallel=max_parallel,
        charges=backend.charges,
    )
    if layout.chosen and not as_json:
        note(layout.chosen)
    one_task, tasks = task_job(plan, max_parallel, layout)
    grouping = layout.in_tasks(tasks, one_task.spec.resources.time)  # "" for one point per task
    if dry_run:
        sweep_id = new_sweep_id()
        script = render_sweep(plan, sweep_dir_for(settings, plan.name, sweep_id), max_parallel, layout)
        if as_json:
            emit_json(
                {"sweep_id": sweep_id, **plan.params(), "tasks": layout.groups(len(plan.points)), "script": script}
            )
            return
        typer.echo(script, nl=False)  # first, so that `> sweep.sh` keeps the #! line first
        typer.echo(f"\n# {len(plan.points)} points of {plan.job}{grouping}; nothing submitted (--dry-run)")
        typer.echo("\n".join(f"# {line}" for line in sweep_points_text(plan).splitlines()))
        return
    if backend.charges:
        if not as_json:  # each array task pays the minimum charge, if the profile has one
            noun = "points" if not layout.grouped else f"tasks of {layout.points_per_task} points"
            note(f"estimate: at most {describe_count(estimate_job(one_task), tasks, noun)}")
        check_budget(one_task, settings, yes, count=tasks)
    sub = submit_sweep(plan, settings, backend, max_parallel, layout=layout)
    if as_json:
        emit_json(sub.to_dict())
        return
    how = f"array job {sub.array_job_id}" if sub.array_job_id else "local jobs"
    limit = f", at most {sub.max_parallel} at once" if sub.max_parallel and sub.max_parallel < tasks else ""
    typer.echo(f"submitted sweep {sub.sweep_id}: {len(plan.points)} points{grouping} as {how} ({sub.backend}{limit})")
    typer.echo(f"  sweep dir: {sub.sweep_dir}")
    typer.echo(f"  logs:      {sub.log_pattern}")
    typer.echo(f"  follow:    deltajobs sweep status {sub.sweep_id}")


@sweep_app.command("resume")
def resume_command(
    sweep_id: SweepIdArg,
    trials: Annotated[int | None, typer.Option("--trials", help="Raise (or lower) the trials the search runs.")] = None,
    workers: Annotated[int | None, typer.Option("--max-parallel", min=1, help="Workers (default: as before).")] = None,
    local: LocalOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a search's workers again (after `sweep cancel` or their walltime): no finished trial is lost."""
    from deltajobs.config import load_settings
    from deltajobs.sweep.submit import resume_search

    settings = load_settings()
    backend = chosen_backend(local, settings)
    sub = resume_search(settings, sweep_id, backend, trials, workers)
    if as_json:
        emit_json(sub.to_dict())
        return
    how = f"array job {sub.array_job_id}" if sub.array_job_id else "local jobs"
    typer.echo(f"resumed search {sub.sweep_id}: {len(sub.points)} workers as {how} ({sub.backend})")


@sweep_app.command("status")
def status_command(sweep_id: SweepIdArg, as_json: JsonOpt = False) -> None:
    """Each point's parameters and state (one squeue and one sacct call for the whole sweep)."""
    from deltajobs.cli.views import table
    from deltajobs.config import load_settings
    from deltajobs.sweep.results import format_value, short_key
    from deltajobs.sweep.trials import is_search
    from deltajobs.units import format_duration

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
    """One row per point, best first by --metric (marked *): parameters, state and metrics."""
    from deltajobs.cli.views import table
    from deltajobs.config import load_settings
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
    """Cancel every point of a sweep that is not final (one scancel for the array)."""
    from deltajobs.config import load_settings
    from deltajobs.slurm import FINAL_STATES
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
    """One point's log: its task's log, or its part of it when the task ran several points."""
    from deltajobs.config import load_settings
    from deltajobs.sweep.pointlog import point_log

    found = point_log(load_settings(), sweep_id, point, err)
    if found.note:
        note(found.note)
    typer.echo(found.text, nl=False)


def _load(sweep_id: str) -> Any:
    from deltajobs.config import load_settings
    from deltajobs.sweep.results import load_sweep

    return load_sweep(load_settings(), sweep_id)


def _header(view: Any) -> dict[str, Any]:
    keys = ("sweep_id", "job", "backend", "array_job_id", "sweep_dir", "keys", "log_keys")
    return {key: getattr(view, key) for key in keys} | {"counts": view.counts}


def _summary(view: Any) -> str:
    how = f"array job {view.array_job_id}" if view.array_job_id else view.backend
    counts = ", ".join(f"{n} {state}" for state, n in sorted(view.counts.items()))
    return f"sweep {view.sweep_id} of {view.job} ({how}) in {view.sweep_dir}: {len(view.points)} points, {counts}\n"
