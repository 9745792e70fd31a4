"""Starting a sweep or a search from the command line's options: which options go together, every
point (or every value a search may propose) validated, the layout and the price, then ONE
submission. `deltajobs sweep JOB ...` parses, calls `prepare_launch` and, unless it is a dry run,
`.submit()` on what that returns, and prints; the decisions are here.

    options = SweepOptions(grid=[...], max_parallel=2, ...)  # SpecError: options that do not go together
    launch = prepare_launch(job, options, overrides, settings, cluster_flag, backend)
    launch.chosen_note      # a line to tell the user before anything else (grid and random sweeps)
    launch.estimate_note()  # the worst case, as billed, of all the array tasks
    launch.submit(settings, backend, yes)  # the budget guard, then the submission
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltajobs.charge.budget import check_budget
from deltajobs.charge.estimate import describe_count, estimate_job
from deltajobs.errors import SpecError
from deltajobs.jobs.pipeline import check_parents
from deltajobs.spec.context import active_cluster
from deltajobs.sweep.layout import Layout, plan_layout
from deltajobs.sweep.plan import SweepPlan, SweepSpec, job_label, parse_sweep, plan_sweep
from deltajobs.sweep.search import SearchSpec, parse_search, resolve_search
from deltajobs.sweep.submit import (
    SweepSubmission,
    new_sweep_id,
    render_sweep,
    submit_search,
    submit_sweep,
    sweep_dir_for,
    task_job,
)

if TYPE_CHECKING:
    from deltajobs.backends.base import Backend
    from deltajobs.spec.resolve import Overrides, ResolvedJob
    from deltajobs.spec.settings import Settings


@dataclass
class SweepOptions:
    """The options of `deltajobs sweep JOB ...`, as given (None and defaults: not given), checked on
    construction: options of the other kind (a search's to a grid or random sweep, and back) are
    refused naming the flag, and a grid or random sweep's --grid, --range and --random are parsed."""

    grid: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    random_points: int | None = None
    seed: int = 0
    sets: list[str] = field(default_factory=list)
    max_parallel: int | None = None
    per_task: int | None = None
    pack: int = 1
    stagger: float = 0.0
    search: str | None = None
    trials: int | None = None
    choices: list[str] = field(default_factory=list)
    prune: str = "none"
    objective: str = "val_acc"
    direction: str | None = None
    budget_su: float | None = None
    storage: str | None = None
    points: SweepSpec | None = field(init=False, default=None)  # a grid or random sweep's, parsed

    def __post_init__(self) -> None:
        if self.search is not None:
            if self.random_points is not None:
                raise SpecError("--random", "is for random sweeps; a search draws its own: use --search random")
            if self.per_task is not None or self.pack > 1 or self.stagger:
                raise SpecError(
                    "--per-task", "--per-task, --pack and --stagger are for grid and random sweeps, not --search"
                )
            return
        searching = [self.trials is not None, bool(self.choices), self.prune != "none", self.budget_su is not None]
        if any(searching) or self.storage is not None or self.direction is not None:
            raise SpecError(
                "--search",
                "--trials, --choice, --prune, --direction, --budget-su and --storage need --search tpe|random|grid",
            )

        self.points = parse_sweep(self.grid, self.ranges, self.random_points, self.seed, self.sets)


@dataclass(frozen=True)
class SweepLaunch:
    """A grid or random sweep, every point validated and laid out in array tasks; not submitted."""

    plan: SweepPlan
    layout: Layout
    task: ResolvedJob  # what one array task reserves (its walltime covers its points)
    tasks: int
    max_parallel: int | None
    charges: bool

    @property
    def chosen_note(self) -> str:
        """How many points per task were chosen for the user ("" when the user chose)."""
        return self.layout.chosen

    def warnings(self) -> list[str]:
        """What will go wrong that can be seen before submitting (the payload's: `Payload.warnings`)."""
        return self.task.payload.warnings()

    @property
    def grouping(self) -> str:
        """` in N tasks of K points (...)`, or "" for one point per task."""
        return self.layout.in_tasks(self.tasks, self.task.spec.resources.time)

    def estimate_note(self) -> str | None:
        """The worst case of all the tasks, as billed (each pays a minimum charge, if the profile has
        one); None on a backend that charges nothing."""

        if not self.charges:
            return None
        noun = "points" if not self.layout.grouped else f"tasks of {self.layout.points_per_task} points"
        return f"estimate: at most {describe_count(estimate_job(self.task), self.tasks, noun)}"

    def dry_run(self, settings: Settings) -> tuple[str, str]:
        """A new sweep id and the array script SLURM would get for it; nothing is written."""

        sweep_id = new_sweep_id()
        sweep_dir = sweep_dir_for(settings, self.plan.name, sweep_id)
        return sweep_id, render_sweep(self.plan, sweep_dir, self.max_parallel, self.layout)

    def submit(self, settings: Settings, backend: Backend, yes: bool) -> SweepSubmission:
        """The budget guard over all the tasks (BudgetError unless `yes`), then one submission."""

        check_parents(self.task, settings, backend)
        if self.charges:
            check_budget(self.task, settings, yes, count=self.tasks)
        return submit_sweep(self.plan, settings, backend, self.max_parallel, layout=self.layout)


@dataclass(frozen=True)
class SearchLaunch:
    """An adaptive search, every value it may propose validated; its workers not yet submitted."""

    label: str  # the job as the sweep records it: a spec name, or a script's or command's label
    search: SearchSpec
    resolved: ResolvedJob  # the job without search parameters: what the workers' script runs
    workers: int
    charges: bool
    chosen_note: str = ""

    def warnings(self) -> list[str]:
        """What will go wrong that can be seen before submitting (the payload's: `Payload.warnings`)."""
        return self.resolved.payload.warnings()

    def estimate_note(self) -> str | None:
        """The worst case of the workers' array (one task per worker), and --budget-su's cap."""

        if not self.charges:
            return None
        est = estimate_job(self.resolved)
        cap = f"; capped at {self.search.budget_su:g} SU by --budget-su" if self.search.budget_su is not None else ""
        return f"estimate: at most {describe_count(est, self.workers, 'workers')}{cap}"

    def submit(self, settings: Settings, backend: Backend, yes: bool) -> SweepSubmission:
        """The budget guard (unless --budget-su caps the search below the workers' worst case), then
        ONE array of workers sharing the study."""

        check_parents(self.resolved, settings, backend)
        budget = self.search.budget_su
        if self.charges and (budget is None or budget > estimate_job(self.resolved).array_su(self.workers)):
            check_budget(self.resolved, settings, yes, count=self.workers)
        return submit_search(self.label, self.resolved, self.search, settings, backend, self.workers)

    def study(self, sweep_dir: Path) -> str:
        """Where the study lives: --storage's URL, or the journal file in the sweep directory."""
        return self.search.storage_url or str(sweep_dir / "study.journal")


def prepare_launch(
    job: str | dict[str, Any],
    options: SweepOptions,
    overrides: Overrides,
    settings: Settings,
    cluster_flag: str | None,
    backend: Backend,
) -> SweepLaunch | SearchLaunch:
    """Validate every point (or every value a search may propose) on the cluster (--cluster, else the
    config's or the detected one) and lay the sweep out; a SpecError names the flag or the point.
    `job` is a spec name or path, or the raw spec of a script or command (`payloads.command_line_spec`)."""

    if options.points is None:
        return _prepare_search(job, options, overrides, settings, cluster_flag, backend)

    cluster = active_cluster(settings, cluster_flag)
    plan = plan_sweep(job, options.points, overrides, settings, cluster, require_account=backend.needs_account)
    layout = plan_layout(
        plan.resolved,
        settings,
        per_task=options.per_task,
        pack=options.pack,
        stagger_s=options.stagger,
        max_parallel=options.max_parallel,
        charges=backend.charges,
    )
    task, tasks = task_job(plan, options.max_parallel, layout)
    return SweepLaunch(plan, layout, task, tasks, options.max_parallel, backend.charges)


def _prepare_search(
    job: str | dict[str, Any],
    options: SweepOptions,
    overrides: Overrides,
    settings: Settings,
    cluster_flag: str | None,
    backend: Backend,
) -> SearchLaunch:

    assert options.search is not None
    spec = parse_search(
        options.search,
        options.trials,
        options.ranges,
        [*options.grid, *options.choices],  # a --grid's values are choices to a search
        options.prune,
        options.objective,
        options.seed,
        options.budget_su,
        options.storage,
        options.direction,
    )
    cluster = active_cluster(settings, cluster_flag)
    spec, resolved = resolve_search(job, spec, overrides, settings, cluster, require_account=backend.needs_account)
    label = job if isinstance(job, str) else job_label(job)
    workers = min(options.max_parallel or 1, spec.trials)
    return SearchLaunch(label, spec, resolved, workers, backend.charges)
