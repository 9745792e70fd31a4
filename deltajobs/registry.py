"""Job history in SQLite under DELTAJOBS_HOME: record, refresh, query; a cache of the run directories.

One row per job, one per sweep; writes are short BEGIN IMMEDIATE transactions with a generous busy
timeout, so parallel submits never lose a row. The file is private (mode 0600).

Journal mode: rollback (DELETE), not WAL. On Delta the file sits on Lustre, shared by the login
nodes and every compute node (a job may submit its successor). WAL keeps its index in shared memory
that other hosts cannot see: "All processes using a database must be on the same host computer; WAL
does not work over a network filesystem" (https://www.sqlite.org/wal.html). A rollback journal needs
only POSIX advisory locks on the file (https://www.sqlite.org/lockingv3.html), which a network
filesystem can keep coherent across hosts. DELETE is the default, most exercised mode and leaves no
journal between writes; `synchronous=FULL` (NORMAL is only crash-safe under WAL). The locks must work:
SQLite names "filesystems with broken or missing lock implementations" first among the ways to
corrupt a database (https://www.sqlite.org/howtocorrupt.html 2.1; faq.html#q5 on NFS). On Lustre the
client mount option decides: `flock` is coherent across nodes, `localflock` per node (silently unsafe
here), `noflock` (the manual's default) fails with ENOSYS. Delta's is not documented: GUESS `flock`
(`mount -t lustre` shows it). `noflock` is named in one line; `localflock` cannot be seen from one
node, hence this file is only a cache: each row is also in its run directory (`job.json`, written
before the row and at each change of state), each sweep's in its directory (`sweep-row.json`). A
deleted registry is recreated from them by the next command; a damaged one raises `RegistryDamaged`:
run `deltajobs registry rebuild` (rebuild.py).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from deltajobs.config import Settings, private_dir
from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.slurm import FINAL_STATES

SCHEMA_VERSION = 2  # 2: jobs.restarts (version 1 files gain the column on open)
JOURNAL_MODE = "DELETE"  # see the module docstring: WAL does not work across hosts
BUSY_TIMEOUT_S = 30.0

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
_SWEEP_COLUMNS = ["sweep_id", "job", "array_job_id", "backend", "created_at", "params", "run_dir"]


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

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}  # every field is a scalar: no deep copy


_COLUMNS = [f.name for f in fields(JobRow)]
_SELECT_JOBS = f"SELECT {','.join(_COLUMNS)} FROM jobs"  # in JobRow's order: rows build positionally (fast)

Restore = tuple[list[JobRow], list[dict[str, Any]]]  # what a new registry starts from: rows recorded elsewhere


class RegistryDamaged(DeltaJobsError):
    """The registry file is not a readable database any more: `deltajobs registry rebuild`."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"the registry at {path} is damaged (unreadable: {reason}): run `deltajobs registry rebuild`")


def registry_failure(path: Path, err: sqlite3.Error) -> DeltaJobsError:
    """An SQLite error as the one line a user can act on."""
    name, text = getattr(err, "sqlite_errorname", "") or "", str(err)
    if name.startswith("SQLITE_FULL"):
        return registry_full(path)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or text.startswith(("no such table", "no such column")):
        return RegistryDamaged(path, text)
    if name.startswith("SQLITE_IOERR") and "LOCK" in name:
        why = "its filesystem refuses POSIX locks (Lustre mounted without `flock`?)"
        return DeltaJobsError(f"the registry at {path} cannot be locked ({text}): {why}; set DELTAJOBS_HOME elsewhere")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        why = "another deltajobs is writing it, or a node died holding its lock"
        return DeltaJobsError(f"the registry at {path} stayed locked for {BUSY_TIMEOUT_S:g}s ({why}); try again")
    return DeltaJobsError(f"the registry at {path} cannot be used ({text})")


def registry_full(path: Path) -> DeltaJobsError:
    """The registry's filesystem is full or over quota (SQLITE_FULL, ENOSPC, EDQUOT): nothing is lost,
    each job is also in its run directory's job.json."""
    from deltajobs.diskspace import DiskFullError

    kept = "every job is also in its run directory's job.json (`deltajobs registry rebuild` reads them)"
    return DiskFullError(path, kept, "run the command again")


