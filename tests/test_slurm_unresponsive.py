"""SLURM slow or not answering (issue 24, section 2), on minidelta: the real slurmctld stopped with
SIGSTOP around a submit, a cancel and a sweep's array, and resumed (always, in a `finally` and by a
timer) within 18 s, since other tests share it; and a controller that stays away (connection
refused). One job, one registry row, exit 0; or one clear line and nothing recorded. The retry and
lookup logic itself, with `slurm.run` faked: tests/test_slurm_unresponsive_retry.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from slurmutil import needs_slurm

from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import load_settings

pytestmark = [needs_slurm, pytest.mark.slurm]


def registry_rows() -> list[JobRow]:
    with Registry.open(load_settings()) as registry:
        return registry.query(recent_since=0)


def run_dirs() -> list[Path]:
    runs = load_settings().runs_path
    return sorted(runs.iterdir()) if runs.exists() else []


# -- on minidelta: slurmctld stopped (SIGSTOP) and resumed ----------------------------------------

STOP_AT_MOST_S = 18.0  # slurmctld is shared: never stopped longer than this


@contextmanager
def slurmctld_stopped() -> Iterator[None]:
    """slurmctld stopped; resumed on leaving, and by a timer after STOP_AT_MOST_S whatever happens."""
    pid = int(subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True, text=True).stdout.split()[0])
    resume = threading.Timer(STOP_AT_MOST_S, os.kill, (pid, signal.SIGCONT))
    os.kill(pid, signal.SIGSTOP)
    resume.start()
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        resume.cancel()


def start_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "deltajobs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO,
    )


def children(pid: int, name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def wait_for_a_timed_out(proc: subprocess.Popen[str], name: str) -> bool:
    """Until a `name` child of `proc` has started and ended (timed out against the stopped
    slurmctld, ~MessageTimeout); False if none did within the stop's limit."""
    seen = False
    limit = time.monotonic() + STOP_AT_MOST_S - 1
    while time.monotonic() < limit and proc.poll() is None:
        running = bool(children(proc.pid, name))
        if seen and not running:
            return True
        seen = seen or running
        time.sleep(0.1)
    return False


def squeue_tagged(prefix: str) -> list[str]:
    """The ids of the jobs slurmctld holds whose comment starts with `prefix`."""
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "--format=%i|%k"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.partition("|")[2].startswith(prefix)]


