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

import datetime as dt
import json
import math
import os
import secrets
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.core import core, utils
from submitit.slurm.slurm import SlurmJob

from deltajobs import lifecycle, slurm
from deltajobs.config import Settings
from deltajobs.errors import DeltaJobsError, SlurmError
from deltajobs.registry import Registry
from deltajobs.render import job_python, render, submitit_folder
from deltajobs.submit import (
    DeltaSlurmExecutor,
    DetachedLocalExecutor,
    Submission,
    job_row,
    prepare_run_dir,
    sbatch_error_line,
    train_job,
)
from deltajobs.sweep import SweepPlan
from deltajobs.sweep_local import SlotTrainJob


def new_sweep_id() -> str:
    return f"sw-{secrets.token_hex(3)}"


def sweep_dir_for(settings: Settings, name: str, sweep_id: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (settings.runs_path / f"{name}-{stamp}-{sweep_id}").absolute()


def point_dir(sweep_dir: Path, index: int, count: int) -> Path:
    return sweep_dir / f"point-{index:0{max(3, len(str(count - 1)))}d}"


def array_spec(count: int, max_parallel: int | None) -> str:
    """sbatch's --array value: task ids 0..count-1, `%P` to run at most P at once."""
    throttle = f"%{max_parallel}" if max_parallel and max_parallel < count else ""
    return f"0-{count - 1}{throttle}"


def render_sweep(plan: SweepPlan, sweep_dir: Path, max_parallel: int | None) -> str:
    """The array script. One script serves every point: only train.* keys vary, and those travel in
    each task's pickle, not in the script."""
    return render(plan.resolved[0], sweep_dir, array=array_spec(len(plan.points), max_parallel))


def local_parallel(plan: SweepPlan, max_parallel: int | None) -> int:
    """--max-parallel, else as many points as this machine's CPUs hold at cpus_per_task each."""
    if max_parallel:
        return max_parallel
    return max(1, (os.cpu_count() or 1) // plan.resolved[0].spec.resources.cpus_per_task)


class DeltaSlurmArrayExecutor(DeltaSlurmExecutor):
    """Submits many calls as one array job of our rendered script.

    submitit's own `SlurmExecutor._internal_process_submissions` builds a plain SlurmExecutor for
    arrays, which would write its own sbatch script; this keeps ours and follows the same steps:
    dump one pickle per task, one sbatch call, move each pickle to its task's `%A_%a` path.
    """

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list[core.Job[Any]]:
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        timeout_min = self.parameters.get("time", 5)
        pickles = []
        for delayed in delayed_submissions:
            path = folder / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(timeout_min, self.max_num_timeout)
            delayed.dump(path)
            pickles.append(path)
        self._throttle()
        array = self._submit_command(self._submitit_command_str)  # the one sbatch call
        tasks = list(range(array.num_tasks))
        jobs: list[core.Job[Any]] = [
            SlurmJob(folder=self.folder, job_id=f"{array.job_id}_{i}", tasks=tasks) for i in range(len(pickles))
        ]
        for job, path in zip(jobs, pickles, strict=True):  # a task waits up to 60 s for its pickle
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs


@dataclass(frozen=True)
class SweepSubmission:
    sweep_id: str
    backend: str
    sweep_dir: Path
    array_job_id: str | None
    max_parallel: int | None
    points: list[Submission] = field(default_factory=list)

    @property
    def log_pattern(self) -> Path:
        folder = submitit_folder(self.sweep_dir)
        return folder / (f"{self.array_job_id}_%a_0_log.out" if self.array_job_id else "%j_0_log.out")

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "backend": self.backend,
            "sweep_dir": str(self.sweep_dir),
            "array_job_id": self.array_job_id,
            "max_parallel": self.max_parallel,
            "logs": str(self.log_pattern),
            "points": [{"index": i, **p.to_dict()} for i, p in enumerate(self.points)],
        }


def submit_sweep(
    plan: SweepPlan, settings: Settings, backend: str, max_parallel: int | None = None, sweep_id: str | None = None
) -> SweepSubmission:
    """Create the sweep directory, submit every point, record the sweep; undo all of it on failure."""
    sweep_id = sweep_id or new_sweep_id()
    sweep_dir = sweep_dir_for(settings, plan.name, sweep_id)
    if backend == "local":
        max_parallel = local_parallel(plan, max_parallel)
    script = render_sweep(plan, sweep_dir, max_parallel) if backend == "slurm" else None
    dirs = [point_dir(sweep_dir, p.index, len(plan.points)) for p in plan.points]
    sweep_dir.mkdir(parents=True, exist_ok=False)
    registry: Registry | None = None
    points: list[Submission] = []
    try:
        for resolved, run_dir in zip(plan.resolved, dirs, strict=True):
            prepare_run_dir(resolved, run_dir, None)
        if script is not None:
            (sweep_dir / "job.sh").write_text(script)
        registry = Registry.open(settings)
        if backend == "slurm":
            points = _submit_array(plan, dirs, sweep_dir, script or "")
        else:
            points = _submit_local(plan, dirs, sweep_dir, max_parallel or 1)
        array_id = points[0].job_id.split("_")[0] if backend == "slurm" else None
        submission = SweepSubmission(sweep_id, backend, sweep_dir, array_id, max_parallel, points)
        params = {**plan.params(), "max_parallel": max_parallel}
        _write_record(submission, params)
        _record(registry, plan, submission, params)
    except BaseException:
        if points:
            _cancel_quietly(backend, [p.job_id for p in points])
        shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    finally:
        if registry is not None:
            registry.close()
    return submission


def _write_record(sub: SweepSubmission, params: dict[str, Any]) -> None:
    """sweep.json next to the points: the submission, with each point's parameters beside its job."""
    record = {**sub.to_dict(), **{k: v for k, v in params.items() if k != "points"}}
    for point, values in zip(record["points"], params["points"], strict=True):
        point["params"] = values
    (sub.sweep_dir / "sweep.json").write_text(json.dumps(record, indent=1) + "\n")


def _record(registry: Registry, plan: SweepPlan, sub: SweepSubmission, params: dict[str, Any]) -> None:
    registry.add_sweep(sub.sweep_id, plan.job, sub.backend, params, str(sub.sweep_dir))
    try:
        rows = [
            job_row(resolved, point, sub.sweep_id, index)
            for index, (resolved, point) in enumerate(zip(plan.resolved, sub.points, strict=True))
        ]
        registry.add_many(rows)
        if sub.array_job_id:
            registry.set_sweep_array(sub.sweep_id, sub.array_job_id)
    except BaseException:
        registry.delete_sweep(sub.sweep_id)
        raise


def _submit_array(plan: SweepPlan, dirs: list[Path], sweep_dir: Path, script: str) -> list[Submission]:
    slurm.ping()
    folder = submitit_folder(sweep_dir)
    res = plan.resolved[0].spec.resources
    executor = DeltaSlurmArrayExecutor(
        folder,
        script,
        python=job_python(plan.resolved[0]),
        timeout_min=max(1, res.seconds // 60),
        max_requeues=res.max_requeues,
    )
    calls = [train_job(resolved, run_dir) for resolved, run_dir in zip(plan.resolved, dirs, strict=True)]
    try:
        jobs = executor.submit_array(calls)
    except (utils.FailedJobError, OSError, RuntimeError) as err:
        raise SlurmError(f"sbatch refused the sweep: {sbatch_error_line(err)}") from None
    return [
        Submission(
            job_id=str(job.job_id),
            backend="slurm",
            run_dir=run_dir,
            log_path=folder / f"{job.job_id}_0_log.out",
            err_path=folder / f"{job.job_id}_0_log.err",
            script_path=sweep_dir / "job.sh",
        )
        for job, run_dir in zip(jobs, dirs, strict=True)
    ]


def _submit_local(plan: SweepPlan, dirs: list[Path], sweep_dir: Path, slots: int) -> list[Submission]:
    folder = submitit_folder(sweep_dir)
    res = plan.resolved[0].spec.resources
    waves = math.ceil(len(dirs) / slots)  # a point's walltime includes its wait for a slot
    executor = DetachedLocalExecutor(folder=folder, max_num_timeout=res.max_requeues)
    executor.update_parameters(timeout_min=max(1, res.seconds // 60) * waves)
    points: list[Submission] = []
    try:
        for index, (resolved, run_dir) in enumerate(zip(plan.resolved, dirs, strict=True)):
            spec = resolved.spec.to_dict()
            call = SlotTrainJob(spec, str(run_dir), res.max_requeues, str(folder / "slots"), slots, index)
            pid = str(executor.submit(call).job_id)
            points.append(
                Submission(
                    job_id=f"local-{pid}",
                    backend="local",
                    run_dir=run_dir,
                    log_path=folder / f"{pid}_0_log.out",
                    err_path=folder / f"{pid}_0_log.err",
                    script_path=None,
                )
            )
    except BaseException:
        _cancel_quietly("local", [p.job_id for p in points])
        raise
    return points


def _cancel_quietly(backend: str, job_ids: list[str]) -> None:
    """Best effort: undo submitted points (one scancel for a whole array)."""
    ids = sorted({j.split("_")[0] for j in job_ids}) if backend == "slurm" else job_ids
    try:
        lifecycle.cancel_backend(backend, ids)
    except DeltaJobsError:
        pass
