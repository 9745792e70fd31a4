"""Issue 32's done-when on a real SLURM controller (minidelta): an array sbatch script runs through
`deltajobs submit job.sh`; `status` shows its tasks, `logs --task N` a task's log, `cancel` ends all
of them (those still waiting too), `charge` and `results` add up every task. Three shapes users
write: a throttled range (`--array=0-3%2`), a list (`-a 1,3`), a step (`0-6:3`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm

pytestmark = [needs_slurm, pytest.mark.slurm]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
ACCOUNT = "bgvu-delta-cpu"  # scripts/minidelta's CPU account


def script(array: str, *lines: str, seconds: int = 2) -> str:
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --account={ACCOUNT}",
            "#SBATCH --partition=cpu",
            array,
            "#SBATCH --ntasks=1",  # no --mem: minidelta's 1000 MB per core, as SLURM gives it
            "#SBATCH --time=00:05:00",
            "#SBATCH --job-name=arr",
            *lines,
            "",
            'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"',
            f"sleep {seconds}",
            "",
        ]
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return tmp_path


def wait_for_tasks(array_id: str, count: int, timeout: float = 240) -> list[dict]:
    """`status ARRAY_ID` until every one of its `count` tasks is final."""
    deadline = time.time() + timeout
    rows: list[dict] = []
    while time.time() < deadline:
        rows = cli_json("status", array_id)
        assert len(rows) == count, rows
        if all(r["state"] in FINAL for r in rows):
            return rows
        time.sleep(1.0)
    raise AssertionError(f"array {array_id} never ended: {[(r['job_id'], r['state']) for r in rows]}")


def test_a_throttled_array_runs_every_task_and_charge_adds_them_up(project: Path) -> None:
    (project / "job.sh").write_text(script("#SBATCH --array=0-3%2", "#SBATCH --output=logs/%x-%A_%a.out"))
    (project / "logs").mkdir()
    sub = cli_json("submit", "job.sh", cwd=project)
    array_id = sub["job_id"]
    assert sub["array"] == {"indices": "0-3%2", "tasks": 4, "concurrency": 2}
    assert sub["defaults"] == ["--mem-per-cpu=1000M (1000M per node)"]
    check = cli_json("check", "job.sh", cwd=project)  # what `check` prices, `submit` guards: all 4 tasks
    assert sub["estimate_su"] == pytest.approx(check["array"]["su_total"], abs=1e-4)
    assert check["array"]["su_total"] == pytest.approx(4 * check["array"]["su_per_task"])
    status = cli("status", array_id).stdout
    assert all(f"{array_id}_{i}" in status for i in range(4)), status
    rows = wait_for_tasks(array_id, 4)
    assert [(r["job_id"], r["state"]) for r in rows] == [(f"{array_id}_{i}", "COMPLETED") for i in range(4)]
    assert cli("logs", array_id, "--task", "2").stdout == f"task 2 of {array_id}\n"
    assert (project / "logs" / f"arr-{array_id}_3.out").read_text() == f"task 3 of {array_id}\n"
    results = cli_json("results", array_id)
    assert results["state"] == "COMPLETED" and [t["task"] for t in results["tasks"]] == [0, 1, 2, 3]
    per_task = {t["job_id"]: t["su"] for t in results["tasks"]}
    assert all(su > 0 for su in per_task.values()) and results["su"] == pytest.approx(sum(per_task.values()))
    charge = cli_json("charge", "--account", ACCOUNT, "--detail")
    charged = {job["job_id"]: job["su"] for job in charge["jobs"]}
    assert {job_id: charged.get(job_id) for job_id in per_task} == pytest.approx(per_task)  # every task charged
    assert charge["total_su"] >= sum(per_task.values())


def test_a_list_of_tasks_logs_where_sbatch_puts_them(project: Path) -> None:
    (project / "job.sh").write_text(script("#SBATCH -a 1,3"))
    sub = cli_json("submit", "job.sh", cwd=project)
    array_id = sub["job_id"]
    assert [t["job_id"] for t in sub["tasks"]] == [f"{array_id}_1", f"{array_id}_3"]
    rows = wait_for_tasks(array_id, 2)
    assert {r["state"] for r in rows} == {"COMPLETED"}
    assert (project / f"slurm-{array_id}_3.out").read_text() == f"task 3 of {array_id}\n"  # sbatch's default name
    assert cli("logs", array_id, "--task", "3").stdout == f"task 3 of {array_id}\n"
    assert cli("logs", f"{array_id}_1").stdout == f"task 1 of {array_id}\n"  # a task by its own id
    text = cli("results", array_id).stdout
    assert f"array job {array_id} (arr): 2 tasks (2 COMPLETED)" in text


def test_cancel_ends_every_task_of_a_stepped_array_waiting_ones_too(project: Path) -> None:
    (project / "job.sh").write_text(script("#SBATCH --array=0-6:3%1", seconds=300))
    sub = cli_json("submit", "job.sh", cwd=project)
    array_id = sub["job_id"]
    deadline = time.time() + 120
    while time.time() < deadline:  # task 0 running, 3 and 6 held back by %1
        states = {r["job_id"]: r["state"] for r in cli_json("status", array_id)}
        if states.get(f"{array_id}_0") == "RUNNING":
            break
        time.sleep(1.0)
    assert states == {f"{array_id}_0": "RUNNING", f"{array_id}_3": "PENDING", f"{array_id}_6": "PENDING"}
    cancel = cli("cancel", array_id)
    assert cancel.returncode == 0 and cancel.stdout.count("cancelled") == 3, cancel.stdout + cancel.stderr
    rows = wait_for_tasks(array_id, 3, timeout=120)
    assert {r["state"] for r in rows} == {"CANCELLED"}
