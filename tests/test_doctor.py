"""`deltajobs doctor` and `deltajobs shell`: the job's environment checked from the login node, each
failure with its cause and fix; the set-up lines are the rendered script's own; a shell on a node."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_main
from slurmutil import needs_slurm

from deltajobs.backends import probe
from deltajobs.environment import doctor
from deltajobs.spec.render import render, setup_lines
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

ACCOUNTS = """\
Project Summary for User 'student':

Project         Description                    Balance (Hours)    Deposited (Hours)
--------------  ---------------------------  -----------------  -------------------
bgvu-delta-gpu  CS 598 deep learning course                  0                 5000
bgvu-delta-cpu  CS 598 deep learning course              20000                20000
"""


def resolve(*sets: str, cluster: str = "minidelta", job: str | dict = "mnist") -> object:
    return resolve_job(job, Overrides(sets=list(sets), account="bgvu-delta-gpu"), load_settings(), cluster)


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_setup_lines_are_the_rendered_scripts_own() -> None:
    job = resolve("environment.env={A: 'x y'}", "environment.venv=/u/v", cluster="delta")
    script = render(job, Path("/projects/x/RUN")).splitlines()
    positions = [script.index(line) for line in setup_lines(job)]
    assert positions == sorted(positions) and len(positions) == 4  # reset, load, activate, export


def test_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = doctor.directory_check("runs directory", Path("/tmp/me/runs"), "--runs-dir")
    assert bad.status == "fail" and "compute nodes do not see" in bad.detail and "/work/hdd/" in bad.fix
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(doctor, "UNSEEN_ROOTS", ("/nonexistent-root",))  # tmp_path lies under /tmp
    home = doctor.directory_check("runs directory", tmp_path / "runs", "--runs-dir")
    assert home.status == "warn" and "NCSA says is not for job I/O" in home.detail
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() != 0:  # root writes anywhere
        assert doctor.directory_check("runs directory", locked / "runs", "--runs-dir").status == "fail"


def test_an_account_with_no_balance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "accounts"  # Delta's `accounts`, at the process seam
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{ACCOUNTS}EOF\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    check = doctor.account_check(resolve())
    assert check.status == "fail"
    assert check.detail == "bgvu-delta-gpu has no balance left (0 SU): jobs would pend with QOSGrpBillingMinutes"
    assert "ask your allocation's PI" in check.fix


def test_the_jobs_python_is_probed_in_a_subshell(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = probe.interpreter_check(resolve(), cached=True)
    assert good.status == "ok" and "deltajobs 0.1.0, submitit" in good.detail and "torch" in good.detail
    calls = []
    monkeypatch.setattr(probe.subprocess, "run", lambda *a, **k: calls.append(a))
    assert probe.interpreter_check(resolve(), cached=True) == good and calls == []  # the second costs nothing


def test_a_venv_that_is_not_there_and_a_module_that_does_not_exist(fresh_cache: Path) -> None:
    check = probe.interpreter_check(resolve("environment.venv=/nonexistent/venv"))
    assert check.status == "fail" and "cannot activate the venv" in check.detail
    assert check.fix == "create the venv, or point environment.venv at one"
    check = probe.interpreter_check(resolve("environment.modules=[nosuch/1.0]"))
    assert check.status == "fail" and "'module load nosuch/1.0' failed" in check.detail
    assert "module avail" in check.fix


def test_a_python_without_deltajobs(fresh_cache: Path, tmp_path: Path) -> None:
    """The trap NCSA's module system sets: the job's python is another one, without deltajobs."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    check = probe.interpreter_check(resolve(f"environment.venv={bare}"))
    assert check.status == "fail"
    assert "deltajobs missing (ModuleNotFoundError: No module named 'deltajobs')" in check.detail
    assert "run deltajobs from the venv the job should use" in check.fix


def test_doctor_command_output_and_exit_codes(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_HOME", str(tmp_path / "work" / "state"))  # not /tmp for the check
    monkeypatch.setattr(doctor, "UNSEEN_ROOTS", ("/nonexistent-root",))
    code, out, err = run_main(monkeypatch, capsys, "doctor", "--cluster", "minidelta")
    assert code == 0, out + err
    assert out.splitlines()[0] == "deltajobs doctor: shell on minidelta (gpuA100x4)"
    assert "  ok    job's python" in out and out.splitlines()[-1] == "all checks passed"
    code, out, _ = run_main(
        monkeypatch, capsys, "doctor", "--cluster", "minidelta", "--set", "environment.venv=/no/venv", "--json"
    )
    data = json.loads(out)
    assert code == 1 and not data["ok"]
    assert [c["status"] for c in data["checks"] if c["name"].startswith("job's python")] == ["fail"]


def test_doctor_without_an_account_says_so_as_a_check(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A new user's first `doctor` (and `remote setup`'s, before `init`): every check runs, the
    missing account is one of them with its fix, not an error that hides the rest."""
    monkeypatch.setenv("DELTAJOBS_HOME", str(tmp_path / "work" / "state"))
    monkeypatch.setattr(doctor, "UNSEEN_ROOTS", ("/nonexistent-root",))
    code, out, err = run_main(monkeypatch, capsys, "doctor", "--cluster", "minidelta")
    assert code == 1 and err == "", out + err
    assert out.splitlines()[0] == "deltajobs doctor: shell on minidelta (gpuA100x4)"
    assert "  FAIL  account: no account" in out and "fix: pass -A ACCOUNT" in out
    assert "  ok    job's python" in out and out.splitlines()[-1].startswith("1 problem(s)")


@needs_slurm
def test_submit_refuses_a_job_whose_python_cannot_run_it(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    code, out, err = run_main(
        monkeypatch, capsys, "submit", "mnist", "--cluster", "minidelta", "--set", "environment.venv=/no/venv"
    )
    assert code == 2 and out == ""
    assert err.startswith("deltajobs: error: environment: the job would fail: /no/venv/bin/python: ")
    assert not load_settings().runs_path.exists()


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    out, end = b"", time.time() + timeout
    while time.time() < end and marker not in out:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@needs_slurm
@pytest.mark.slurm
def test_shell_opens_on_a_node_with_the_jobs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "DELTAJOBS_ACCOUNT": "bgvu-delta-gpu", "DELTAJOBS_CLUSTER": "minidelta"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: deltajobs shell on a terminal
        os.execve(sys.executable, [sys.executable, "-m", "deltajobs", "shell", "--time", "00:05:00"], env)
    banner = read_until(fd, b"exit or Ctrl-D ends it", 90)
    assert b"deltajobs shell: job " in banner, banner.decode(errors="replace")
    # The terminal echoes the command: wait for what only its output holds (6*7 computed).
    os.write(fd, b'echo "VENV=$VIRTUAL_ENV PART=$SLURM_JOB_PARTITION DONE=$((6*7))"; exit\n')
    answer = read_until(fd, b"DONE=42", 30)
    os.waitpid(pid, 0)
    text = answer.decode(errors="replace")
    assert f"VENV={sys.prefix}" in text and "PART=gpuA100x4-interactive" in text, text
