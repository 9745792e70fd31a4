"""A search whose bookkeeping fails after its worker array is queued leaves nothing queued (issue 33,
item 2): the array is cancelled, and no row and no directory are left, on minidelta's real SLURM.

The failure is a real one: another process holds the registry's write lock (as a deltajobs on a node
that died holding it would), so recording the sweep times out after sbatch queued the array. The
busy timeout is lowered from 30 s to 2 s to keep the test short.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_main
from slurmutil import needs_slurm

from deltajobs.registry import store
from deltajobs.registry.store import Registry, db_path
from deltajobs.spec.settings import load_settings

pytestmark = [needs_slurm, pytest.mark.slurm]

SCRIPT = "import time\nfrom deltajobs import report\ntime.sleep(30)\nreport(epoch=1, val_acc=0.5)\n"
SEARCH = ["--search", "random", "--range", "lr=1e-4:1e-2:log", "--objective", "val_acc", "--trials", "2"]
HOLD = (
    "import sqlite3, sys, time\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('BEGIN IMMEDIATE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"  # until the test closes our stdin
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "train.py").write_text(SCRIPT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 2.0)
    return tmp_path


@contextlib.contextmanager
def registry_locked_elsewhere() -> Iterator[None]:
    """The registry's write lock, held by another process while the block runs."""
    settings = load_settings()
    with Registry.open(settings):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db_path(settings))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def jobs_under(runs: Path) -> dict[str, str]:
    """Every job that slurmctld still holds (MinJobAge: 300 s after it ended) whose batch script lies
    under `runs`: job id -> state. Not sacct: a job cancelled before it was ever eligible (a throttled
    array's pending tasks) has no Eligible time, and sacct's --starttime window never lists it."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%T|%o"], capture_output=True, text=True, check=True
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, state, command = line.split("|", 2)
        if command.startswith(f"{runs}/"):
            jobs[job_id] = state
    return jobs


def wait_all_cancelled(runs: Path, timeout: float = 60) -> dict[str, str]:
    deadline = time.time() + timeout
    while True:
        jobs = jobs_under(runs)
        if jobs and all(state.startswith("CANCELLED") for state in jobs.values()):
            return jobs
        assert time.time() < deadline, f"the workers were not cancelled: {jobs}"
        time.sleep(1.0)


def test_a_search_whose_sweep_cannot_be_recorded_cancels_its_queued_workers(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    with registry_locked_elsewhere():
        code, out, err = run_main(monkeypatch, capsys, "sweep", "train.py", *SEARCH, "--max-parallel", "2")
    assert code == 1 and out == "" and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("deltajobs: error: the registry at ") and "stayed locked for 2s" in last, err
    jobs = wait_all_cancelled(settings.runs_path)  # sbatch had queued them: slurmctld has them, cancelled
    assert len({job_id.split("_")[0] for job_id in jobs}) == 1, jobs  # one array (a pending one is one line: ID_[0-1])
    squeue = subprocess.run(
        ["squeue", "--noheader", "--format=%i", "--jobs", ",".join(jobs)], capture_output=True, text=True
    )
    assert squeue.stdout.strip() == "", squeue.stdout  # nothing of it is queued or running
    runs = settings.runs_path
    assert not runs.exists() or list(runs.iterdir()) == []  # no directory
    with Registry.open(settings) as registry:  # and, the lock gone, no row
        assert registry.query() == [] and registry._rows("SELECT * FROM sweeps") == []
