"""Submitting a validated sweep: one SLURM job array (ONE sbatch call of our rendered script), or
one local job per point. All or nothing: on any failure the sweep directory, the jobs and the
registry rows are removed again.

A sweep directory:

    <runs>/<name>-<stamp>-<sweep_id>/
        job.sh         the array script, exactly what sbatch got (SLURM only)
        sweep.json     the sweep id, array job id and every point's parameters
        submitit/      shared by the points: %A_%a_0_log.out, %A_%a_submitted.pkl, result pickles
        point-000/     one run directory per point: spec.yaml, checkpoint.pt, results.json
        point-001/ ...

Task i of the array runs point i: the pickle at submitit's `%A_%a_submitted.pkl` path for task i
is point i's `TrainJob`, which trains into point i's run directory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deltajobs.backends.base import Backend, Submission
from deltajobs.charge.estimate import estimate_job
from deltajobs.errors import SpecError
from deltajobs.jobs.lifecycle import cancel, job_row, prepare_run_dir
from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import ResolvedJob, resolve_job
from deltajobs.spec.settings import Settings
from deltajobs.sweep.layout import Layout
from deltajobs.sweep.plan import SweepPlan
from deltajobs.sweep.search import WORKERS_DIR, SearchSpec


def new_sweep_id() -> str:
    return f"sw-{secrets.token_hex(3)}"


def sweep_dir_for(settings: Settings, name: str, sweep_id: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (settings.runs_path / f"{name}-{stamp}-{sweep_id}").absolute()


def point_dir(sweep_dir: Path, index: int, count: int) -> Path:
    return sweep_dir / f"point-{index:0{max(3, len(str(count - 1)))}d}"


def render_sweep(plan: SweepPlan, sweep_dir: Path, max_parallel: int | None, layout: Layout | None = None) -> str:
    """The array script SLURM would get (for --dry-run)."""
    from deltajobs.backends.slurm import render_array

    job, tasks = task_job(plan, max_parallel, layout)
    return render_array(job, sweep_dir, tasks, max_parallel)


def task_job(plan: SweepPlan, max_parallel: int | None, layout: Layout | None) -> tuple[ResolvedJob, int]:
    """What one array task reserves (its walltime covers its points) and how many tasks there are."""
    if layout is None or not layout.grouped:
        return plan.resolved[0], len(plan.points)
    from deltajobs.sweep.grouped import with_walltime

    tasks = layout.tasks(len(plan.points))
    seconds = layout.walltime_s(plan.resolved[0].spec.resources.seconds, max_parallel or tasks)
    return with_walltime(plan.resolved[0], seconds), tasks


@dataclass(frozen=True)
class SweepSubmission:
    sweep_id: str
    backend: str
    sweep_dir: Path
    array_job_id: str | None
    max_parallel: int | None
    log_pattern: Path
    points: list[Submission] = field(default_factory=list)  # one per array task (a point each, by default)
    groups: list[list[int]] | None = None  # grouped sweeps: the point indexes each task runs
    point_dirs: list[Path] = field(default_factory=list)  # grouped sweeps: each point's run directory

    @property
    def point_count(self) -> int:
        return sum(len(g) for g in self.groups) if self.groups else len(self.points)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "sweep_id": self.sweep_id,
            "backend": self.backend,
            "sweep_dir": str(self.sweep_dir),
            "array_job_id": self.array_job_id,
            "max_parallel": self.max_parallel,
            "logs": str(self.log_pattern),
            "points": [{"index": i, **p.to_dict()} for i, p in enumerate(self.points)],
        }
        if self.groups:  # points, each with the task that runs it; the tasks beside them
            pairs = enumerate(zip(self.groups, self.points, strict=True))
            record["tasks"] = [{"task": t, "points": group, **task.to_dict()} for t, (group, task) in pairs]
            record["points"] = [
                {"index": i, "task": t, "job_id": self.points[t].job_id, "run_dir": str(self.point_dirs[i])}
                for t, group in enumerate(self.groups)
                for i in group
            ]
        return record


def submit_sweep(
    plan: SweepPlan,
    settings: Settings,
    backend: Backend,
    max_parallel: int | None = None,
    sweep_id: str | None = None,
    layout: Layout | None = None,
) -> SweepSubmission:
    """Create the sweep directory, submit every point, record the sweep; undo all of it on failure.
    With a grouped `layout` (--per-task, --pack, --stagger) each array task runs several points."""
    if layout is not None and layout.grouped:
        from deltajobs.sweep.grouped import submit_grouped

        return submit_grouped(plan, settings, backend, max_parallel, sweep_id or new_sweep_id(), layout)
    sweep_id = sweep_id or new_sweep_id()
    sweep_dir = sweep_dir_for(settings, plan.name, sweep_id)
    dirs = [point_dir(sweep_dir, p.index, len(plan.points)) for p in plan.points]
    with Registry.open(settings) as registry:  # an unreadable registry fails here, before anything exists
        sweep_dir.mkdir(parents=True, exist_ok=False)
        points: list[Submission] = []
        try:
            for resolved, run_dir in zip(plan.resolved, dirs, strict=True):
                prepare_run_dir(resolved, run_dir)
            array = backend.submit_array(plan.resolved, dirs, sweep_dir, max_parallel)
            points = array.points
            submission = SweepSubmission(
                sweep_id, backend.name, sweep_dir, array.array_job_id, array.max_parallel, array.log_pattern, points
            )
            params = {**plan.params(), "max_parallel": array.max_parallel}
            write_record(submission, params)
            _record(registry, plan, submission, params, backend)
        except BaseException:
            if points:
                backend.undo([p.job_id for p in points])
            shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
    return submission


def write_record(sub: SweepSubmission, params: dict[str, Any]) -> None:
    """sweep.json next to the points: the submission, with each point's parameters beside its job."""
    record = {**sub.to_dict(), **{k: v for k, v in params.items() if k != "points"}}
    for point, values in zip(record["points"], params["points"], strict=True):
        point["params"] = values
    (sub.sweep_dir / "sweep.json").write_text(json.dumps(record, indent=1) + "\n")


