"""The requeue contract on minidelta where several processes meet (issue 33 items 3 and 4): every rank
of a job reads the same DELTAJOBS_RESTART_COUNT (0 on the first attempt, 1 after the first requeue),
and a `--pack` task whose points never checkpoint stops requeueing at `resources.max_requeues`.

The user programs use only what docs/contract.md documents; the time-limit warning is sent as SLURM
sends it to a script's job (`--signal=URG@grace` signals the job's steps: `scancel --signal=URG` does
the same now)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm, release_begin_time, wait_for_state

pytestmark = [needs_slurm, pytest.mark.slurm]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}

# Each rank writes down the count it was given, per attempt (SLURM's own count names the attempt),
# and the first attempt asks for a requeue.
RANKS = """\
import os, sys
attempt = os.environ.get("SLURM_RESTART_COUNT", "0")
name = os.path.join(os.environ["DELTAJOBS_RUN_DIR"], f"rank{os.environ['RANK']}-attempt{attempt}")
with open(name, "w") as out:
    out.write(os.environ["DELTAJOBS_RESTART_COUNT"])
sys.exit(85 if attempt == "0" else 0)
"""

# Never checkpoints, never asks should_stop(): a warning's SIGTERM just ends it.
STUBBORN = """\
import argparse, time
parser = argparse.ArgumentParser()
parser.add_argument("--n", type=int, required=True)
parser.parse_args()
print("working", flush=True)
time.sleep(600)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return tmp_path


def slurm_job(job_id: str) -> dict[str, str]:
    """`scontrol show job -o ID` as a dict (JobState, Restarts, Reason, ...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def starts(run_dir: str) -> int:
    try:
        return len(json.loads((Path(run_dir) / "attempts.json").read_text())["starts"])
    except (OSError, ValueError):
        return 0


def wait_until(what: str, ready: Callable[[], bool], job_id: str, timeout: float = 180) -> None:
    """Poll `ready()` (lifting a requeued job's BeginTime hold) until it holds."""
    deadline = time.time() + timeout
    while not ready():
        job = slurm_job(job_id)
        if job.get("JobState") == "PENDING" and job.get("Reason") == "BeginTime":
            release_begin_time(job_id)  # not within the second of the requeue: slurmutil says why
        assert time.time() < deadline, f"{what}: not after {timeout:g}s; job {job}\n{cli('logs', job_id).stdout}"
        time.sleep(1)


def test_every_rank_reads_the_same_restart_count_on_every_attempt(project: Path) -> None:
    (project / "ranks.py").write_text(RANKS)
    sub = cli_json(
        "submit", "ranks.py", "--gpus", "2", "--cpus", "1", "--time", "00:05:00",
        "--set", "resources.max_requeues=1", cwd=project,
    )  # fmt: skip
    run_dir = Path(sub["run_dir"])
    wait_until("the second attempt", lambda: (run_dir / "rank0-attempt1").exists(), sub["job_id"], timeout=300)
    row = wait_for_state(sub["job_id"], FINAL)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout[-3000:]
    seen = {path.name: path.read_text() for path in run_dir.glob("rank*-attempt*")}
    assert seen == {"rank0-attempt0": "0", "rank1-attempt0": "0", "rank0-attempt1": "1", "rank1-attempt1": "1"}
    assert starts(str(run_dir)) == 2 and row["restarts"] == 1  # what status shows: one start per attempt


def test_a_packed_task_stops_requeueing_at_max_requeues(project: Path) -> None:
    (project / "stubborn.py").write_text(STUBBORN)
    sub = cli_json(
        "sweep", "stubborn.py", "--grid", "n=1,2", "--pack", "2", "--gpus", "1", "--time", "00:10:00",
        "--set", "resources.max_requeues=1", cwd=project,
    )  # fmt: skip
    task = sub["tasks"][0]["job_id"]
    try:
        stopped_at_the_limit(task, [p["run_dir"] for p in sub["points"]])
    finally:
        subprocess.run(["scancel", task], capture_output=True)  # a failure leaves nothing requeueing for ever


def stopped_at_the_limit(task: str, dirs: list[str]) -> None:
    def started(times: int) -> Callable[[], bool]:
        return lambda: all(starts(d) >= times for d in dirs)

    for attempt in (1, 2):
        wait_until(f"attempt {attempt}", started(attempt), task)
        time.sleep(2)  # the points' programs are running
        subprocess.run(["scancel", "--signal=URG", task], check=True)  # the time-limit warning
        if attempt == 1:
            wait_until("the requeue", lambda: slurm_job(task).get("Restarts") == "1", task, timeout=120)
    deadline = time.time() + 120
    while (job := slurm_job(task)).get("JobState") not in FINAL:
        assert job.get("Restarts") == "1", f"requeued past resources.max_requeues=1: {job}"
        assert time.time() < deadline, job
        time.sleep(1)
    assert job["Restarts"] == "1", job
    time.sleep(3)  # slurmctld settles a requeue request after the task ends
    assert slurm_job(task).get("Restarts") == "1"
    log = cli("logs", task).stdout + cli("logs", task, "--err").stdout
    assert "not requeued: resources.max_requeues=1 reached after 1 requeue(s)" in log, log[-3000:]
    assert [starts(d) for d in dirs] == [2, 2]  # each point started once per attempt