def cancel_ours() -> None:
    """Cancel every job tagged with one of this test's run directories (what the test left queued)."""
    ids = [job for d in run_dirs() for job in squeue_tagged(f"deltajobs:{d.name}:")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-cpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    (tmp_path / "wait.py").write_text(
        "import sys, time\nprint('waiting', flush=True)\ntime.sleep(float(sys.argv[-1]))\n"
    )
    return tmp_path


CPU_JOB = ("--partition", "cpu", "--gpus", "0", "--cpus", "1", "--time", "00:05:00", "--yes")


def finish(proc: subprocess.Popen[str], timeout: float = 150) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_a_submit_while_slurmctld_is_stopped_is_one_job_and_one_row(project: Path) -> None:
    with slurmctld_stopped():
        proc = start_cli("submit", "wait.py", *CPU_JOB, "--json", "--", "60", cwd=project)
        timed_out = wait_for_a_timed_out(proc, "sbatch")
    code, out, err = finish(proc)
    try:
        assert timed_out, f"sbatch did not time out while slurmctld was stopped: {err}"
        assert code == 0, err
        job_id = json.loads(out)["job_id"]
        lines = err.splitlines()
        assert lines[0].startswith(
            "deltajobs: SLURM is slow to answer (sbatch: Socket timed out on send/recv operation)"
        )
        assert f"SLURM had queued the job: {job_id} (comment deltajobs:" in lines[1] and len(lines) == 2
        rows = registry_rows()
        assert [r.job_id for r in rows] == [job_id]
        assert squeue_tagged(f"deltajobs:{Path(rows[0].run_dir).name}:") == [job_id]  # one job, not two
    finally:
        cancel_ours()


def test_a_cancel_while_slurmctld_is_stopped_cancels_and_says_so(project: Path) -> None:
    proc = start_cli("submit", "wait.py", *CPU_JOB, "--json", "--", "120", cwd=project)
    code, out, err = finish(proc)
    assert code == 0, err
    sub = json.loads(out)
    job_id = sub["job_id"]
    try:
        # running its program: a step started while slurmctld is stopped fails ("Unable to confirm allocation")
        deadline = time.monotonic() + 120
        while "waiting" not in (Path(sub["log"]).read_text() if Path(sub["log"]).exists() else ""):
            assert time.monotonic() < deadline, f"job {job_id} did not start its program"
            time.sleep(0.5)
        with slurmctld_stopped():
            proc = start_cli("cancel", job_id, cwd=project)
            timed_out = wait_for_a_timed_out(proc, "scancel")
        code, out, err = finish(proc)
        assert timed_out, f"scancel did not time out while slurmctld was stopped: {err}"
        assert code == 0 and out == f"{job_id}: cancelled\n", err
        assert err.startswith("deltajobs: SLURM is slow to answer (") and len(err.splitlines()) == 1
        argv = ["squeue", "-h", "--states=all", f"--jobs={job_id}", "--format=%T"]
        assert subprocess.run(argv, text=True, capture_output=True).stdout.strip() in ("CANCELLED", "COMPLETING", "")
    finally:
        cancel_ours()


def test_a_sweep_while_slurmctld_is_stopped_is_one_array(project: Path) -> None:
    with slurmctld_stopped():
        proc = start_cli("sweep", "wait.py", "--grid", "seconds=1,2", *CPU_JOB, "--json", cwd=project)
        timed_out = wait_for_a_timed_out(proc, "sbatch")
    code, out, err = finish(proc)
    try:
        assert timed_out, f"sbatch did not time out while slurmctld was stopped: {err}"
        assert code == 0, err
        sweep: dict[str, Any] = json.loads(out)
        rows = registry_rows()
        assert sorted(r.job_id for r in rows) == [f"{sweep['array_job_id']}_{i}" for i in range(2)]
        sweep_dir = Path(sweep["sweep_dir"]).name
        assert {job.split("_")[0] for job in squeue_tagged(f"deltajobs:{sweep_dir}:")} == {sweep["array_job_id"]}
        assert len(err.splitlines()) == 2 and "SLURM had queued the job" in err
    finally:
        ids = [
            job
            for job in squeue_tagged("deltajobs:")
            if job.split("_")[0] in {r.job_id.split("_")[0] for r in registry_rows()}
        ]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)


def test_a_slurmctld_that_stays_away_is_one_line_and_nothing_recorded(project: Path, tmp_path: Path) -> None:
    """Connection refused (a slurm.conf naming a port nothing listens on): the shared slurmctld runs on."""
    conf = tmp_path / "slurm.conf"
    text = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    conf.write_text(text.replace("SlurmctldPort=6817", "SlurmctldPort=6999"))
    env = {"SLURM_CONF": str(conf), "DELTAJOBS_SLURM_DEADLINE": "25"}
    started = time.monotonic()
    code, out, err = finish(start_cli("submit", "wait.py", *CPU_JOB, env=env, cwd=project))
    assert code == 3 and out == "" and time.monotonic() - started < 40
    lines = err.splitlines()
    assert lines[0].startswith("deltajobs: SLURM is slow to answer (sbatch: Unable to contact slurm controller")
    assert len(lines) == 2 and lines[1].startswith("deltajobs: error: slurmctld is not answering: sbatch failed:")
    assert lines[1].endswith("; nothing was submitted")
    assert run_dirs() == [] and registry_rows() == []