def db_path(settings: Settings) -> Path:
    return settings.home_path / "registry.sqlite"


class Registry:
    def __init__(self, path: Path, restore: Callable[[], Restore] | None = None) -> None:
        """Open (or create) the registry at `path`; a new one starts with the rows `restore` gives."""
        self.path = path
        try:
            private_dir(path.parent)  # 0700 whatever the umask, when this makes it (config.py)
            if not path.exists():  # create private before SQLite opens it
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise registry_full(path) from None
            raise
        try:
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise registry_failure(path, err) from None
        self._conn.row_factory = sqlite3.Row
        try:
            with self._guard():
                self._set_journal_mode()
                self._conn.execute("PRAGMA synchronous=FULL")
                if self._conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    self._create(restore)
                for table in ("jobs", "sweeps"):  # the pages written last: damage shows before anything starts
                    self._conn.execute(f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1").fetchall()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open(cls, settings: Settings) -> Registry:
        """The registry under DELTAJOBS_HOME; use it as `with Registry.open(settings) as registry:`.
        A missing one is recreated from what the run directories recorded."""

        def recorded() -> Restore:
            from deltajobs.rebuild import recorded_rows

            return recorded_rows(settings.runs_path)

        return cls(db_path(settings), restore=recorded)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite's errors as one line each: a damaged file says to rebuild it."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # a duplicate id or a misuse: a bug, not the file
        except sqlite3.DatabaseError as err:
            raise registry_failure(self.path, err) from None

    def _set_journal_mode(self) -> None:
        try:
            self._conn.execute(f"PRAGMA journal_mode={JOURNAL_MODE}")
        except sqlite3.OperationalError as err:
            # A registry from before, still open in WAL mode by another process: it switches on a
            # later open, when this one is the only connection.
            if not getattr(err, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
                raise

    def _create(self, restore: Callable[[], Restore] | None) -> None:
        """The tables, in one transaction: of processes creating it at once, exactly one restores."""
        with self.transaction() as conn:
            existed = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone() is not None
            for statement in _SCHEMA.split(";"):
                conn.execute(statement)
            if "restarts" not in {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}:  # version 1
                conn.execute("ALTER TABLE jobs ADD COLUMN restarts INTEGER")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if restore is not None and not existed:
                _insert(conn, *restore(), replace=False)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._guard():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._guard():
            return self._conn.execute(sql, list(args)).fetchall()

    def add(self, row: JobRow) -> None:
        """Record a new job: its `job.json` first, then its row."""
        self.add_many([row])

    def add_many(self, rows: Iterable[JobRow]) -> None:
        from deltajobs.rebuild import record_jobs  # the run directories' copy, which rebuild reads back

        now = time.time()
        rows = [replace(r, updated_at=now) for r in rows]
        record_jobs(rows, strict=True)
        with self.transaction() as conn:
            _insert(conn, rows, [], replace=False, ignore=False)

    def restore(self, jobs: list[JobRow], sweeps: list[dict[str, Any]], replace: bool = True) -> None:
        """Rows recorded elsewhere (the run directories); `replace`: they win over rows already here."""
        with self.transaction() as conn:
            _insert(conn, jobs, sweeps, replace=replace)

    def update(self, job_id: str, **values: Any) -> None:
        self.update_many({job_id: values})

    def update_many(self, changes: dict[str, dict[str, Any]]) -> None:
        """Change rows; a job whose state changed has its `job.json` rewritten too."""
        from deltajobs.progress import restarts
        from deltajobs.rebuild import record_jobs

        if not changes:
            return
        now = time.time()
        changed: list[JobRow] = []
        with self.transaction() as conn:
            for job_id, values in changes.items():
                values = {**values, "updated_at": now}
                unknown = set(values) - set(_COLUMNS)
                if unknown:
                    raise ValueError(f"unknown registry columns: {sorted(unknown)}")
                old = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if old is not None and values.get("state") in FINAL_STATES and old["state"] not in FINAL_STATES:
                    values["restarts"] = restarts(Path(old["run_dir"]))  # final now: counted once, kept
                assignments = ", ".join(f"{k} = ?" for k in values)
                conn.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*values.values(), job_id])
                if old is not None and values.get("state", old["state"]) != old["state"]:
                    changed.append(replace(JobRow(**dict(old)), **values))
        record_jobs(changed)

    def get(self, job_id: str) -> JobRow:
        """One job by id; `last` is the most recently submitted one."""
        if job_id == "last":
            found = self._rows(f"{_SELECT_JOBS} ORDER BY submitted_at DESC LIMIT 1")
        else:
            found = self._rows(f"{_SELECT_JOBS} WHERE job_id = ?", (job_id,))
        if not found:
            raise NotFoundError(
                f"job {job_id} is not in the registry ({self.path}); `deltajobs status --all` lists them"
            )
        return JobRow(*found[0])

    def find(self, job_ids: Iterable[str]) -> list[JobRow]:
        return [self.get(job_id) for job_id in job_ids]

    def query(self, *, recent_since: float | None = None, sweep_id: str | None = None) -> list[JobRow]:
        """All rows; or those not final or submitted after `recent_since`; or one sweep's."""
        sql, args = _SELECT_JOBS, list[Any]()
        if sweep_id is not None:
            sql += " WHERE sweep_id = ?"
            args.append(sweep_id)
        elif recent_since is not None:
            sql += f" WHERE state NOT IN ({','.join('?' for _ in FINAL_STATES)}) OR submitted_at >= ?"
            args += [*sorted(FINAL_STATES), recent_since]
        sql += " ORDER BY sweep_index, submitted_at, job_id" if sweep_id else " ORDER BY submitted_at, job_id"
        return [JobRow(*r) for r in self._rows(sql, args)]

    def history_elapsed(self, spec_key: str) -> list[int]:
        rows = self._rows(
            "SELECT elapsed_s FROM jobs WHERE spec_key = ? AND state = 'COMPLETED' AND elapsed_s > 0", (spec_key,)
        )
        return [r[0] for r in rows]

    # sweeps
    def add_sweep(self, sweep_id: str, job: str, backend: str, params: dict[str, Any], run_dir: str) -> None:
        """Record a new sweep: its `sweep-row.json` first, then its row."""
        from deltajobs.rebuild import record_sweep

        row: dict[str, Any] = {"sweep_id": sweep_id, "job": job, "array_job_id": None, "backend": backend}
        row |= {"created_at": time.time(), "params": params, "run_dir": run_dir}
        record_sweep(row, strict=True)
        with self.transaction() as conn:
            _insert(conn, [], [row], replace=False, ignore=False)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        found = self._rows("SELECT * FROM sweeps WHERE sweep_id = ?", (sweep_id,))
        if not found:
            raise NotFoundError(f"sweep {sweep_id} is not in the registry")
        return {**dict(found[0]), "params": json.loads(found[0]["params"])}

    def set_sweep_params(self, sweep_id: str, params: dict[str, Any]) -> None:
        self._update_sweep(sweep_id, "params", json.dumps(params))

    def set_sweep_array(self, sweep_id: str, array_job_id: str) -> None:
        self._update_sweep(sweep_id, "array_job_id", array_job_id)

    def _update_sweep(self, sweep_id: str, column: str, value: Any) -> None:
        from deltajobs.rebuild import record_sweep

        with self.transaction() as conn:
            conn.execute(f"UPDATE sweeps SET {column} = ? WHERE sweep_id = ?", (value, sweep_id))
        record_sweep(self.sweep(sweep_id))

    def delete_sweep(self, sweep_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM jobs WHERE sweep_id = ?", (sweep_id,))
            conn.execute("DELETE FROM sweeps WHERE sweep_id = ?", (sweep_id,))


def _insert(
    conn: sqlite3.Connection, jobs: list[JobRow], sweeps: list[dict[str, Any]], replace: bool, ignore: bool = True
) -> None:
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE" if ignore else "INSERT"
    marks = ",".join("?" for _ in _COLUMNS)
    conn.executemany(
        f"{verb} INTO jobs ({','.join(_COLUMNS)}) VALUES ({marks})", [[getattr(r, c) for c in _COLUMNS] for r in jobs]
    )
    marks = ",".join("?" for _ in _SWEEP_COLUMNS)
    conn.executemany(
        f"{verb} INTO sweeps ({','.join(_SWEEP_COLUMNS)}) VALUES ({marks})",
        [[json.dumps(s[c]) if c == "params" else s[c] for c in _SWEEP_COLUMNS] for s in sweeps],
    )


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
