"""Pipelines on a real SLURM controller (minidelta), as docs/pipelines.md shows them: prepare ->
train -> evaluate from three `submit --after`, each reading what its parent left through
DELTAJOBS_PARENT_RUN_DIR or `{after.run_dir}` (the middle one an sbatch script as written), run in
order; a child whose parent failed is named in `status` and cleared by `cancel --never-start`; and
the environment record an sbatch script's job leaves when it ends. The user code uses only what the
README documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm, wait_for_state

pytestmark = [needs_slurm, pytest.mark.slurm]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}

PREPARE = """\
import os, time
out = os.path.join(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "data.txt")
time.sleep(2)
open(out, "w").write(f"prepared {time.time()}\\n")
"""

TRAIN = """\
#!/bin/bash
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=1
#SBATCH --mem=2g
#SBATCH --time=00:05:00
module load python >/dev/null 2>&1 || true
set -e
data="$DELTAJOBS_PARENT_RUN_DIR/checkpoints/data.txt"
test -f "$data"
mkdir -p "$DELTAJOBS_CHECKPOINT_DIR"
{ cat "$data"; echo "trained $(date +%s.%N)"; } > "$DELTAJOBS_CHECKPOINT_DIR/best.pt"
echo "trained from $DELTAJOBS_PARENT_RUN_DIR"
"""

EVALUATE = """\
import argparse, os, time
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", required=True)
args = parser.parse_args()
lines = open(args.checkpoint).read().splitlines()
print("evaluated", args.checkpoint, "parent", os.environ["DELTAJOBS_PARENT_RUN_DIR"], flush=True)
report(lines=len(lines), evaluated_at=time.time())
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-cpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    (tmp_path / "prepare.py").write_text(PREPARE)
    (tmp_path / "train.sh").write_text(TRAIN)
    (tmp_path / "evaluate.py").write_text(EVALUATE)
    return tmp_path


def test_prepare_train_evaluate_run_in_order_and_pass_their_outputs_on(project: Path) -> None:
    cpu = ("-p", "cpu", "--gpus", "0", "-t", "00:05:00")
    prepare = cli_json("submit", "prepare.py", *cpu, cwd=project)
    train = cli_json("submit", "train.sh", "--after", prepare["job_id"], cwd=project)
    evaluate = cli_json(
        "submit", "evaluate.py", *cpu, "--after", train["job_id"],
        "--", "--checkpoint", "{after.run_dir}/checkpoints/best.pt",
        cwd=project,
    )  # fmt: skip
    assert wait_for_state(evaluate["job_id"], FINAL, timeout=300)["state"] == "COMPLETED", cli(
        "logs", evaluate["job_id"], "--err"
    ).stdout
    for job in (prepare, train):
        assert cli_json("status", job["job_id"])[0]["state"] == "COMPLETED"
    best = Path(train["run_dir"]) / "checkpoints" / "best.pt"
    prepared, trained = best.read_text().split()[1::2]  # "prepared T1", "trained T2"
    results = json.loads((Path(evaluate["run_dir"]) / "results.json").read_text())
    evaluated = results["history"][-1]["evaluated_at"]
    assert float(prepared) < float(trained) < evaluated  # in order, each after its parent ended
    assert results["history"][-1]["lines"] == 2
    log = cli("logs", evaluate["job_id"]).stdout
    assert f"evaluated {best} parent {train['run_dir']}" in log
    # the sbatch script's job recorded what it ran with when it ended (its BASH_ENV's EXIT trap)
    record = json.loads((Path(train["run_dir"]) / "env" / "job.json").read_text())
    assert record["job_id"] == train["job_id"] and record["python"]["version"]
    assert (Path(train["run_dir"]) / "env" / "packages.txt").read_text().strip()
    spec = cli("show", evaluate["job_id"]).stdout
    assert str(best) in spec  # the arguments as they ran, the placeholder expanded


def test_a_child_of_a_failed_parent_is_named_and_cleared_by_never_start(project: Path) -> None:
    (project / "fail.py").write_text("raise SystemExit(3)\n")
    cpu = ("-p", "cpu", "--gpus", "0", "-t", "00:05:00")
    parent = cli_json("submit", "fail.py", *cpu, cwd=project)
    child = cli_json("submit", "evaluate.py", *cpu, "--after", parent["job_id"], "--", "--checkpoint", "x", cwd=project)
    assert wait_for_state(parent["job_id"], FINAL)["state"] == "FAILED"
    row = wait_for_state(child["job_id"], {"PENDING"})
    for _ in range(30):
        row = cli_json("status", child["job_id"])[0]
        if row["reason"] == "DependencyNeverSatisfied":
            break
        import time

        time.sleep(1)
    assert row["blocked_by"] == f"parent {parent['job_id']} FAILED"
    text = cli("status").stdout
    line = next(line for line in text.splitlines() if line.startswith(child["job_id"]))
    assert f"parent {parent['job_id']} FAILED: never starts (`deltajobs cancel --never-start`)" in line
    done = cli("cancel", "--never-start")
    assert done.returncode == 0 and f"{child['job_id']}: cancelled" in done.stdout
    assert cli_json("status", child["job_id"])[0]["state"] == "CANCELLED"
    assert cli("cancel", "--never-start").stdout.strip() == "no job waits for a parent that failed"


def test_a_slurm_job_cannot_wait_for_a_local_one(project: Path) -> None:
    local = cli_json("submit", "prepare.py", "--local", "--wait", cwd=project)
    runs = sorted(Path(local["run_dir"]).parent.iterdir())
    proc = cli(
        "submit",
        "evaluate.py",
        "-p",
        "cpu",
        "--gpus",
        "0",
        "--after",
        local["job_id"],
        "--",
        "--checkpoint",
        "x",
        cwd=project,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"deltajobs: error: --after: job {local['job_id']} is a local job; a slurm job can wait only for slurm jobs"
    )
    assert sorted(Path(local["run_dir"]).parent.iterdir()) == runs


ARRAY = """\
#!/bin/bash
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=1
#SBATCH --mem=1g
#SBATCH --time=00:05:00
#SBATCH --array=0-1
echo "{\\"epoch\\": 1, \\"task\\": $SLURM_ARRAY_TASK_ID}" >> "$DELTAJOBS_RUN_DIR/task-$SLURM_ARRAY_TASK_ID.jsonl"
"""


def test_an_array_script_is_rerun_whole_as_submitted(project: Path) -> None:
    (project / "array.sh").write_text(ARRAY)
    first = cli_json("submit", "array.sh", cwd=project)
    array_id = first["job_id"]
    for task in (0, 1):
        assert wait_for_state(f"{array_id}_{task}", FINAL)["state"] == "COMPLETED"
    (project / "array.sh").write_text(ARRAY.replace("0-1", "0-5"))  # edited since: not what reruns
    again = cli_json("rerun", f"{array_id}_1", cwd=project)
    assert again["rerun_of"] == f"{array_id}_1"
    for task in (0, 1):
        assert wait_for_state(f"{again['job_id']}_{task}", FINAL)["state"] == "COMPLETED"
    assert sorted(p.name for p in Path(again["run_dir"]).glob("task-*.jsonl")) == ["task-0.jsonl", "task-1.jsonl"]
    assert (Path(again["run_dir"]) / "job.sh").read_text() == ARRAY
