"""`deltajobs sweep`: run a job over a grid or random points as one SLURM job array, and read it back.

    deltajobs sweep mnist --grid train.lr=1e-3,1e-2 --grid train.batch_size=32,64 --max-parallel 2
    deltajobs sweep status sw-1a2b3c
    deltajobs sweep results sw-1a2b3c --metric test_acc --plot sweep.png

`sweep` is a group (resume here; status, results, cancel and logs in sweep_views.py) whose first
argument may also be a JOB: `SweepGroup` reads anything that is not a subcommand's name as
`sweep run JOB ...`. Which options go together, the points, the layout and the price are
`deltajobs.sweep.launch`'s; this module parses and prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from deltajobs.spec.settings import Settings
    from deltajobs.sweep.launch import SearchLaunch, SweepLaunch


class SweepGroup(TyperGroup):
    """A group whose first argument, unless it names a subcommand, is the JOB of `sweep run`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: click's or typer's vendored Context
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    cls=SweepGroup,
    no_args_is_help=True,
    help="Sweep a grid or random points, or search, as ONE job array.\n\n"
    "Sweep a job over a grid or random points as ONE SLURM job array, or search it adaptively with Optuna "
    "(--search); then `status` and `results` of it.",
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
    """Sweep JOB over a grid, random points or a search.

    `deltajobs sweep JOB ...` for short: every point is validated, then all are submitted."""
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.launch import SearchLaunch, SweepOptions, prepare_launch

    settings = load_settings()
    backend = chosen_backend(local, settings)
    options = SweepOptions(
        grid=grid or [],
        ranges=ranges or [],
        random_points=random_points,
        seed=seed,
        sets=flags.sets or [],
        max_parallel=max_parallel,
        per_task=per_task,
        pack=pack,
        stagger=stagger,
        search=search,
        trials=trials,
        choices=choices or [],
        prune=prune,
        objective=objective,
        direction=direction,
        budget_su=budget_su,
        storage=storage,
    )
    source = flags.job(job, script_args)
    overrides = flags.overrides_for(settings)  # every point reads its --after parents' directories
    launch = prepare_launch(source, options, overrides, settings, flags.cluster, backend)
    for line in launch.warnings():  # on stderr before anything is submitted, --json too
        note(f"warning: {line}")
    if launch.chosen_note and not as_json:
        note(launch.chosen_note)
    if dry_run:
        print_dry_run(launch, settings, as_json)
        return
    estimate = launch.estimate_note()
    if estimate is not None and not as_json:
        note(estimate)
    sub = launch.submit(settings, backend, yes)
    if as_json:
        emit_json(sub.to_dict())
        return
    how = f"array job {sub.array_job_id}" if sub.array_job_id else "local jobs"
    if isinstance(launch, SearchLaunch):
        trials, workers = launch.search.trials, launch.workers
        typer.echo(f"submitted search {sub.sweep_id}: {trials} trials, {workers} workers as {how} ({sub.backend})")
        typer.echo(f"  sweep dir: {sub.sweep_dir}")
        typer.echo(f"  study:     {launch.study(sub.sweep_dir)}")
    else:
        points, tasks = len(launch.plan.points), launch.tasks
        limit = f", at most {sub.max_parallel} at once" if sub.max_parallel and sub.max_parallel < tasks else ""
        typer.echo(f"submitted sweep {sub.sweep_id}: {points} points{launch.grouping} as {how} ({sub.backend}{limit})")
        typer.echo(f"  sweep dir: {sub.sweep_dir}")
        typer.echo(f"  logs:      {sub.log_pattern}")
    typer.echo(f"  follow:    deltajobs sweep status {sub.sweep_id}")


def print_dry_run(launch: SweepLaunch | SearchLaunch, settings: Settings, as_json: bool) -> None:
    """`--dry-run`: a search's space and objective; a sweep's array script, then its points as comments."""
    from deltajobs.sweep.launch import SearchLaunch
    from deltajobs.sweep.plan import sweep_points_text

    if isinstance(launch, SearchLaunch):  # --json or not: the same three lines
        search = launch.search
        keys = ", ".join(k.removeprefix("run.params.") for k in search.keys)
        how = "max" if search.maximize else "min"
        typer.echo(
            f"{search.sampler} search of {launch.label} over {keys}: {search.trials} trials, "
            f"{launch.workers} worker(s), prune {search.pruner}"
        )
        typer.echo(f"objective: {search.objective} ({how}imize)")
        typer.echo("every value checked; nothing submitted (--dry-run)")
        return
    plan = launch.plan
    sweep_id, script = launch.dry_run(settings)
    if as_json:
        tasks = launch.layout.groups(len(plan.points))
        emit_json({"sweep_id": sweep_id, **plan.params(), "tasks": tasks, "script": script})
        return
    typer.echo(script, nl=False)  # first, so that `> sweep.sh` keeps the #! line first
    typer.echo(f"\n# {len(plan.points)} points of {plan.job}{launch.grouping}; nothing submitted (--dry-run)")
    typer.echo("\n".join(f"# {line}" for line in sweep_points_text(plan).splitlines()))


@sweep_app.command("resume")
def resume_command(
    sweep_id: SweepIdArg,
    trials: Annotated[int | None, typer.Option("--trials", help="Raise (or lower) the trials the search runs.")] = None,
    workers: Annotated[int | None, typer.Option("--max-parallel", min=1, help="Workers (default: as before).")] = None,
    local: LocalOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a search's workers again: no finished trial is lost.

    After `sweep cancel`, or when their walltime ran out."""
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
