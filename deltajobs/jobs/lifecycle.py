"""The job lifecycle above the backends: submit a job, bring rows up to date (through
`deltajobs.registry.refresh`), cancel them, and what finished jobs used. Every call goes through the
backend a row names (`deltajobs.backends`); final states are cached in the registry and never asked
for again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deltajobs.backends.base import Backend, Submission
from deltajobs.charge.advice import Advice, advise, gpu_advice
from deltajobs.charge.estimate import Request
from deltajobs.clusters.profile import load_profile
from deltajobs.clusters.units import format_duration
from deltajobs.errors import NotFoundError, SlurmError, SpecError
from deltajobs.injob import provenance
from deltajobs.injob.gpu_usage import run_gpu_summary
from deltajobs.jobs.pipeline import blocked_by, descendants, never_starting
from deltajobs.registry.history import spec_key
from deltajobs.registry.refresh import by_backend, refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry, RegistryDamaged
from deltajobs.registry.targets import find_target
from deltajobs.slurm.parse import AcctRecord
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings

RECENT_S = 7 * 86400  # `status` without ids shows active jobs and those submitted this recently


# Pending reasons in words (squeue's %r).
REASONS = {
    "Priority": "waiting behind higher-priority jobs",
    "Resources": "waiting for GPUs/nodes to free up",
    "BeginTime": "held until its begin time (a requeued job waits about 2 minutes)",
    "Dependency": "waiting for a job it depends on",
    "DependencyNeverSatisfied": "its dependency can never be satisfied: `deltajobs cancel --never-start`",
    "QOSGrpBillingMinutes": "the account's balance is too low: see `deltajobs accounts`",
    "AssocGrpBillingMinutes": "the account's balance is too low: see `deltajobs accounts`",
    "MaxGRESPerAccount": "the cores or GPUs allotted per user or project on this partition are in use",
    "QOSMaxGRESPerUser": "your GPU limit on this partition is reached",
    "AssocGrpGRES": "the account's GPU limit is reached",
    "QOSMaxJobsPerUserLimit": "your limit of running jobs is reached",
    "PartitionTimeLimit": "the walltime exceeds the partition's limit",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved (`sinfo -R` says why)",
    "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions": (
        "the nodes it needs are down or drained (`sinfo -R` says why): it starts when one is back"
    ),
    "JobHeldUser": "held by you: `scontrol release JOBID`",
    "JobHeldAdmin": "held by an administrator",
    "launch failed requeued held": "launch failed and the job is held: cancel and resubmit",
    "None": "",
}

# Advice for final states that need it.
STATE_ADVICE = {
    "OUT_OF_MEMORY": "ran out of memory: raise --mem (sacct's MaxRSS shows the peak) or lower train.batch_size",
    "TIMEOUT": "hit its walltime: raise --time, or keep resources.max_requeues > 0 to checkpoint and requeue",
    "NODE_FAIL": "a node failed: the job is requeued when resources.max_requeues > 0, else resubmit it",
    "PREEMPTED": "was preempted: jobs on -preempt partitions resume from their checkpoint when requeued",
    "FAILED": "failed: `deltajobs logs JOBID --err` shows the traceback",
}


def reason_words(reason: str | None) -> str:
    """squeue's pending reason in words; `ReqNodeNotAvail, UnavailableNodes:...` by its first part."""
    if not reason or reason == "None":
        return ""
    return REASONS.get(reason) or REASONS.get(reason.split(",")[0], reason)


# -- submitting ------------------------------------------------------------------------------------


def prepare_run_dir(resolved: ResolvedJob, run_dir: Path) -> None:
    """Create the run directory with the resolved spec, what the payload needs there (a snapshot
    of the user's code) and the code's git commit and changes (RUN_DIR/env); fails if it exists."""
    run_dir.mkdir(parents=True, exist_ok=False)
    try:
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(resolved.spec.to_dict(), sort_keys=False))
        resolved.payload.prepare(run_dir)
        payload = resolved.payload
        code = payload.code_root()
        if code is not None:
            provenance.record_code(code, run_dir, payload.snapshot)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def submit_job(resolved: ResolvedJob, settings: Settings, run_dir: Path, backend: Backend) -> Submission:
    """Submit one job: run directory, submission, registry row. On any failure none of them is left."""
    run_dir = run_dir.expanduser().absolute()
    with Registry.open(settings) as registry:  # an unreadable registry fails here, before anything exists
        prepare_run_dir(resolved, run_dir)
        try:
            submission = backend.submit(resolved, run_dir)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        try:
            registry.add_many(job_rows(resolved, submission, backend))
        except BaseException:
            backend.undo([submission.job_id])
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return submission


