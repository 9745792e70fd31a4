"""Users' own code on a real SLURM controller (minidelta): an unmodified argparse script, a sweep of
its arguments as one array, the checkpoint-and-requeue contract on the time-limit signal, two ranks
all-reducing over gloo, and an existing sbatch script submitted as written. The user scripts use
only what docs/contract.md documents (`deltajobs.report`, `should_stop`, DELTAJOBS_* variables, exit 85)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm, release_begin_time, wait_for_state

pytestmark = [needs_slurm, pytest.mark.slurm]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}

THIRD_PARTY = """\
import argparse
parser = argparse.ArgumentParser(description="someone else's trainer")
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--out", default="out.txt")
args = parser.parse_args()
with open(args.out, "w") as f:  # relative: lands in the directory `submit` ran in
    f.write(f"lr={args.lr} epochs={args.epochs}\\n")
print("VERSION 1", args)
"""

REPORTING = """\
import argparse
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=2)
args = parser.parse_args()
for epoch in range(1, args.epochs + 1):
    report(epoch=epoch, val_acc=min(0.99, 0.5 + args.lr * epoch), train_loss=1.0 / (epoch * args.lr + 1))
"""

CHECKPOINTING = """\
import json, os, sys, time
from deltajobs import report, should_stop
state_file = os.path.join(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "state.json")
done = json.load(open(state_file))["done"] if os.path.exists(state_file) else 0
print(f"attempt {os.environ['DELTAJOBS_RESTART_COUNT']} resumes at {done}", flush=True)
while done < 100:
    if should_stop():
        json.dump({"done": done}, open(state_file, "w"))
        print(f"stopping at {done}: requeue", flush=True)
        sys.exit(85)
    time.sleep(1)
    done += 1
    report(epoch=done, val_acc=done / 100)
print("finished 100", flush=True)
"""

ALL_REDUCE = """\
import os
import torch
import torch.distributed as dist
from deltajobs import report
dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE from deltajobs
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} local {os.environ['LOCAL_RANK']} "
      f"of {os.environ['LOCAL_WORLD_SIZE']} sum {value.item():g}", flush=True)
report(world_size=dist.get_world_size(), sum=value.item())
dist.destroy_process_group()
"""

SBATCH = """\
#!/bin/bash
#SBATCH --account=bgvu-delta-gpu
#SBATCH --partition=gpuA100x4
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=16g
#SBATCH --time=00:05:00
#SBATCH --job-name=mnist_train
#SBATCH --output=mnist_%j.out

echo "in $(pwd) for run $DELTAJOBS_RUN_DIR"
echo '{"epoch": 1, "val_acc": 0.75}' >> "$DELTAJOBS_METRICS"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return tmp_path


def test_an_unmodified_argparse_script_runs_in_the_submit_directory_from_its_snapshot(project: Path) -> None:
    script = project / "train.py"
    script.write_text(THIRD_PARTY)
    sub = cli_json("submit", "train.py", "--time", "00:05:00", "--", "--lr", "1e-3", "--epochs", "5", cwd=project)
    script.write_text(THIRD_PARTY.replace("VERSION 1", "VERSION 2"))  # edited after submit: not what runs
    row = wait_for_state(sub["job_id"], FINAL)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout
    assert (project / "out.txt").read_text() == "lr=0.001 epochs=5\n"
    log = cli("logs", sub["job_id"]).stdout
    assert "VERSION 1" in log and "VERSION 2" not in log
    assert (Path(sub["run_dir"]) / "code" / "train.py").read_text() == THIRD_PARTY
    text = cli("results", sub["job_id"]).stdout
    assert "ran python train.py --lr 1e-3 --epochs 5 (exit 0" in text and "no metrics reported" in text
    status = cli("status", sub["job_id"]).stdout
    assert sub["job_id"] in status and "COMPLETED" in status


def test_a_bad_argument_fails_with_the_scripts_own_usage_line(project: Path) -> None:
    (project / "train.py").write_text(THIRD_PARTY)
    sub = cli_json("submit", "train.py", "--time", "00:05:00", "--", "--learning-rate", "1", cwd=project)
    row = wait_for_state(sub["job_id"], FINAL)
    assert row["state"] == "FAILED"
    err = cli("logs", sub["job_id"], "--err").stdout
    assert "usage: train.py" in err and "deltajobs: " in err and "exited with status 2" in err


