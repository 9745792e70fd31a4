"""The registry under load without a scheduler (issue 24, section 5): 100 processes that each open a
registry that does not exist yet (so they race to create it) and record one job, while 20 others
keep reading it and writing state changes, as `status --watch` does. No row is lost or doubled,
no process sees a lock error, and each job's `job.json` is there. The same through the real CLI
and SLURM: tests/test_load.py."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from pathlib import Path

from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import load_settings

WRITERS = 100
WATCHERS = 20
ROUNDS = 15  # refreshes per watcher


def row(i: int, runs: Path) -> JobRow:
    run_dir = runs / f"job-{i}"
    run_dir.mkdir(parents=True)
    return JobRow(
        job_id=str(70000 + i),
        name=f"load-{i}",
        cluster="minidelta",
        backend="slurm",
        run_dir=str(run_dir),
        log_path=str(run_dir / "o"),
        err_path=str(run_dir / "e"),
        submitted_at=float(i),
        state="PENDING",
    )


def submit(i: int, runs: Path, errors: multiprocessing.Queue[str]) -> None:
    try:
        with Registry.open(load_settings()) as registry:
            registry.add(row(i, runs))
    except BaseException:
        errors.put(f"writer {i}: {traceback.format_exc()}")
        os._exit(1)


def watch(k: int, errors: multiprocessing.Queue[str]) -> None:
    try:
        for n in range(ROUNDS):
            with Registry.open(load_settings()) as registry:
                rows = registry.query(recent_since=0)
                state = "RUNNING" if n % 2 else "PENDING"  # a change at every refresh: a write each time
                registry.update_many({r.job_id: {"state": state} for r in rows if int(r.job_id) % WATCHERS == k})
    except BaseException:
        errors.put(f"watcher {k}: {traceback.format_exc()}")
        os._exit(1)


def test_100_writers_racing_to_create_it_and_20_refreshing_watchers_lose_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    home = Path(os.environ["DELTAJOBS_HOME"])
    assert not (home / "registry.sqlite").exists()
    ctx = multiprocessing.get_context("fork")  # cheap on 2 cores; no registry is open in this process yet
    errors: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=submit, args=(i, runs, errors)) for i in range(WRITERS)]
    procs += [ctx.Process(target=watch, args=(k, errors)) for k in range(WATCHERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, failures[:3]
    assert [p.exitcode for p in procs] == [0] * len(procs)
    with Registry.open(load_settings()) as registry:
        rows = registry.query()
    assert len(rows) == WRITERS
    assert {r.job_id for r in rows} == {str(70000 + i) for i in range(WRITERS)}
    assert all(Path(r.run_dir, "job.json").is_file() for r in rows)