def _record(
    registry: Registry, plan: SweepPlan, sub: SweepSubmission, params: dict[str, Any], backend: Backend
) -> None:
    registry.add_sweep(sub.sweep_id, plan.job, sub.backend, params, str(sub.sweep_dir))
    try:
        rows = [
            job_row(resolved, point, backend, sub.sweep_id, index)
            for index, (resolved, point) in enumerate(zip(plan.resolved, sub.points, strict=True))
        ]
        registry.add_many(rows)
        if sub.array_job_id:
            registry.set_sweep_array(sub.sweep_id, sub.array_job_id)
    except BaseException:
        registry.delete_sweep(sub.sweep_id)
        raise


def cancel_sweep(settings: Settings, sweep_id: str) -> list[str]:
    """Cancel every point of a sweep that is not final (one scancel for a SLURM array's points)."""
    with Registry.open(settings) as registry:
        registry.sweep(sweep_id)  # an unknown sweep is an error, not nothing to cancel
        return cancel(registry, registry.query(sweep_id=sweep_id))


# -- adaptive searches: one array of workers ---------------------------------------------------------


def submit_search(
    job: str,
    resolved: ResolvedJob,
    search: SearchSpec,
    settings: Settings,
    backend: Backend,
    workers: int,
    sweep_id: str | None = None,
) -> SweepSubmission:
    """A new sweep directory and ONE array of `workers` search workers sharing its study."""
    sweep_id = sweep_id or new_sweep_id()
    sweep_dir = sweep_dir_for(settings, resolved.spec.name, sweep_id)
    params: dict[str, Any] = {"keys": search.keys, "log_keys": [r.key for r in search.ranges if r.log], "points": []}
    params |= {"search": search.to_dict(), "workers": workers}
    with Registry.open(settings) as registry:
        sweep_dir.mkdir(parents=True, exist_ok=False)
        try:
            submission = _submit_workers(registry, sweep_id, sweep_dir, resolved, search, backend, workers, 0)
            registry.add_sweep(sweep_id, job, backend.name, params, str(sweep_dir))
            try:
                _record_workers(registry, resolved, submission, backend, 0)
            except BaseException:
                registry.delete_sweep(sweep_id)
                raise
            write_record(submission, {**params, "points": [{} for _ in submission.points]})
        except BaseException:
            shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
    return submission


