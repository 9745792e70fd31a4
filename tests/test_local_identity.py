"""A local job is known by more than its pid (issue 33, items 1 and 6): `cancel` never signals a
process that is not the job's, and a pid used again by a new job is a new id, not a traceback.

Everything here runs the real local backend: real processes, the CLI as a subprocess.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, wait_for_state

from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry, db_path
from deltajobs.spec.settings import load_settings


def stranger() -> subprocess.Popen[bytes]:
    """An unrelated process: what a job's pid belongs to after a reboot or a crash."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def record(job_id: str, run_dir: Path, submitted_at: float, state: str = "RUNNING") -> JobRow:
    """A local row with its run directory, as `submit --local` records one."""
    (run_dir / "submitit").mkdir(parents=True)
    pid = job_id.split("-")[1]
    row = JobRow(
        job_id=job_id,
        name="old",
        cluster="minidelta",
        backend="local",
        run_dir=str(run_dir),
        log_path=str(run_dir / "submitit" / f"{pid}_0_log.out"),
        err_path=str(run_dir / "submitit" / f"{pid}_0_log.err"),
        submitted_at=submitted_at,
        state=state,
        partition="local",
    )
    with Registry.open(load_settings()) as registry:
        registry.add(row)
    return row


def start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


@pytest.mark.parametrize("form", ["old row", "new id, another start"])
@pytest.mark.parametrize("how", [["cancel", "ID"], ["cancel", "--all", "--yes"]])
def test_cancel_leaves_a_process_that_took_the_jobs_pid_alive(form: str, how: list[str], tmp_path: Path) -> None:
    sleeper = stranger()
    try:
        if form == "old row":  # recorded before ids carried a start time, an hour before the sleep started
            row = record(f"local-{sleeper.pid}", tmp_path / "run", time.time() - 3600)
        else:  # the pid is right, the start time is not: the job's process ended and the pid was reused
            row = record(f"local-{sleeper.pid}-{start_ticks(sleeper.pid) - 1}", tmp_path / "run", time.time())
        proc = cli(*[row.job_id if a == "ID" else a for a in how])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{row.job_id}: was no longer running: FAILED\n"  # never "cancelled"
        time.sleep(0.5)
        assert sleeper.poll() is None, f"cancel killed an unrelated process: {proc.stdout}{proc.stderr}"
        state = cli_json("status", row.job_id)[0]["state"]
        assert state == "FAILED"  # its controller is gone: it ended without a result
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cancel_still_stops_a_real_local_job_and_its_task(tmp_path: Path) -> None:
    sub = cli_json("submit", "--command", "sleep 300", "--local")
    pid = int(sub["job_id"].split("-")[1])
    assert sub["job_id"] == f"local-{pid}-{start_ticks(pid)}"  # the controller's pid and start time
    wait_for_state(sub["job_id"], {"RUNNING"})
    deadline = time.time() + 30
    while time.time() < deadline and not _sleeps_under(pid):
        time.sleep(0.2)
    sleeps = {p: start_ticks(p) for p in _sleeps_under(pid)}
    assert sleeps, "the job's sleep never started"
    proc = cli("cancel", sub["job_id"])
    assert (proc.returncode, proc.stdout) == (0, f"{sub['job_id']}: cancelled\n"), proc.stderr
    assert wait_for_state(sub["job_id"], {"CANCELLED", "FAILED", "COMPLETED"}, timeout=30)["state"] == "CANCELLED"
    deadline = time.time() + 15
    while time.time() < deadline and _alive(pid, start_ticks_of(sub["job_id"])):
        time.sleep(0.2)
    assert not _alive(pid, start_ticks_of(sub["job_id"])), "the job's controller still runs"
    while time.time() < deadline and any(_alive(p, start) for p, start in sleeps.items()):
        time.sleep(0.2)
    assert not any(_alive(p, start) for p, start in sleeps.items()), "the job's sleep still runs"


def start_ticks_of(job_id: str) -> int:
    return int(job_id.split("-")[2])


def _alive(pid: int, start: int | None) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == start


def _sleeps_under(root: int) -> list[int]:
    """The live `sleep 300` processes descending from process `root`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue

    def under(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    found = []
    for pid in parents:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00300\x00" and under(pid):
                found.append(pid)
        except OSError:
            continue
    return found


def _fresh_pid_namespace() -> list[str]:
    """`unshare` that runs a command as pid 1 of a new pid namespace with its own /proc, where pids
    are handed out in the same order every time: the next job gets the pid an earlier one had."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux's unshare")
    for argv in ([unshare, "--pid", "--fork", "--mount-proc"], [unshare, "-r", "--pid", "--fork", "--mount-proc"]):
        if subprocess.run([*argv, "true"], capture_output=True).returncode == 0:
            return argv
    pytest.skip("this machine allows no new pid namespace (neither root nor unprivileged user namespaces)")


def test_a_new_local_job_that_gets_an_old_jobs_pid_is_submitted(tmp_path: Path) -> None:
    """Two `submit --local`, each in a fresh pid namespace: both controllers get the same pid, as
    after a reboot. The second is a new job with its own id, row and run directory."""
    namespace = _fresh_pid_namespace()
    argv = [*namespace, sys.executable, "-m", "deltajobs", "submit", "--command", "sleep 1", "--local", "--json"]
    subs = []
    for _ in range(2):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        subs.append(json.loads(proc.stdout))
    pids = [s["job_id"].split("-")[1] for s in subs]
    assert pids[0] == pids[1], f"the namespaces gave different pids: {pids}"
    assert subs[0]["job_id"] != subs[1]["job_id"]
    with Registry.open(load_settings()) as registry:
        assert sorted(r.job_id for r in registry.query()) == sorted(s["job_id"] for s in subs)
    assert all(Path(s["run_dir"]).is_dir() for s in subs)


def test_a_registry_error_is_one_line_never_a_traceback() -> None:
    """A registry that refuses the new row (here a trigger someone added) ends `submit` with one
    line, exit 1, and leaves nothing behind."""
    settings = load_settings()
    with Registry.open(settings):
        pass
    conn = sqlite3.connect(db_path(settings))
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END")
    conn.commit()
    conn.close()
    proc = cli("submit", "--command", "sleep 300", "--local")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("deltajobs: error: ") and "refused by a trigger" in proc.stderr
    runs = settings.runs_path
    assert not runs.exists() or list(runs.iterdir()) == []


def test_duplicate_job_id_is_named_in_one_line(tmp_path: Path) -> None:
    from deltajobs.errors import DeltaJobsError

    row = record("local-1", tmp_path / "run", time.time())
    with Registry.open(load_settings()) as registry, pytest.raises(DeltaJobsError, match="local-1 is already"):
        registry.add(row)
