"""Job history in SQLite (WAL) under DELTAJOBS_HOME: record, refresh, query.

One row per submitted job. Writes are single short transactions with a generous busy timeout,
so that parallel `deltajobs submit` calls never lose a row. The file is private (mode 0600).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from deltajobs.config import Settings
from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.slurm import FINAL_STATES

SCHEMA_VERSION = 1

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
    updated_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_sweep ON jobs(sweep_id);
CREATE INDEX IF NOT EXISTS jobs_spec_key ON jobs(spec_key);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id     TEXT PRIMARY KEY,
    job          TEXT NOT NULL,
    array_job_id TEXT,
    backend      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    params       TEXT NOT NULL,           -- JSON: the swept keys and the points
    run_dir      TEXT NOT NULL
);
"""


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

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = [f.name for f in fields(JobRow)]


def db_path(settings: Settings) -> Path:
    return settings.home_path / "registry.sqlite"


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        if fresh:  # create private before SQLite opens it
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        try:
            self._conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            if fresh or self._conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._conn.executescript(_SCHEMA)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise DeltaJobsError(f"registry {path} is unreadable ({err}); move it aside to start afresh") from None

    @classmethod
    def open(cls, settings: Settings) -> Registry:
        """The registry under DELTAJOBS_HOME; use it as `with Registry.open(settings) as registry:`."""
        return cls(db_path(settings))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def add(self, row: JobRow) -> None:
        row.updated_at = time.time()
        marks = ",".join("?" for _ in _COLUMNS)
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO jobs ({','.join(_COLUMNS)}) VALUES ({marks})", [getattr(row, c) for c in _COLUMNS]
            )

    def add_many(self, rows: Iterable[JobRow]) -> None:
        marks = ",".join("?" for _ in _COLUMNS)
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                f"INSERT INTO jobs ({','.join(_COLUMNS)}) VALUES ({marks})",
                [[now if c == "updated_at" else getattr(r, c) for c in _COLUMNS] for r in rows],
            )

    def update(self, job_id: str, **values: Any) -> None:
        self.update_many({job_id: values})

    def update_many(self, changes: dict[str, dict[str, Any]]) -> None:
        if not changes:
            return
        now = time.time()
        with self.transaction() as conn:
            for job_id, values in changes.items():
                values = {**values, "updated_at": now}
                unknown = set(values) - set(_COLUMNS)
                if unknown:
                    raise ValueError(f"unknown registry columns: {sorted(unknown)}")
                assignments = ", ".join(f"{k} = ?" for k in values)
                conn.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*values.values(), job_id])

    def get(self, job_id: str) -> JobRow:
        """One job by id; `last` is the most recently submitted one."""
        if job_id == "last":
            row = self._conn.execute("SELECT * FROM jobs ORDER BY submitted_at DESC LIMIT 1").fetchone()
        else:
            row = self._conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"job {job_id} is not in the registry ({self.path}); `deltajobs status --all` lists them"
            )
        return JobRow(**dict(row))

    def find(self, job_ids: Iterable[str]) -> list[JobRow]:
        return [self.get(job_id) for job_id in job_ids]

    def query(self, *, recent_since: float | None = None, sweep_id: str | None = None) -> list[JobRow]:
        """All rows; or those not final or submitted after `recent_since`; or one sweep's."""
        sql, args = "SELECT * FROM jobs", list[Any]()
        if sweep_id is not None:
            sql += " WHERE sweep_id = ?"
            args.append(sweep_id)
        elif recent_since is not None:
            sql += f" WHERE state NOT IN ({','.join('?' for _ in FINAL_STATES)}) OR submitted_at >= ?"
            args += [*sorted(FINAL_STATES), recent_since]
        sql += " ORDER BY sweep_index, submitted_at, job_id" if sweep_id else " ORDER BY submitted_at, job_id"
        return [JobRow(**dict(r)) for r in self._conn.execute(sql, args).fetchall()]

    def history_elapsed(self, spec_key: str) -> list[int]:
        rows = self._conn.execute(
            "SELECT elapsed_s FROM jobs WHERE spec_key = ? AND state = 'COMPLETED' AND elapsed_s > 0", (spec_key,)
        ).fetchall()
        return [r[0] for r in rows]

    # sweeps
    def add_sweep(self, sweep_id: str, job: str, backend: str, params: dict[str, Any], run_dir: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sweeps (sweep_id, job, backend, created_at, params, run_dir) VALUES (?,?,?,?,?,?)",
                (sweep_id, job, backend, time.time(), json.dumps(params), run_dir),
            )

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        row = self._conn.execute("SELECT * FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"sweep {sweep_id} is not in the registry")
        return {**dict(row), "params": json.loads(row["params"])}

    def set_sweep_params(self, sweep_id: str, params: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE sweeps SET params = ? WHERE sweep_id = ?", (json.dumps(params), sweep_id))

    def set_sweep_array(self, sweep_id: str, array_job_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE sweeps SET array_job_id = ? WHERE sweep_id = ?", (array_job_id, sweep_id))

    def delete_sweep(self, sweep_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM jobs WHERE sweep_id = ?", (sweep_id,))
            conn.execute("DELETE FROM sweeps WHERE sweep_id = ?", (sweep_id,))


def spec_key(resolved: Any) -> str:
    """Jobs with the same cluster, resources and payload (training config, or script with its
    arguments) share a key (for typical runtimes)."""
    spec = resolved.spec.to_dict()
    # The walltime limit, requeue settings and data location do not change how long a job runs.
    resources = {k: v for k, v in spec["resources"].items() if k not in ("time", "max_requeues", "signal_grace")}
    payload = {"cluster": resolved.profile.name, "resources": resources}
    if "train" in spec:
        payload["train"] = {k: v for k, v in spec["train"].items() if k != "data_root"}
    else:
        payload["run"] = {k: v for k, v in spec["run"].items() if k not in ("workdir", "snapshot")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def typical_elapsed(settings: Settings, resolved: Any) -> float | None:
    """Median elapsed seconds of the completed jobs with the same spec key as `resolved`, if any ran."""
    path = db_path(settings)
    if not path.exists():
        return None
    with Registry(path) as registry:
        values = sorted(registry.history_elapsed(spec_key(resolved)))
    if not values:
        return None
    mid = len(values) // 2
    return float(values[mid]) if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
