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

import contextlib
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from deltajobs.backends.base import Backend, Submission
from deltajobs.charge.estimate import estimate_job
from deltajobs.errors import DeltaJobsError, SpecError
from deltajobs.injob.provenance import one_submission
from deltajobs.jobs.lifecycle import cancel, job_row, prepare_run_dir
from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import ResolvedJob, resolve_job
from deltajobs.spec.settings import Settings
from deltajobs.sweep.layout import Layout
from deltajobs.sweep.plan import SweepPlan
from deltajobs.sweep.record import SweepSubmission, new_sweep_id, point_dir, sweep_dir_for, write_record
from deltajobs.sweep.search import WORKERS_DIR, SearchSpec


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
            with one_submission():  # git asked once for every point's copy of the code
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
        except BaseException:
            shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
        try:
            registry.add_sweep(sweep_id, job, backend.name, params, str(sweep_dir))
            _record_workers(registry, resolved, submission, backend, 0)
            write_record(submission, {**params, "points": [{} for _ in submission.points]})
        except BaseException:  # the workers are queued: cancel them, or they run and are charged unseen
            _undo_workers(backend, submission, lambda: registry.delete_sweep(sweep_id), [sweep_dir])
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
        try:
            _record_workers(registry, resolved, submission, backend, first)
            registry.set_sweep_params(sweep_id, {**params, "search": search.to_dict(), "workers": count})
        except BaseException:  # the new workers only: the sweep and its earlier workers stay as they were

            def forget() -> None:
                registry.delete_jobs([p.job_id for p in submission.points])
                if sweep["array_job_id"] != submission.array_job_id:
                    registry.set_sweep_array(sweep_id, sweep["array_job_id"])

            dirs = [sweep_dir / WORKERS_DIR / f"task-{first + i}" for i in range(count)]
            _undo_workers(backend, submission, forget, dirs)
            raise
    return submission


def _undo_workers(backend: Backend, sub: SweepSubmission, forget: Callable[[], None], dirs: list[Path]) -> None:
    """Workers queued whose bookkeeping failed: cancel them first (one scancel for the array), then
    their rows (`forget`; best effort: the registry may be what failed), then their directories."""
    backend.undo([p.job_id for p in sub.points])
    with contextlib.suppress(DeltaJobsError):
        forget()
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


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
        with one_submission():  # git asked once for every point's copy of the code
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
