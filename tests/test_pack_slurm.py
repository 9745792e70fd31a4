"""`sweep --pack K` on minidelta's placeholder GPUs: K points of one task run at once, as separate
processes on the same GPU, each into its own run directory; a packed task requeued while its points
run resumes each of them from its checkpoint. (The speed-up needs a real GPU: not measured here.)"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm
from test_per_task_slurm import STEPPING, starts, wait_for_points

pytestmark = [needs_slurm, pytest.mark.slurm]

GPU_PROBE = """\
import argparse, json, os, subprocess, time
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()
begin = time.time()
time.sleep(4)
with open(os.path.join(os.environ["DELTAJOBS_RUN_DIR"], "probe.json"), "w") as out:
    # the GPUs this process sees: CUDA_VISIBLE_DEVICES on Delta; minidelta's placeholder nvidia-smi
    # lists the step's (SLURM sets no CUDA_VISIBLE_DEVICES without GPU device files)
    seen = os.environ.get("CUDA_VISIBLE_DEVICES") or subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                                                    text=True).stdout
    json.dump({"gpus": seen, "pid": os.getpid(), "begin": begin, "end": time.time()}, out)
report(epoch=1, val_acc=args.lr)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return tmp_path


def test_packed_points_run_at_once_on_one_gpu_each_in_its_own_run_dir(project: Path) -> None:
    (project / "probe.py").write_text(GPU_PROBE)
    sub = cli_json(
        "sweep", "probe.py", "--grid", "lr=0.1,0.2,0.3,0.4", "--pack", "2", "--gpus", "1", "--time", "00:03:00",
        cwd=project,
    )  # fmt: skip
    assert len(sub["tasks"]) == 2 and [p["task"] for p in sub["points"]] == [0, 0, 1, 1]
    status = wait_for_points(sub["sweep_id"], timeout=300)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 4, status["counts"]
    probes = [json.loads((Path(p["run_dir"]) / "probe.json").read_text()) for p in status["points"]]
    for first, second in (probes[0:2], probes[2:4]):
        assert first["gpus"] == second["gpus"] and len(first["gpus"].strip().splitlines()) == 1  # one GPU, the same
        assert first["gpus"].strip()
        assert first["pid"] != second["pid"]  # separate processes
        assert first["begin"] < second["end"] and second["begin"] < first["end"]  # at the same time
    results = cli_json("sweep", "results", sub["sweep_id"])
    assert sorted(p["metrics"]["val_acc"] for p in results["points"]) == [0.1, 0.2, 0.3, 0.4]
    text = cli("sweep", "status", sub["sweep_id"]).stdout
    assert "4 points, 4 COMPLETED" in text
    own = cli("sweep", "logs", sub["sweep_id"], "--point", "1")
    assert "ran packed in task" in own.stderr and "deltajobs: point 1 (lr=0.2) starts in" in own.stdout


def test_a_requeued_packed_task_resumes_each_of_its_points(project: Path) -> None:
    (project / "steps.py").write_text(STEPPING)
    sub = cli_json(
        "sweep", "steps.py", "--grid", "steps=30,31", "--pack", "2", "--gpus", "1", "--time", "00:03:00",
        "--set", "resources.max_requeues=5", cwd=project,
    )  # fmt: skip
    task = sub["tasks"][0]["job_id"]
    metrics = [Path(p["run_dir"]) / "metrics.jsonl" for p in sub["points"]]
    deadline = time.time() + 180
    while not all(m.exists() and len(m.read_text().splitlines()) >= 3 for m in metrics):
        assert time.time() < deadline, cli("logs", task).stdout
        time.sleep(1)
    subprocess.run(["scontrol", "requeue", task], check=True)
    status = wait_for_points(sub["sweep_id"], timeout=400, release=True)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 2, status
    for point, steps in zip(status["points"], (30, 31), strict=True):
        assert starts(point["run_dir"]) == 2
        history = json.loads((Path(point["run_dir"]) / "results.json").read_text())["history"]
        assert [h["epoch"] for h in history] == list(range(1, steps + 1))  # resumed, every step once
