"""How a sweep's points map onto array tasks: one each (the default), K one after another
(`--per-task K`), K at once on one GPU (`--pack K`), or both; and `--stagger`. Checked against the
partition's time limit and the cluster's MaxArraySize before anything is created.

Why group points: every array task pays its start-up (module load, imports, data) and, where the
profile has a minimum charge per task (Delta: 1 SU, `charge_minimum`), at least that minimum. A task
of K points pays both once. Its walltime covers K points (`--time` is per point): K x --time.

Without `--per-task`, K comes from the typical runtime of the sweep's points (the registry's
finished runs with the same spec) and the minimum: as many points as fit under the minimum charge,
so that a task's formula charge reaches the minimum it pays anyway. No history, no minimum (or a
backend that charges nothing): K = 1, one point per task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deltajobs.charge.advice import points_under_minimum
from deltajobs.charge.estimate import Estimate, estimate_job, format_hours
from deltajobs.clusters.units import format_walltime
from deltajobs.errors import SpecError
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings


@dataclass(frozen=True)
class Layout:
    """`per_task` rounds of `pack` points each per array task; `stagger_s` between task starts."""

    per_task: int = 1
    pack: int = 1
    stagger_s: float = 0.0
    chosen: str = ""  # the line that says why deltajobs chose per_task ("" when given or 1)
    notes: list[str] = field(default_factory=list)

    @property
    def points_per_task(self) -> int:
        return self.per_task * self.pack

    @property
    def grouped(self) -> bool:
        """Whether tasks run deltajobs' composite call (else: one point per task, as always)."""
        return self.points_per_task > 1 or self.stagger_s > 0

    def groups(self, count: int) -> list[list[int]]:
        """The point indexes of each task: task i holds points i*K .. i*K+K-1."""
        size = self.points_per_task
        return [list(range(start, min(count, start + size))) for start in range(0, count, size)]

    def tasks(self, count: int) -> int:
        return math.ceil(count / self.points_per_task)

    def stagger_of(self, task: int, wave: int) -> float:
        """How long task `task` waits before its first start: stagger x its place in its wave."""
        return self.stagger_s * (task % max(1, wave))

    def in_tasks(self, tasks: int, walltime: str = "") -> str:
        """` in 4 array tasks (4 one after another; walltime 00:12:00 each, for all of them)` for a grouped
        sweep's summary; "" otherwise."""
        if not self.grouped:
            return ""
        how = []
        if self.per_task > 1:
            how.append(f"{self.per_task} one after another")
        if self.pack > 1:
            how.append(f"{self.pack} at once on one GPU")
        if self.stagger_s:
            how.append(f"starts {self.stagger_s:g} s apart")
        covers = f"walltime {walltime} each, for all of them" if walltime else "each task's walltime covers them"
        return f" in {tasks} array task{'s' if tasks != 1 else ''} ({', '.join(how)}; {covers})"

    def walltime_s(self, point_seconds: int, wave: int) -> int:
        """A task's walltime: its rounds of points, plus the longest stagger wait."""
        return self.per_task * point_seconds + math.ceil(self.stagger_of(wave - 1, wave))


def plan_layout(
    resolved: list[ResolvedJob],
    settings: Settings,
    *,
    per_task: int | None,
    pack: int,
    stagger_s: float,
    max_parallel: int | None,
    charges: bool,
) -> Layout:
    """The layout of a sweep of `resolved` points; SpecError naming the flag for what cannot run."""
    first, count = resolved[0], len(resolved)
    if per_task is not None and per_task < 1:
        raise SpecError("--per-task", f"{per_task}; give 1 or more points per array task")
    if pack < 1:
        raise SpecError("--pack", f"{pack}; give 1 or more points per GPU")
    if stagger_s < 0:
        raise SpecError("--stagger", f"{stagger_s:g}; give 0 or more seconds")
    res = first.spec.resources
    if pack > 1 and res.nodes * res.ntasks_per_node > 1:
        raise SpecError(
            "--pack",
            f"packs points that run as one process each; this job runs {res.nodes * res.ntasks_per_node} "
            "(--nodes 1 and at most one GPU per point)",
        )
    largest = largest_per_task(first, stagger_s, count, pack, max_parallel)
    if per_task is not None:
        layout = Layout(per_task, pack, stagger_s)
        if per_task > largest:
            raise SpecError("--per-task", _too_long(first, per_task, largest, stagger_s))
    else:
        layout = choose_per_task(resolved, settings, pack, stagger_s, largest, charges)
    check_array_size(first, count, layout)
    return layout


