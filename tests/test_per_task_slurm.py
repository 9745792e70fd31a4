"""Several sweep points per array task on minidelta (issue 25): 16 short points with --per-task 4 are
4 array tasks and 16 run directories with their results; a task requeued while its second point runs
skips the finished first point and resumes the second from its checkpoint (runs counted per point)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from slurmutil import cli, cli_json, needs_slurm, release_begin_time

pytestmark = [needs_slurm, pytest.mark.slurm]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}

SHORT = """\
import argparse
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()
report(epoch=1, val_acc=args.lr)
"""

# Counts to --steps, a second a step; on SIGTERM (scontrol requeue, preemption) or the time-limit
# warning it saves where it is and asks for a requeue (exit 85); the next run resumes there.
STEPPING = """\
import argparse, json, os, sys, time
from deltajobs import report, should_stop
parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, required=True)
args = parser.parse_args()
state_file = os.path.join(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "state.json")
done = json.load(open(state_file))["done"] if os.path.exists(state_file) else 0
print(f"steps={args.steps} attempt {os.environ['DELTAJOBS_RESTART_COUNT']} resumes at {done}", flush=True)
while done < args.steps:
    if should_stop():
        json.dump({"done": done}, open(state_file, "w"))
        print(f"stopping at {done}: requeue", flush=True)
        sys.exit(85)
    time.sleep(1)
    done += 1
    report(epoch=done, val_acc=done / args.steps)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return tmp_path


def wait_for_points(sweep_id: str, timeout: float, release: bool = False) -> dict[str, Any]:
    """`sweep status --json` once every point is final; with `release`, a requeued task's BeginTime
    hold (~2 minutes on minidelta) is lifted as it appears."""
    deadline = time.time() + timeout
    while True:
        status = cli_json("sweep", "status", sweep_id)
        if all(p["state"] in FINAL for p in status["points"]):
            return status
        if release:
            for job_id in {p["job_id"] for p in status["points"] if p["reason"] == "BeginTime"}:
                release_begin_time(job_id)
        if time.time() > deadline:
            cli("sweep", "cancel", sweep_id)
            raise AssertionError(f"sweep {sweep_id} did not finish in {timeout:g}s: {status['counts']}")
        time.sleep(2.0)


def array_tasks_in_sacct(array: str, count: int = 4, timeout: float = 60) -> list[str]:
    """The array's tasks as sacct knows them. slurmdbd learns of tasks after slurmctld (under load,
    seconds after the points' own files say they are done): ask until `count` are there."""
    deadline = time.monotonic() + timeout
    while True:
        argv = ["sacct", "-X", "-n", "-P", "-j", array, "--format=JobID,State"]
        sacct = subprocess.run(argv, capture_output=True, text=True, check=True)
        tasks = sorted(line.split("|")[0] for line in sacct.stdout.splitlines() if line.strip())
        if len(tasks) >= count or time.monotonic() > deadline:
            return tasks
        time.sleep(1)


def starts(run_dir: str) -> int:
    """How many times a point was started (its attempts.json, one entry per start)."""
    return len(json.loads((Path(run_dir) / "attempts.json").read_text())["starts"])


def test_sixteen_points_per_task_4_are_four_array_tasks_each_point_in_its_own_run_dir(project: Path) -> None:
    (project / "fit.py").write_text(SHORT)
    grid = ",".join(f"0.{i:02d}" for i in range(1, 17))
    sub = cli_json("sweep", "fit.py", "--grid", f"lr={grid}", "--per-task", "4", "--time", "00:03:00", cwd=project)
    array = sub["array_job_id"]
    assert [t["job_id"] for t in sub["tasks"]] == [f"{array}_{i}" for i in range(4)]
    assert [p["job_id"] for p in sub["points"]] == [f"{array}_{i // 4}" for i in range(16)]
    script = (Path(sub["sweep_dir"]) / "job.sh").read_text()
    assert "#SBATCH --array=0-3" in script and "#SBATCH --time=00:12:00" in script  # 4 points x 3 min
    status = wait_for_points(sub["sweep_id"], timeout=300)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 16, status["counts"]
    assert array_tasks_in_sacct(array) == [f"{array}_{i}" for i in range(4)]
    dirs = {p["run_dir"] for p in status["points"]}
    assert len(dirs) == 16
    for point in status["points"]:
        results = json.loads((Path(point["run_dir"]) / "results.json").read_text())
        assert results["history"][-1]["val_acc"] == pytest.approx(point["params"]["run.params.lr"])
        assert starts(point["run_dir"]) == 1
    text = cli("sweep", "status", sub["sweep_id"]).stdout  # what a person reads: points, not tasks
    assert "16 points, 16 COMPLETED" in text
    assert sum(1 for line in text.splitlines() if line.split() and line.split()[0].isdigit()) == 16
    log = cli("sweep", "logs", sub["sweep_id"], "--point", "5").stdout
    assert "point 5 (lr=0.06) starts in" in log and "point 6" not in log and "point 4" not in log


def test_a_requeued_task_skips_its_finished_point_and_resumes_the_current_one(project: Path) -> None:
    (project / "steps.py").write_text(STEPPING)
    sub = cli_json(
        "sweep", "steps.py", "--grid", "steps=2,40,3", "--per-task", "3", "--time", "00:03:00",
        "--set", "resources.max_requeues=5", cwd=project,
    )  # fmt: skip
    task = sub["tasks"][0]["job_id"]
    first, second, third = (p["run_dir"] for p in sub["points"])
    deadline = time.time() + 180
    metrics = Path(second) / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):
        assert time.time() < deadline, cli("sweep", "logs", sub["sweep_id"], "--point", "1").stdout
        time.sleep(1)
    subprocess.run(["scontrol", "requeue", task], check=True)  # what preemption does: SIGTERM, back to the queue
    status = wait_for_points(sub["sweep_id"], timeout=400, release=True)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 3, status
    assert (starts(first), starts(second), starts(third)) == (1, 2, 1)  # the first point did not run again
    history = json.loads((Path(second) / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))  # resumed: every step once
    log = cli("logs", task).stdout
    assert "points 0 finished before this start: skipped" in log and "attempt 1 resumes at" in log