def job_rows(resolved: ResolvedJob, sub: Submission, backend: Backend) -> list[JobRow]:
    """The registry rows of one submission: the job's, or one per task of an array submitted as one
    job (`<id>_<task>`, `sweep_index` the task's id, no sweep), as a sweep's points are recorded."""
    if not sub.tasks:
        return [job_row(resolved, sub, backend)]
    indices = resolved.payload.array()
    assert indices is not None
    return [job_row(resolved, task, backend, None, i) for task, i in zip(sub.tasks, indices.indices, strict=True)]


def find_rows(registry: Registry, job_ids: list[str]) -> list[JobRow]:
    """The rows the ids name: a job each, or every task of an array job (its id), or every point of a
    sweep (its id or its array job's id); NotFoundError names an id that is none of them."""
    rows: dict[str, JobRow] = {}
    for job_id in job_ids:
        try:
            found = [registry.get(job_id)]
        except NotFoundError as err:
            try:
                found = find_target(registry, job_id).rows
            except NotFoundError:
                raise err from None  # an unknown id: said as a job's, as ever
        rows |= {row.job_id: row for row in found if row.job_id not in rows}
    return list(rows.values())


def job_row(
    resolved: ResolvedJob, sub: Submission, backend: Backend, sweep_id: str | None = None, index: int | None = None
) -> JobRow:
    res = resolved.spec.resources
    return JobRow(
        job_id=sub.job_id,
        name=resolved.spec.name,
        cluster=resolved.profile.name,
        backend=backend.name,
        account=resolved.spec.account,
        partition=backend.partition(resolved),
        nodes=res.nodes,
        gpus_per_node=res.gpus_per_node,
        ntasks_per_node=res.ntasks_per_node,
        cpus_per_task=res.cpus_per_task,
        mem=res.mem,
        time_limit=res.time,
        run_dir=str(sub.run_dir),
        log_path=str(sub.log_path),
        err_path=str(sub.err_path),
        spec_key=spec_key(resolved),
        sweep_id=sweep_id,
        sweep_index=index,
        submitted_at=time.time(),
        state=backend.first_state,
    )


# -- following -------------------------------------------------------------------------------------


@dataclass
class StatusView:
    """What `status` shows: the rows, fresh; with `detail`, what the finished ones used."""

    rows: list[JobRow]
    records: dict[str, AcctRecord]
    warning: str | None
    notes: list[str] = field(default_factory=list)  # what SLURM printed that could not be read
    blocked: dict[str, str] = field(default_factory=dict)  # a job that can never start: the parent that failed


def status(settings: Settings, job_ids: list[str] | None, every: bool = False, detail: bool = False) -> StatusView:
    """The ids given, else every job (`every`), else the active and recent ones, brought up to date;
    from the run directories, with a warning, while the registry is damaged."""
    recent_since = None if every else time.time() - RECENT_S
    try:
        with Registry.open(settings) as registry:
            rows = find_rows(registry, job_ids) if job_ids else registry.query(recent_since=recent_since)
            result = refresh(registry, rows)
            blocked = {row.job_id: text for row in never_starting(result.rows) if (text := blocked_by(registry, row))}
    except RegistryDamaged as err:
        from deltajobs.registry.rebuild import status_from_run_dirs

        result = status_from_run_dirs(settings, job_ids, recent_since)
        result.warning = "; ".join(filter(None, [f"{err}; showing the run directories", result.warning]))
        blocked = {}
    records, warning = finished_usage(result.rows) if detail else ({}, None)
    return StatusView(result.rows, records, result.warning or warning, result.notes, blocked)


