"""The packaged trainer's points, two in one task (`--per-task 2`), on the local backend: each trains
into its own run directory with its own results, one after the other in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slurmutil import cli, cli_json
from test_per_task_slurm import wait_for_points

TINY = ["--set", "train.epochs=1", "--set", "train.val_size=100"]


@pytest.mark.train
def test_two_trainer_points_in_one_task_each_train_into_their_own_run_directory(tiny_mnist: Path) -> None:
    pytest.importorskip("torch")
    env = {"DELTAJOBS_DATA_ROOT": str(tiny_mnist)}
    proc = cli("sweep", "mnist", "--local", "--per-task", "2", "--grid", "train.lr=1e-3,1e-2", *TINY, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)
    assert len(sub["tasks"]) == 1 and {p["job_id"] for p in sub["points"]} == {sub["tasks"][0]["job_id"]}
    status = wait_for_points(sub["sweep_id"], timeout=240)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 2, status
    for point in status["points"]:
        run_dir = Path(point["run_dir"])
        results = json.loads((run_dir / "results.json").read_text())
        assert results["status"] == "completed" and 0 <= results["test_acc"] <= 1
        assert f"lr: {point['params']['train.lr']}" in (run_dir / "spec.yaml").read_text()
    log = Path(sub["tasks"][0]["log"]).read_text()  # one task ran both, one after the other
    assert log.index("deltajobs: point 0 (train.lr=1e-3) starts in") < log.index(
        "deltajobs: point 1 (train.lr=1e-2) starts"
    )
    ranked = cli_json("sweep", "results", sub["sweep_id"])
    assert ranked["best"]["index"] in (0, 1) and len(ranked["points"]) == 2
