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

The shape of a row and of the tables (`JobRow`, the schema and its migration) is schema.py (its
names are importable from here as well); the runtime history (`spec_key`, `typical_elapsed`),
built on this module, is history.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.registry.schema import (
    JOB_COLUMNS,
    SCHEMA_VERSION,
    SELECT_JOBS,
    JobRow,
    Restore,
    create_tables,
    insert_rows,
)
from deltajobs.slurm.parse import FINAL_STATES
from deltajobs.spec.settings import Settings, private_dir

JOURNAL_MODE = "DELETE"  # see the module docstring: WAL does not work across hosts
BUSY_TIMEOUT_S = 30.0


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
    from deltajobs.injob.diskspace import DiskFullError

    kept = "every job is also in its run directory's job.json (`deltajobs registry rebuild` reads them)"
    return DiskFullError(path, kept, "run the command again")


def db_path(settings: Settings) -> Path:
    return settings.home_path / "registry.sqlite"


class Registry:
    def __init__(self, path: Path, restore: Callable[[], Restore] | None = None) -> None:
        """Open (or create) the registry at `path`; a new one starts with the rows `restore` gives."""
        self.path = path
        try:
            private_dir(path.parent)  # 0700 whatever the umask, when this makes it (spec/settings.py)
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
            from deltajobs.registry.records import recorded_rows

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
        except sqlite3.ProgrammingError:
            raise  # a misuse: a bug, not the file (the CLI still says it in one line)
        except sqlite3.IntegrityError as err:  # a constraint: not the file, and nothing was written
            raise DeltaJobsError(f"the registry at {self.path} refused the change ({err})") from None
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
            create_tables(conn, restore)

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
        from deltajobs.registry.records import record_jobs  # the run directories' copy, which rebuild reads back

        now = time.time()
        rows = [replace(r, updated_at=now) for r in rows]
        # A duplicate id must not overwrite the job.json of the job it names (nor reach SQLite's error).
        taken = [r.job_id for r in rows if self._rows("SELECT 1 FROM jobs WHERE job_id = ?", (r.job_id,))]
        if taken:
            raise DeltaJobsError(
                f"job {', '.join(taken)} is already in the registry ({self.path}); a job id names one job: "
                "nothing was recorded"
            )
        record_jobs(rows, strict=True)
        with self.transaction() as conn:
            insert_rows(conn, rows, [], replace=False, ignore=False)

    def restore(self, jobs: list[JobRow], sweeps: list[dict[str, Any]], replace: bool = True) -> None:
        """Rows recorded elsewhere (the run directories); `replace`: they win over rows already here."""
        with self.transaction() as conn:
            insert_rows(conn, jobs, sweeps, replace=replace)

    def update(self, job_id: str, **values: Any) -> None:
        self.update_many({job_id: values})

    def update_many(self, changes: dict[str, dict[str, Any]]) -> None:
        """Change rows; a job whose state changed has its `job.json` rewritten too, inside the same
        transaction: two processes changing one job write its job.json in the order they commit."""
        from deltajobs.injob.progress import restarts
        from deltajobs.registry.records import record_jobs

        if not changes:
            return
        now = time.time()
        changed: list[JobRow] = []
        with self.transaction() as conn:
            for job_id, values in changes.items():
                values = {**values, "updated_at": now}
                unknown = set(values) - set(JOB_COLUMNS)
                if unknown:
                    raise ValueError(f"unknown registry columns: {sorted(unknown)}")
                old = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if old is not None and values.get("state") in FINAL_STATES and old["state"] not in FINAL_STATES:
                    values["restarts"] = restarts(Path(old["run_dir"]))  # final now: counted once, kept
                assignments = ", ".join(f"{k} = ?" for k in values)
                conn.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*values.values(), job_id])
                if old is not None and values.get("state", old["state"]) != old["state"]:
                    changed.append(replace(JobRow(**dict(old)), **values))
            record_jobs(changed)  # before COMMIT, under the write lock (never raises: strict=False)

    def get(self, job_id: str) -> JobRow:
        """One job by id; `last` is the most recently submitted one."""
        if job_id == "last":
            found = self._rows(f"{SELECT_JOBS} ORDER BY submitted_at DESC LIMIT 1")
        else:
            found = self._rows(f"{SELECT_JOBS} WHERE job_id = ?", (job_id,))
        if not found:
            raise NotFoundError(
                f"job {job_id} is not in the registry ({self.path}); `deltajobs status --all` lists them"
            )
        return JobRow(*found[0])

    def query(self, *, recent_since: float | None = None, sweep_id: str | None = None) -> list[JobRow]:
        """All rows; or those not final or submitted after `recent_since`; or one sweep's."""
        sql, args = SELECT_JOBS, list[Any]()
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
        from deltajobs.registry.records import record_sweep

        row: dict[str, Any] = {"sweep_id": sweep_id, "job": job, "array_job_id": None, "backend": backend}
        row |= {"created_at": time.time(), "params": params, "run_dir": run_dir}
        record_sweep(row, strict=True)
        with self.transaction() as conn:
            insert_rows(conn, [], [row], replace=False, ignore=False)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        found = self._rows("SELECT * FROM sweeps WHERE sweep_id = ?", (sweep_id,))
        if not found:
            raise NotFoundError(f"sweep {sweep_id} is not in the registry")
        return {**dict(found[0]), "params": json.loads(found[0]["params"])}

    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep and search, newest first (its params as recorded)."""
        found = self._rows("SELECT * FROM sweeps ORDER BY created_at DESC", ())
        return [{**dict(r), "params": json.loads(r["params"])} for r in found]

    def set_sweep_params(self, sweep_id: str, params: dict[str, Any]) -> None:
        self._update_sweep(sweep_id, "params", json.dumps(params))

    def set_sweep_array(self, sweep_id: str, array_job_id: str) -> None:
        self._update_sweep(sweep_id, "array_job_id", array_job_id)

    def _update_sweep(self, sweep_id: str, column: str, value: Any) -> None:
        from deltajobs.registry.records import record_sweep

        with self.transaction() as conn:  # sweep-row.json under the write lock too, as in update_many
            conn.execute(f"UPDATE sweeps SET {column} = ? WHERE sweep_id = ?", (value, sweep_id))
            row = conn.execute("SELECT * FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
            if row is not None:
                record_sweep({**dict(row), "params": json.loads(row["params"])})

    def delete_jobs(self, job_ids: list[str]) -> None:
        """Remove rows of jobs just submitted whose bookkeeping failed (their run directories go too)."""
        with self.transaction() as conn:
            conn.executemany("DELETE FROM jobs WHERE job_id = ?", [(job_id,) for job_id in job_ids])

    def delete_sweep(self, sweep_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM jobs WHERE sweep_id = ?", (sweep_id,))
            conn.execute("DELETE FROM sweeps WHERE sweep_id = ?", (sweep_id,))
