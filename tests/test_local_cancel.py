"""`cancel` of a local job says what it did (cancelled, was no longer running, left alone and why),
and tells the job's process from a stranger's with or without /proc (issue 33 item 1, as reviewed).

Everything runs the real local backend and real processes. Without /proc (a Mac) is played by
making `local_process.procfs`, the one gate to /proc, say there is none: `ps` is then asked, for real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurmutil import cli, cli_json
from test_local_identity import _sleeps_under, record, start_ticks

from deltajobs.backends import local_process
from deltajobs.backends.local_process import CONTROLLER
from deltajobs.errors import DeltaJobsError
from deltajobs.jobs.executor import Job
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import load_settings


def lookalike(run_dir: Path) -> subprocess.Popen[bytes]:
    """A stranger whose command line is that of the controller of `run_dir`'s job: only its start
    time tells it apart from the job (as a pid reused by another deltajobs user's job would)."""
    code = "import time; time.sleep(300)"
    argv = [sys.executable, "-c", code, "-m", "submitit.local._local", str(run_dir / "submitit")]
    return subprocess.Popen(argv, start_new_session=True)


def started_at(pid: int) -> float:
    """When process `pid` started, as a Unix time, from the real /proc."""
    boot = next(
        float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    return boot + start_ticks(pid) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pids: list[int], seconds: float = 15) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return not any(alive(p) for p in pids)


def sleep_of(controller: int) -> list[int]:
    deadline = time.time() + 30
    while time.time() < deadline and not _sleeps_under(controller):
        time.sleep(0.2)
    return _sleeps_under(controller)


@pytest.fixture
def no_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A system without /proc, as a Mac: the backend must ask `ps`."""
    monkeypatch.setattr(local_process, "procfs", lambda: None)


# -- what cancel says ------------------------------------------------------------------------------


def test_cancel_says_which_jobs_it_stopped_and_how_the_others_had_ended(tmp_path: Path) -> None:
    job = cli_json("submit", "--command", "sleep 300", "--local")["job_id"]
    controller = int(job.split("-")[1])
    sleeps = sleep_of(controller)
    assert sleeps, "the job's sleep never started"
    stranger = lookalike(tmp_path / "took")
    try:
        took = record(f"local-{stranger.pid}-{start_ticks(stranger.pid) - 1}", tmp_path / "took", time.time())
        done = record("local-1-1", tmp_path / "done", time.time(), state="COMPLETED")
        ids = [job, took.job_id, done.job_id]
        assert cli_json("cancel", *ids) == [
            {"job_id": job, "cancelled": True, "state": "CANCELLED", "reason": None},
            {"job_id": took.job_id, "cancelled": False, "state": "FAILED", "reason": "was no longer running: FAILED"},
            {"job_id": done.job_id, "cancelled": False, "state": "COMPLETED", "reason": "already COMPLETED"},
        ]
        assert gone_within([controller, *sleeps]), "the job still runs"
        assert stranger.poll() is None, "cancel killed a process that took a job's pid"
        proc = cli("cancel", *ids)
        assert proc.returncode == 0 and proc.stdout.splitlines() == [
            f"{job}: already CANCELLED",
            f"{took.job_id}: already FAILED",
            f"{done.job_id}: already COMPLETED",
        ]
    finally:
        stranger.kill()
        stranger.wait()


def test_a_sweep_cancel_counts_only_the_points_it_stopped(tmp_path: Path) -> None:
    """`cancel` of rows whose process had ended returns no id for them (what `sweep cancel` counts)."""
    from deltajobs.jobs.lifecycle import cancel

    stranger = lookalike(tmp_path)
    try:
        row = record(f"local-{stranger.pid}-{start_ticks(stranger.pid) + 1}", tmp_path, time.time())
        with Registry.open(load_settings()) as registry:
            assert cancel(registry, [row]) == []
            assert registry.get(row.job_id).state == "FAILED"
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


# -- without /proc ---------------------------------------------------------------------------------


def test_without_proc_ps_tells_the_job_from_a_stranger(
    no_proc: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import run_main

    code, out, err = run_main(monkeypatch, capsys, "submit", "--command", "sleep 300", "--local", "--json")
    assert code == 0, err
    job = json.loads(out)["job_id"]
    match = re.fullmatch(r"local-(\d+)-s(\d+)", job)
    assert match, f"{job} does not hold the start ps read"
    controller = int(match[1])
    assert abs(int(match[2]) - started_at(controller)) <= 2  # ps's start: the controller's own
    sleeps = sleep_of(controller)
    assert sleeps, "the job's sleep never started"
    code, out, _ = run_main(monkeypatch, capsys, "status", job, "--json")
    assert json.loads(out)[0]["state"] == "RUNNING"  # a refresh through ps sees it run

    spared = []
    for form in ("another start", "old row"):
        run_dir = tmp_path / form.replace(" ", "-")
        stranger = lookalike(run_dir)
        spared.append(stranger)
        if form == "another start":  # the pid and command are right, the start is an hour off
            row = record(f"local-{stranger.pid}-s{int(started_at(stranger.pid)) - 3600}", run_dir, time.time())
        else:  # recorded before ids carried a start, an hour before the process started
            row = record(f"local-{stranger.pid}", run_dir, time.time() - 3600)
        code, out, err = run_main(monkeypatch, capsys, "cancel", row.job_id)
        assert (code, out, err) == (0, f"{row.job_id}: was no longer running: FAILED\n", "")
    try:
        code, out, err = run_main(monkeypatch, capsys, "cancel", job)
        assert (code, out, err) == (0, f"{job}: cancelled\n", "")
        assert gone_within([controller, *sleeps]), "the job still runs"
        assert all(s.poll() is None for s in spared), "cancel killed a process that took a job's pid"
    finally:
        for stranger in spared:
            stranger.kill()
            stranger.wait()


def test_without_proc_a_start_in_clock_ticks_cannot_be_checked_and_is_refused(
    no_proc: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id from /proc (a registry moved from Linux) read where there is none: its process cannot be
    told apart, so it is left alone, said in one line with what to do, exit 1; never "cancelled"."""
    from conftest import run_main

    stranger = lookalike(tmp_path)
    try:
        row = record(f"local-{stranger.pid}-{start_ticks(stranger.pid)}", tmp_path, time.time())
        code, out, err = run_main(monkeypatch, capsys, "cancel", row.job_id)
        assert code == 1 and out == "" and len(err.splitlines()) == 1, err
        said = f"deltajobs: error: {row.job_id}: not cancelled: cannot tell whether process {stranger.pid} "
        assert err.startswith(said), err
        assert f"kill {stranger.pid}" in err and "no /proc" in err
        code, out, _ = run_main(monkeypatch, capsys, "cancel", row.job_id, "--json")
        entry = json.loads(out)[0]
        assert code == 1 and entry["cancelled"] is False and entry["state"] == "RUNNING"
        assert entry["reason"].startswith(f"cannot tell whether process {stranger.pid}")
        with pytest.raises(DeltaJobsError, match=f"{row.job_id}: not cancelled: cannot tell"):
            Job.attach(row.job_id).cancel()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_without_proc_or_ps_nothing_is_signalled_and_the_user_is_told(
    no_proc: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import run_main

    code, out, err = run_main(monkeypatch, capsys, "submit", "--command", "sleep 300", "--local", "--json")
    assert code == 0, err
    job = json.loads(out)["job_id"]
    controller = int(job.split("-")[1])
    sleeps = sleep_of(controller)
    try:
        monkeypatch.setattr(local_process, "PS", "/nonexistent/ps")
        code, out, err = run_main(monkeypatch, capsys, "cancel", job)
        assert code == 1 and out == "" and ": cancelled" not in err, err
        assert err.startswith(f"deltajobs: error: {job}: not cancelled: cannot tell whether process {controller}")
        time.sleep(0.5)
        assert alive(controller) and all(alive(s) for s in sleeps), "a job was signalled though nothing could tell"
    finally:
        monkeypatch.setattr(local_process, "PS", "ps")
        assert Job.attach(job).cancel() is True  # the Executor's cancel: True when it stopped the job
        assert Job.attach(job).cancel() is False  # and False once it had ended
    assert gone_within([controller, *sleeps])


# -- undo ------------------------------------------------------------------------------------------


def test_undo_kills_a_job_it_just_started_even_without_a_start_in_its_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where neither /proc nor ps gave a start (the id is `local-<pid>`), `undo` (a registry write
    that failed after the job started) knows the controller as its own child, and kills it."""
    from conftest import run_main

    from deltajobs.backends.local import LocalBackend

    code, out, err = run_main(monkeypatch, capsys, "submit", "--command", "sleep 300", "--local", "--json")
    assert code == 0, err
    controller = int(json.loads(out)["job_id"].split("-")[1])
    sleeps = sleep_of(controller)
    assert sleeps, "the job's sleep never started"
    LocalBackend().undo([f"local-{controller}"])
    assert gone_within([controller, *sleeps], 10), "undo left the job running"


def test_undo_spares_a_process_that_is_not_its_own_child(tmp_path: Path) -> None:
    from deltajobs.backends.local import LocalBackend

    orphan = subprocess.run(  # a controller look-alike whose parent is not this process
        [
            "sh",
            "-c",
            f"{sys.executable} -c 'import time; time.sleep(60)' -m {CONTROLLER} {tmp_path} >/dev/null 2>&1 & echo $!",
        ],
        capture_output=True,
        text=True,
    )
    pid = int(orphan.stdout)
    try:
        LocalBackend().undo([f"local-{pid}"])
        time.sleep(0.3)
        assert alive(pid), "undo killed a process it had not started"
    finally:
        os.kill(pid, 9)