def active_jobs(settings: Settings) -> list[JobRow]:
    """Every job that is not final, as the registry last saw it."""
    with Registry.open(settings) as registry:
        return [r for r in registry.query(recent_since=0) if not r.final]


@dataclass
class Cancellation:
    """What a cancel did to each row it was given: cancelled, found to have ended already (`gone`),
    left alone (`refused`), or else final before it began. `rows` are as the registry now holds them."""

    rows: list[JobRow]
    cancelled: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # was no longer running: its row holds how it ended
    refused: dict[str, str] = field(default_factory=dict)  # may still run: why it was left alone, what to do


def stop(registry: Registry, rows: list[JobRow]) -> Cancellation:
    """Cancel the rows that are not final (one scancel for all SLURM ones) and say what happened."""
    done = Cancellation(rows)
    changed: set[str] = set()
    for backend, group in by_backend([r for r in rows if not r.final]):
        result = backend.cancel(group)
        registry.update_many(result.changes)
        changed |= set(result.changes)
        done.gone += result.gone
        done.refused |= result.refused
        done.cancelled += [r.job_id for r in group if r.job_id not in result.gone and r.job_id not in result.refused]
    done.rows = [registry.get(r.job_id) if r.job_id in changed else r for r in rows]
    return done


def cancel(registry: Registry, rows: list[JobRow]) -> list[str]:
    """Cancel the rows that are not final; returns the ids cancelled (`stop` says what of the others)."""
    return stop(registry, rows).cancelled


def cancel_never_starting(settings: Settings) -> Cancellation:
    """Cancel every job that waits for a dependency that can never be met (a parent failed),
    its state asked afresh first, and every job that waits for one of those."""
    with Registry.open(settings) as registry:
        result = refresh(registry, [r for r in registry.query(recent_since=0) if not r.final])
        never = never_starting(result.rows)
        return stop(registry, never + descendants(result.rows, never))  # and what waits for them


def cancel_jobs(settings: Settings, job_ids: list[str]) -> Cancellation:
    """Cancel jobs by id (an array job's id: all its tasks), saying what happened to each row."""
    with Registry.open(settings) as registry:
        return stop(registry, find_rows(registry, job_ids))


# -- what finished jobs used -----------------------------------------------------------------------


def usage(rows: list[JobRow]) -> dict[str, AcctRecord]:
    """The accounting record of every finished row (what it used, each attempt): one call per backend."""
    records: dict[str, AcctRecord] = {}
    for backend, group in by_backend([r for r in rows if r.final]):
        records.update(backend.usage(group))
    return records


def finished_usage(rows: list[JobRow]) -> tuple[dict[str, AcctRecord], str | None]:
    """`usage`, or nothing and a warning when the scheduler does not answer."""
    try:
        return usage(rows), None
    except SlurmError as err:
        return {}, f"SLURM is not answering ({err}); no usage or advice for finished jobs"


def right_sizing(row: JobRow, record: AcctRecord | None) -> list[Advice]:
    """Advice comparing what a finished job reserved with what it used: sacct's record (none
    without it) and the GPU utilisation sampled in its run directory (priced where sacct is)."""
    gpu = run_gpu_summary(Path(row.run_dir)) if row.final else None
    if record is None:
        return gpu_advice(gpu, row.gpus_per_node or 0)
    try:
        partition = load_profile(row.cluster).partition(record.partition)
    except SpecError:  # a partition the profile does not know: nothing to price against
        return gpu_advice(gpu, row.gpus_per_node or 0)
    gpus = Request.from_acct(record).gpus_per_node or row.gpus_per_node or 0
    return advise(record, partition, tasks_per_node=row.ntasks_per_node) + gpu_advice(gpu, gpus, record, partition)


def attempts_text(record: AcctRecord) -> str:
    """`4 attempts (17s REQUEUED, 25s REQUEUED, 25s REQUEUED, 26s COMPLETED)`: each one is charged."""
    runs = ", ".join(f"{format_duration(a.elapsed_s)} {a.state}" for a in record.attempts)
    count = len(record.attempts)
    return f"{count} attempt{'s' if count != 1 else ''} ({runs})"
