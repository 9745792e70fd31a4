"""Load on minidelta (issue 24, section 5): 100 `deltajobs submit`s in parallel while 20
`deltajobs status --watch` refresh the same registry. Every process is the real CLI against the
real SLURM; nothing is faked.

What must hold: every process exits 0, no stderr says the registry was locked, the registry holds
exactly one row per submission, and those rows are exactly the jobs SLURM knows by the
submissions' tag (a job name unique to this test run).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO
from slurmutil import cli_json, needs_slurm

pytestmark = [needs_slurm, pytest.mark.slurm]

SUBMITS = 100
WATCHERS = 20
PAYLOAD = "sleep 10"  # long enough that the watchers see unfinished jobs while the submits go on
LOCKED = ("database is locked", "stayed locked", "database table is locked")


def start(args: list[str], out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The real CLI in its own process, stdout and stderr to files (no pipe to fill and block on)."""
    return subprocess.Popen(
        [sys.executable, "-m", "deltajobs", *args],
        stdout=out.with_suffix(".out").open("wb"),
        stderr=out.with_suffix(".err").open("wb"),
        env=env,
        cwd=REPO,
    )


def finish(procs: dict[str, subprocess.Popen[bytes]], deadline: float) -> dict[str, float]:
    """Wait for every process (killing the late ones); returns when each one was seen to end."""
    ended: dict[str, float] = {}
    while len(ended) < len(procs) and time.time() < deadline:
        for name, proc in procs.items():
            if name not in ended and proc.poll() is not None:
                ended[name] = time.time()
        time.sleep(0.1)
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return ended


def slurm_jobs_named(prefix: str) -> dict[str, str]:
    """Job id -> name of every job squeue or sacct knows whose name starts with `prefix`."""
    found: dict[str, str] = {}
    queued = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, timeout=60)
    accounted = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-2hours", "-o", "JobID,JobName"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in (queued.stdout + accounted.stdout).splitlines():
        job_id, _, name = line.partition("|")
        if name.startswith(prefix):
            found[job_id] = name
    return found


def registry_count(home: Path) -> int:
    path = home / "registry.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def test_100_parallel_submits_and_20_watchers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    tag = f"load-{uuid.uuid4().hex[:6]}-"
    home = Path(os.environ["DELTAJOBS_HOME"])
    env = {**os.environ, "DELTAJOBS_ACCOUNT": "bgvu-delta-cpu", "DELTAJOBS_CLUSTER": "minidelta"}
    resources = ["-p", "cpu", "--gpus", "0", "--cpus", "1", "--mem", "1G", "--time", "00:05:00"]
    submits = {
        f"submit-{i}": start(
            ["submit", "--command", PAYLOAD, *resources, "--set", f"name={tag}{i}", "--json"],
            tmp_path / f"submit-{i}",
            env,
        )
        for i in range(SUBMITS)
    }
    try:
        while registry_count(home) == 0 and any(p.poll() is None for p in submits.values()):
            time.sleep(0.1)  # a watcher of an empty registry would end at once: start them on the first row
        watch_started = time.time()
        watchers = {
            f"watch-{k}": start(["status", "--watch", "--interval", "2"], tmp_path / f"watch-{k}", env)
            for k in range(WATCHERS)
        }
        submits_ended = finish(submits, time.time() + 600)
        watchers_ended = finish(watchers, time.time() + 300)
        procs = {**submits, **watchers}
        stderr = {name: (tmp_path / name).with_suffix(".err").read_text() for name in procs}
        failed = {name: (p.returncode, stderr[name][-300:]) for name, p in procs.items() if p.returncode != 0}
        assert not failed, f"{len(failed)} processes failed: {dict(list(failed.items())[:5])}"
        said = sorted({line for name in submits for line in stderr[name].splitlines()})
        print(
            f"{SUBMITS} submits in {max(submits_ended.values()) - watch_started:.0f}s after the first row; said: {said}"
        )
        locked = {name: text for name, text in stderr.items() if any(word in text for word in LOCKED)}
        assert not locked, f"locked registry on stderr: {dict(list(locked.items())[:3])}"
        # The watchers ran while the submits went on (else this tests nothing about them).
        assert watch_started < max(submits_ended.values()) < min(watchers_ended.values())
        assert all("JOBID" in (tmp_path / n).with_suffix(".out").read_text() for n in watchers)

        printed = [cli_json_text(tmp_path / f"submit-{i}.out") for i in range(SUBMITS)]
        rows = [r for r in cli_json("status", "--all", env=env) if r["name"].startswith(tag)]
        assert len(rows) == SUBMITS, f"{len(rows)} registry rows for {SUBMITS} submissions"
        assert len({r["job_id"] for r in rows}) == SUBMITS, "duplicate job ids in the registry"
        assert {r["name"] for r in rows} == {f"{tag}{i}" for i in range(SUBMITS)}
        assert {r["job_id"] for r in rows} == set(printed), "registry ids differ from those submit printed"
        deadline, known = time.time() + 60, slurm_jobs_named(tag)
        while len(known) < SUBMITS and time.time() < deadline:  # sacct may trail squeue by a moment
            time.sleep(1)
            known = slurm_jobs_named(tag)
        assert known == {r["job_id"]: r["name"] for r in rows}, "SLURM's jobs by tag differ from the registry"
    finally:
        leftover = list(slurm_jobs_named(tag))
        if leftover:
            subprocess.run(["scancel", *leftover], capture_output=True, timeout=60)


def cli_json_text(path: Path) -> str:
    """The job id a `submit --json` printed."""
    return str(json.loads(path.read_text())["job_id"])
