"""Submitting a sweep whose array tasks each run several points (`--per-task`, `--pack`, `--stagger`).

The same one array as `submit.py` submits, through the backend's `submit_array`, with one
composite call per task (`tasks.PointsTask`) instead of one point's call. The sweep directory:

    <runs>/<name>-<stamp>-<sweep_id>/
        job.sh, sweep.json, submitit/   as for any sweep (submitit's files are per task)
        point-000/ ...                  one run directory per point, exactly as without grouping
        tasks/task-000/                 each task's registry record (job.json) and spec (its walltime)

The registry holds one row per task (what SLURM knows); `results.load_sweep` turns them back into
points from each point's own files. A task's walltime is its rounds of points x --time.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import yaml

from deltajobs.backends.base import Backend, Submission
from deltajobs.clusters.units import format_walltime
from deltajobs.injob.provenance import one_submission
from deltajobs.jobs.lifecycle import job_row, prepare_run_dir
from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings
from deltajobs.sweep.layout import Layout
from deltajobs.sweep.plan import SweepPlan
from deltajobs.sweep.record import SweepSubmission, point_dir, sweep_dir_for, write_record
from deltajobs.sweep.tasks import PointsTask

TASKS_DIR = "tasks"


def task_dir(sweep_dir: Path, task: int) -> Path:
    return sweep_dir / TASKS_DIR / f"task-{task:03d}"


def with_walltime(resolved: ResolvedJob, seconds: int) -> ResolvedJob:
    """The same job with another walltime (a task's: its points' rounds)."""
    resources = dataclasses.replace(resolved.spec.resources, time=format_walltime(seconds))
    return dataclasses.replace(resolved, spec=dataclasses.replace(resolved.spec, resources=resources))


def submit_grouped(
    plan: SweepPlan, settings: Settings, backend: Backend, max_parallel: int | None, sweep_id: str, layout: Layout
) -> SweepSubmission:
    """Create the sweep directory, submit one array of tasks of several points, record it; undo all
    of it on failure."""
    count = len(plan.points)
    groups = layout.groups(count)
    wave = max_parallel or len(groups)
    sweep_dir = sweep_dir_for(settings, plan.name, sweep_id)
    dirs = [point_dir(sweep_dir, p.index, count) for p in plan.points]
    walltime = layout.walltime_s(plan.resolved[0].spec.resources.seconds, wave)
    jobs = [with_walltime(plan.resolved[group[0]], walltime) for group in groups]
    task_dirs = [task_dir(sweep_dir, t) for t in range(len(groups))]
    with Registry.open(settings) as registry:  # an unreadable registry fails here, before anything exists
        sweep_dir.mkdir(parents=True, exist_ok=False)
        tasks: list[Submission] = []
        try:
            with one_submission():  # git asked once for every point's copy of the code
                for resolved, run_dir in zip(plan.resolved, dirs, strict=True):
                    prepare_run_dir(resolved, run_dir)
            for job, run_dir in zip(jobs, task_dirs, strict=True):
                run_dir.mkdir(parents=True)
                (run_dir / "spec.yaml").write_text(yaml.safe_dump(job.spec.to_dict(), sort_keys=False))
            calls = [
                PointsTask(
                    [plan.resolved[i].payload.task(dirs[i]) for i in group],
                    [str(dirs[i]) for i in group],
                    group,
                    [plan.points[i].label for i in group],
                    pack=layout.pack,
                    stagger_s=layout.stagger_of(t, wave),
                    max_requeues=jobs[t].spec.resources.max_requeues,
                )
                for t, group in enumerate(groups)
            ]
            array = backend.submit_array(jobs, task_dirs, sweep_dir, max_parallel, calls=calls)
            tasks = array.points
            sub = SweepSubmission(
                sweep_id, backend.name, sweep_dir, array.array_job_id, array.max_parallel, array.log_pattern, tasks
            )
            sub = dataclasses.replace(sub, groups=groups, point_dirs=dirs)
            params = {**plan.params(), "max_parallel": array.max_parallel, **layout_params(layout, groups)}
            write_record(sub, params)
            _record(registry, plan, sub, params, backend, jobs)
        except BaseException:
            if tasks:
                backend.undo([t.job_id for t in tasks])
            shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
    return sub


def layout_params(layout: Layout, groups: list[list[int]]) -> dict[str, Any]:
    """What the sweep's registry row keeps of its layout: load_sweep maps tasks to points with it."""
    return {"per_task": layout.per_task, "pack": layout.pack, "stagger": layout.stagger_s, "tasks": groups}


def _record(
    registry: Registry,
    plan: SweepPlan,
    sub: SweepSubmission,
    params: dict[str, Any],
    backend: Backend,
    jobs: list[ResolvedJob],
) -> None:
    """The sweep's row and one row per task. A task of several points keeps no spec key: its
    elapsed time is not one point's, and typical runtimes are per point."""
    assert sub.groups is not None
    registry.add_sweep(sub.sweep_id, plan.job, sub.backend, params, str(sub.sweep_dir))
    try:
        rows = []
        for t, (job, task, group) in enumerate(zip(jobs, sub.points, sub.groups, strict=True)):
            row = job_row(job, task, backend, sub.sweep_id, t)
            rows.append(row if len(group) == 1 else dataclasses.replace(row, spec_key=None))
        registry.add_many(rows)
        if sub.array_job_id:
            registry.set_sweep_array(sub.sweep_id, sub.array_job_id)
    except BaseException:
        registry.delete_sweep(sub.sweep_id)
        raise
