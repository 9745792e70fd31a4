"""`deltajobs sweep`: run a job over a grid or random points as one SLURM job array, and read it back.

    deltajobs sweep mnist --grid train.lr=1e-3,1e-2 --grid train.batch_size=32,64 --max-parallel 2
    deltajobs sweep status sw-1a2b3c
    deltajobs sweep results sw-1a2b3c --metric test_acc --plot sweep.png

`sweep` is a group (resume here; status, results, cancel and logs in sweep_views.py) whose first
argument may also be a JOB: `SweepGroup` reads anything that is not a subcommand's name as
`sweep run JOB ...`.
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
    from deltajobs.spec.settings import load_settings
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
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.submit import resume_search

    settings = load_settings()
    backend = chosen_backend(local, settings)
    sub = resume_search(settings, sweep_id, backend, trials, workers)
    if as_json:
        emit_json(sub.to_dict())
        return
    how = f"array job {sub.array_job_id}" if sub.array_job_id else "local jobs"
    typer.echo(f"resumed search {sub.sweep_id}: {len(sub.points)} workers as {how} ({sub.backend})")