def resume_search(
    settings: Settings, sweep_id: str, backend: Backend, trials: int | None = None, workers: int | None = None
) -> SweepSubmission:
    """A new array of workers for a search whose workers ended (cancelled, out of time): they adopt the
    trials the old ones released and run until the study has its (maybe new) number of trials."""
    with Registry.open(settings) as registry:
        sweep = registry.sweep(sweep_id)
        params = sweep["params"]
        if "search" not in params:
            raise SpecError("SWEEP_ID", f"{sweep_id} is a grid or random sweep; only searches resume")
        rows = registry.query(sweep_id=sweep_id)
        active = [r.job_id for r in rows if not r.final]
        if active:
            raise SpecError(
                "SWEEP_ID", f"{sweep_id} still has workers running ({', '.join(active)}); cancel them first"
            )
        search = SearchSpec.from_dict(params["search"])
        if trials is not None:
            search = dataclasses.replace(search, trials=trials)
        count = workers or params["workers"]
        spec = yaml.safe_load((Path(sweep["run_dir"]) / WORKERS_DIR / "task-0" / "spec.yaml").read_text())
        resolved = resolve_job(spec, None, settings, rows[0].cluster, require_account=backend.needs_account)
        sweep_dir = Path(sweep["run_dir"])
        first = len(rows)
        submission = _submit_workers(registry, sweep_id, sweep_dir, resolved, search, backend, count, first)
        _record_workers(registry, resolved, submission, backend, first)
        registry.set_sweep_params(sweep_id, {**params, "search": search.to_dict(), "workers": count})
    return submission


def _submit_workers(
    registry: Registry,
    sweep_id: str,
    sweep_dir: Path,
    resolved: ResolvedJob,
    search: SearchSpec,
    backend: Backend,
    workers: int,
    first: int,
) -> SweepSubmission:
    from deltajobs.sweep.program_trial import TrialProgram
    from deltajobs.sweep.worker import SearchWorker

    dirs = [sweep_dir / WORKERS_DIR / f"task-{first + i}" for i in range(workers)]
    spec = resolved.spec.to_dict()
    est = estimate_job(resolved) if backend.charges else None
    rate = est.su_per_hour if est is not None else 0.0
    floor = est.minimum.su if est is not None and est.minimum.array_tasks == "each" else 0.0
    # A script's trials all run the snapshot in task-0 (a resumed search too): the code it started with.
    program = TrialProgram.of(resolved, sweep_dir / WORKERS_DIR / "task-0")
    epochs = resolved.spec.train.epochs if program is None else 0  # 0: Hyperband learns a script's epochs
    search = dataclasses.replace(search, max_epochs=epochs, su_per_hour=rate, min_su_per_task=floor)
    shared = program.to_dict() if program is not None else None
    calls = [
        SearchWorker(spec, str(sweep_dir), search.to_dict(), first + i, workers, program=shared) for i in range(workers)
    ]
    points: list[Submission] = []
    try:
        for run_dir in dirs:
            prepare_run_dir(resolved, run_dir)
        array = backend.submit_array([resolved] * workers, dirs, sweep_dir, None, calls=calls)
        points = array.points
    except BaseException:
        if points:
            backend.undo([p.job_id for p in points])
        for run_dir in dirs:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return SweepSubmission(sweep_id, backend.name, sweep_dir, array.array_job_id, workers, array.log_pattern, points)


def _record_workers(
    registry: Registry, resolved: ResolvedJob, sub: SweepSubmission, backend: Backend, first: int
) -> None:
    rows = [job_row(resolved, point, backend, sub.sweep_id, first + i) for i, point in enumerate(sub.points)]
    registry.add_many(rows)
    if sub.array_job_id:
        registry.set_sweep_array(sub.sweep_id, sub.array_job_id)