def largest_per_task(job: ResolvedJob, stagger_s: float, count: int, pack: int, max_parallel: int | None) -> int:
    """The most rounds of points a task's walltime may hold on the strictest of the job's partitions."""
    limit = min(p.max_seconds for p in job.partitions)
    point_s = job.spec.resources.seconds
    wave = max_parallel or math.ceil(count / pack)
    wait = math.ceil(stagger_s * (max(1, wave) - 1))
    return max(0, (limit - wait) // point_s)


def _too_long(job: ResolvedJob, per_task: int, largest: int, stagger_s: float) -> str:
    part = min(job.partitions, key=lambda p: p.max_seconds)
    walltime = format_walltime(per_task * job.spec.resources.seconds)
    staggered = " with the --stagger waits" if stagger_s else ""
    fix = f"the largest that fits is {largest}" if largest else "no task fits; lower --stagger"
    return (
        f"{per_task} points x --time {job.spec.resources.time} = {walltime}{staggered} exceeds {part.name}'s "
        f"limit of {part.max_time}: {fix} (or lower --time)"
    )


def choose_per_task(
    resolved: list[ResolvedJob], settings: Settings, pack: int, stagger_s: float, largest: int, charges: bool
) -> Layout:
    """K from the points' typical runtime and the minimum charge per task (see the module)."""
    if not charges:
        return Layout(1, pack, stagger_s)
    est = estimate_job(resolved[0])
    if est.minimum.su <= 0 or est.minimum.array_tasks != "each":
        return Layout(1, pack, stagger_s)
    typical = typical_point_seconds(settings, resolved)
    if typical is None or typical <= 0:
        return Layout(1, pack, stagger_s)
    rounds = points_under_minimum(est, typical)
    rounds = min(rounds, largest, math.ceil(len(resolved) / pack))
    if rounds <= 1:
        return Layout(1, pack, stagger_s)
    tasks = math.ceil(len(resolved) / (rounds * pack))
    rounds = math.ceil(len(resolved) / (tasks * pack))  # as even as the same number of tasks allows
    return Layout(rounds, pack, stagger_s, chosen=chosen_line(rounds * pack, typical, est))


def chosen_line(points: int, typical_s: float, est: Estimate) -> str:
    """`8 points per task: points take ~2 min, the minimum charge is 1 SU per array task (NCSA ...)`."""
    source = f" ({est.minimum.source})" if est.minimum.source else ""
    return (
        f"{points} points per task: points take ~{format_hours(typical_s)}, the minimum charge is "
        f"{est.minimum.su:g} SU per array task{source}; --per-task 1 for one point per task"
    )


def typical_point_seconds(settings: Settings, resolved: list[ResolvedJob]) -> float | None:
    """The median elapsed time of the finished runs that share a spec with any of the points."""
    from deltajobs.registry.history import median_elapsed, spec_key
    from deltajobs.registry.store import Registry, db_path

    if not db_path(settings).exists():
        return None
    with Registry(db_path(settings)) as registry:
        return median_elapsed(registry, [spec_key(r) for r in resolved])


def check_array_size(job: ResolvedJob, count: int, layout: Layout) -> None:
    """Refuse a sweep needing more array tasks than the cluster's MaxArraySize allows (task ids run
    0..MaxArraySize-1), naming the --per-task that fits."""
    limit = job.profile.max_array_size
    tasks = layout.tasks(count)
    if limit is None or tasks <= limit:
        return
    need = math.ceil(count / (limit * layout.pack))
    source = f"; {job.profile.max_array_size_source}" if job.profile.max_array_size_source else ""
    fewer = math.ceil(count / (need * layout.pack))
    raise SpecError(
        "--per-task",
        f"{count} points need {tasks} array tasks; {job.profile.title or job.profile.name} takes at most "
        f"{limit} per array (MaxArraySize{source}): --per-task {need} runs them in {fewer} tasks",
    )
