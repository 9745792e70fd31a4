"""What the registry stores: its SQLite tables and their migration, `JobRow`, and rows written in bulk.

store.py opens the file, guards its errors and holds the queries; this module is the shape of a
row and of the tables, so that records.py (the run directories' copy of each row) can read
and write rows without opening a registry. `Registry` keeps the tables at `SCHEMA_VERSION`:

    1  the first tables
    2  jobs.restarts (set when a job ends) and an index on submitted_at; a version 1 file gains
       them on open (`create_tables`)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from deltajobs.slurm.parse import FINAL_STATES

SCHEMA_VERSION = 2  # 2: jobs.restarts (version 1 files gain the column on open)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    cluster       TEXT NOT NULL,
    backend       TEXT NOT NULL,          -- slurm | local
    account       TEXT,
    partition     TEXT,
    nodes         INTEGER,
    gpus_per_node INTEGER,
    ntasks_per_node INTEGER,
    cpus_per_task INTEGER,
    mem           TEXT,
    time_limit    TEXT,
    run_dir       TEXT NOT NULL,
    log_path      TEXT NOT NULL,
    err_path      TEXT NOT NULL,
    spec_key      TEXT,
    sweep_id      TEXT,
    sweep_index   INTEGER,
    submitted_at  REAL NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT,
    started_at    TEXT,
    ended_at      TEXT,
    elapsed_s     INTEGER,
    exit_code     TEXT,
    billing       REAL,
    su            REAL,
    updated_at    REAL NOT NULL,
    restarts      INTEGER                 -- set when the job ends (attempts.json), NULL before
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_sweep ON jobs(sweep_id);
CREATE INDEX IF NOT EXISTS jobs_spec_key ON jobs(spec_key);
CREATE INDEX IF NOT EXISTS jobs_submitted ON jobs(submitted_at);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id     TEXT PRIMARY KEY,
    job          TEXT NOT NULL,
    array_job_id TEXT,
    backend      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    params       TEXT NOT NULL,           -- JSON: the swept keys and the points
    run_dir      TEXT NOT NULL
)
"""
SWEEP_COLUMNS = ["sweep_id", "job", "array_job_id", "backend", "created_at", "params", "run_dir"]


@dataclass
class JobRow:
    job_id: str
    name: str
    cluster: str
    backend: str
    run_dir: str
    log_path: str
    err_path: str
    submitted_at: float
    state: str
    account: str | None = None
    partition: str | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time_limit: str | None = None
    spec_key: str | None = None
    sweep_id: str | None = None
    sweep_index: int | None = None
    reason: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    elapsed_s: int | None = None
    exit_code: str | None = None
    billing: float | None = None
    su: float | None = None
    updated_at: float = 0.0
    restarts: int | None = None  # recorded when the job ends, so that listing finished jobs reads no file

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def array_task(self) -> bool:
        """A task of an array submitted as one job (an sbatch script's --array): its index, no sweep."""
        return self.sweep_id is None and self.sweep_index is not None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in JOB_COLUMNS}  # every field is a scalar: no deep copy


JOB_COLUMNS = [f.name for f in fields(JobRow)]
SELECT_JOBS = f"SELECT {','.join(JOB_COLUMNS)} FROM jobs"  # in JobRow's order: rows build positionally (fast)

Restore = tuple[list[JobRow], list[dict[str, Any]]]  # what a new registry starts from: rows recorded elsewhere


def create_tables(conn: sqlite3.Connection, restore: Callable[[], Restore] | None) -> None:
    """The tables at SCHEMA_VERSION, migrating an older file; a file that had no tables starts with
    the rows `restore` gives. Call it inside one transaction: of processes creating the file at
    once, exactly one restores."""
    existed = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone() is not None
    for statement in _SCHEMA.split(";"):
        conn.execute(statement)
    if "restarts" not in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}:  # version 1 (r[1]: the name)
        conn.execute("ALTER TABLE jobs ADD COLUMN restarts INTEGER")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    if restore is not None and not existed:
        insert_rows(conn, *restore(), replace=False)


def insert_rows(
    conn: sqlite3.Connection, jobs: list[JobRow], sweeps: list[dict[str, Any]], replace: bool, ignore: bool = True
) -> None:
    """Job and sweep rows in bulk: `replace` wins over a row with the same id, else `ignore` keeps
    the old one, else a duplicate id raises sqlite3.IntegrityError."""
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE" if ignore else "INSERT"
    marks = ",".join("?" for _ in JOB_COLUMNS)
    conn.executemany(
        f"{verb} INTO jobs ({','.join(JOB_COLUMNS)}) VALUES ({marks})",
        [[getattr(r, c) for c in JOB_COLUMNS] for r in jobs],
    )
    marks = ",".join("?" for _ in SWEEP_COLUMNS)
    conn.executemany(
        f"{verb} INTO sweeps ({','.join(SWEEP_COLUMNS)}) VALUES ({marks})",
        [[json.dumps(s[c]) if c == "params" else s[c] for c in SWEEP_COLUMNS] for s in sweeps],
    )