def test_a_sweep_of_script_arguments_is_one_array(project: Path) -> None:
    (project / "train.py").write_text(REPORTING)
    sweep = cli_json(
        "sweep", "train.py", "--grid", "lr=0.1,0.2", "--time", "00:05:00", "--", "--epochs", "3", cwd=project
    )
    assert sweep["array_job_id"] and len(sweep["points"]) == 2
    assert {p["job_id"].split("_")[0] for p in sweep["points"]} == {sweep["array_job_id"]}
    for point in sweep["points"]:
        assert wait_for_state(point["job_id"], FINAL)["state"] == "COMPLETED"
    results = cli_json("sweep", "results", sweep["sweep_id"])
    values = {p["params"]["run.params.lr"]: p["metrics"]["val_acc"] for p in results["points"]}
    assert values == {0.1: pytest.approx(0.8), 0.2: pytest.approx(0.99)}
    text = cli("sweep", "results", sweep["sweep_id"]).stdout
    assert "lr" in text and "val_acc" in text


def test_a_script_requeued_on_its_time_limit_signal_resumes_and_finishes(project: Path) -> None:
    (project / "long.py").write_text(CHECKPOINTING)
    # 100 s of work in 2-minute runs whose USR2 warning comes 60-120 s early: at least two runs.
    sub = cli_json(
        "submit", "long.py", "--time", "00:02:00", "--set", "resources.signal_grace=60",
        "--set", "resources.max_requeues=10", cwd=project,
    )  # fmt: skip
    deadline, seen = time.time() + 900, []
    while time.time() < deadline:
        row = cli_json("status", sub["job_id"])[0]
        seen.append(f"{row['state']}:{row['reason'] or ''}")
        if row["state"] == "PENDING" and row["reason"] == "BeginTime":
            release_begin_time(sub["job_id"])
        if row["state"] in FINAL:
            break
        time.sleep(2)
    assert row["state"] == "COMPLETED", (seen[-5:], cli("logs", sub["job_id"], "--err").stdout[-2000:])
    assert row["restarts"] >= 1
    log = cli("logs", sub["job_id"]).stdout
    assert "stopping at" in log and "attempt 1 resumes at" in log and "finished 100" in log
    history = json.loads((Path(sub["run_dir"]) / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 101))  # every epoch once, none lost or repeated


def test_two_ranks_all_reduce_over_gloo_with_torchruns_environment(project: Path) -> None:
    (project / "ddp.py").write_text(ALL_REDUCE)
    sub = cli_json("submit", "ddp.py", "--gpus", "2", "--cpus", "1", "--time", "00:05:00", cwd=project)
    row = wait_for_state(sub["job_id"], FINAL)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout[-3000:]
    log = cli("logs", sub["job_id"]).stdout
    assert "0: rank 0 of 2 local 0 of 2 sum 3" in log and "1: rank 1 of 2 local 1 of 2 sum 3" in log
    results = cli_json("results", sub["job_id"])
    assert results["history"] == [{"world_size": 2, "sum": 3.0, "time": results["history"][0]["time"]}]


def test_an_existing_sbatch_script_is_checked_and_submitted_as_written(project: Path) -> None:
    script = project / "train.sh"
    script.write_text(SBATCH)
    check = cli("check", "train.sh", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "estimate: at most 0.083 SU on gpuA100x4" in check.stdout
    sub = cli_json("submit", "train.sh", cwd=project)
    row = wait_for_state(sub["job_id"], FINAL)
    assert row["state"] == "COMPLETED"
    assert script.read_text() == SBATCH  # the user's file is untouched
    out = project / f"mnist_{sub['job_id']}.out"  # its own --output, relative to the submit directory
    assert out.read_text().strip() == f"in {project} for run {sub['run_dir']}"
    assert cli("logs", sub["job_id"]).stdout.strip() == out.read_text().strip()
    text = cli("results", sub["job_id"]).stdout
    assert "mnist_train" in text and "val_acc 0.75" in text
    assert (Path(sub["run_dir"]) / "job.sh").read_text() == SBATCH
