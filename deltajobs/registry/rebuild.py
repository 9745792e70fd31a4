"""The registry rebuilt from the run directories: `store.py` is only a cache of what they record
(`records.py` writes and reads those records).

`rebuild` moves the old file aside (kept, never deleted), reads every record under the runs
directory, keeps the rows of a healthy old file whose run directories are gone, and brings every job
that is not final up to date through its backend (on SLURM one squeue and one sacct: state, elapsed,
SU); runs from before job.json get their records then. `status_from_run_dirs` answers `status` from
the records while the registry cannot be read.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.registry.records import (
    record_jobs,
    record_sweep,
    scan,
)
from deltajobs.registry.refresh import Refresh, refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import BUSY_TIMEOUT_S, Registry, db_path
from deltajobs.spec.settings import Settings

# -- rebuilding ------------------------------------------------------------------------------------


@dataclass
class Rebuilt:
    """What `rebuild` did."""

    path: Path
    kept_as: Path | None  # the old file, moved aside
    damaged: bool  # the old file failed SQLite's quick_check (or was not a database)
    jobs: int
    sweeps: int
    inferred: int  # rows inferred from runs older than job.json
    from_old: int  # rows of a healthy old file whose run directories hold no record
    skipped: list[str]
    warning: str | None  # the scheduler did not answer: states as the run directories recorded them


def rebuild(settings: Settings, more: Sequence[Path] = ()) -> Rebuilt:
    """Recreate the registry from the run directories under runs_path (and `more`) and the scheduler."""
    path = db_path(settings)
    old_jobs, old_sweeps, healthy = salvage(path)
    kept_as = move_aside(path, "old" if healthy else "damaged")
    found = scan([settings.runs_path, *more], infer=True, cluster=_cluster(settings))
    jobs = {**{r.job_id: r for r in old_jobs}, **found.jobs}
    for row in old_jobs:  # a healthy old file's row wins where it is newer than the run directory's
        jobs[row.job_id] = max(jobs[row.job_id], row, key=lambda r: r.updated_at)
    sweeps = {**{s["sweep_id"]: s for s in old_sweeps}, **found.sweeps}
    with Registry(path) as registry:
        registry.restore(list(jobs.values()), list(sweeps.values()))
        result = refresh(registry, registry.query())
    # Older runs get their records now: the next rebuild reads them like any other.
    inferred = [r for r in result.rows if r.job_id in found.inferred]
    record_jobs(inferred)
    for sweep_id in found.inferred & set(sweeps):
        record_sweep(sweeps[sweep_id])
    from_old = len(set(jobs) - set(found.jobs))
    counts = (len(jobs), len(sweeps), len(inferred), from_old)
    return Rebuilt(path, kept_as, not healthy, *counts, found.skipped, result.warning)


def salvage(path: Path) -> tuple[list[JobRow], list[dict[str, Any]], bool]:
    """The rows of the registry at `path` if SQLite's quick_check passes, and whether it did
    (a damaged file's rows may be wrong without SQLite noticing: none are taken from it)."""
    if not path.exists() or path.stat().st_size == 0:
        return [], [], True
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            conn.row_factory = sqlite3.Row
            if [r[0] for r in conn.execute("PRAGMA quick_check")] != ["ok"]:
                return [], [], False
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"jobs", "sweeps"} <= tables:
                return [], [], not tables
            jobs = [JobRow(**dict(r)) for r in conn.execute("SELECT * FROM jobs")]
            sweeps = [{**dict(r), "params": json.loads(r["params"])} for r in conn.execute("SELECT * FROM sweeps")]
            return jobs, sweeps, True
        finally:
            conn.close()
    except (sqlite3.Error, TypeError, ValueError):
        return [], [], False


def move_aside(path: Path, why: str) -> Path | None:
    """Rename the registry and its journal files to `registry.sqlite.WHY-STAMP[-journal]`: kept,
    and out of the way (a hot journal left beside a new file would be played into it)."""
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-journal", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{target}{suffix}"))
    return target


def _cluster(settings: Settings) -> Callable[[], str]:
    """The active cluster profile, asked for once and only if an old run needs it."""

    @functools.cache
    def cluster() -> str:
        from deltajobs.spec.context import DEFAULT_CLUSTER, active_cluster

        try:
            return active_cluster(settings)
        except DeltaJobsError:
            return DEFAULT_CLUSTER

    return cluster


# -- status without a registry ---------------------------------------------------------------------


def status_from_run_dirs(settings: Settings, job_ids: list[str] | None, recent_since: float | None) -> Refresh:
    """`status` while the registry is unreadable: the recorded rows (the ids given, else those not
    final or submitted since `recent_since`), brought up to date; changed states are recorded."""
    rows = sorted(scan([settings.runs_path]).jobs.values(), key=lambda r: (r.submitted_at, r.job_id))
    if job_ids:
        rows = [_pick(rows, job_id, settings.runs_path) for job_id in job_ids]
    elif recent_since is not None:
        rows = [r for r in rows if not r.final or r.submitted_at >= recent_since]
    states = {r.job_id: r.state for r in rows}
    result = refresh(None, rows)
    changed = [r for r in rows if r.state != states[r.job_id]]
    for row in changed:
        row.updated_at = time.time()
    record_jobs(changed)
    return result


def _pick(rows: list[JobRow], job_id: str, runs: Path) -> JobRow:
    if job_id == "last" and rows:
        return max(rows, key=lambda r: r.submitted_at)
    for row in rows:
        if row.job_id == job_id:
            return row
    raise NotFoundError(f"job {job_id} is not recorded in the run directories under {runs}")
