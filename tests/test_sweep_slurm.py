"""Sweeps for real: a 2x2 grid as one job array on minidelta, and a local sweep with --max-parallel 1."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from slurmutil import cli, cli_json, needs_slurm

from deltajobs.slurm.parse import FINAL_STATES

TINY = ["--set", "train.epochs=1", "--set", "train.val_size=100"]
GRID = ["--grid", "train.lr=1e-3,1e-2", "--grid", "train.batch_size=16,32"]


@pytest.fixture
def tiny_env(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tiny_mnist))
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")


def wait_for_sweep(sweep_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        status = cli_json("sweep", "status", sweep_id)
        if all(p["state"] in FINAL_STATES for p in status["points"]):
            return status
        if time.time() > deadline:
            cli("sweep", "cancel", sweep_id)
            raise AssertionError(f"sweep {sweep_id} did not finish in {timeout:g}s: {status['counts']}")
        time.sleep(2.0)


@needs_slurm
@pytest.mark.slurm
def test_a_2x2_grid_is_one_array_job_with_four_results(tiny_env: None) -> None:
    sub = cli_json("sweep", "mnist", *GRID, "--max-parallel", "2", *TINY)
    array = sub["array_job_id"]
    assert [p["job_id"] for p in sub["points"]] == [f"{array}_{i}" for i in range(4)]
    assert "#SBATCH --array=0-3%2" in (Path(sub["sweep_dir"]) / "job.sh").read_text()
    status = wait_for_sweep(sub["sweep_id"], timeout=240)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 4, status
    sacct = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", array, "--format=JobID,State"], capture_output=True, text=True, check=True
    )
    tasks = sorted(line.split("|")[0] for line in sacct.stdout.splitlines() if line.strip())
    assert tasks == [f"{array}_{i}" for i in range(4)]  # four tasks under one job id
    results = cli_json("sweep", "results", sub["sweep_id"])
    assert len(results["points"]) == 4 and all(0 <= p["metrics"]["test_acc"] <= 1 for p in results["points"])
    assert results["best"]["index"] == results["points"][0]["index"]
    for point in results["points"]:  # each task trained its own point into its own run directory
        spec = (Path(point["run_dir"]) / "spec.yaml").read_text()
        assert f"lr: {point['params']['train.lr']}" in spec and (Path(point["run_dir"]) / "results.json").exists()
    text = cli("sweep", "results", sub["sweep_id"])
    assert text.returncode == 0 and "best by test_acc" in text.stdout


@pytest.mark.train
def test_a_local_sweep_runs_one_point_at_a_time_with_max_parallel_1(tiny_mnist: Path) -> None:
    pytest.importorskip("torch")
    env = {"DELTAJOBS_DATA_ROOT": str(tiny_mnist)}
    proc = cli(
        "sweep", "mnist", "--local", "--max-parallel", "1", "--grid", "train.lr=1e-3,1e-2", *TINY, "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)
    status = wait_for_sweep(sub["sweep_id"], timeout=180)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 2, status
    spans = []
    for point in status["points"]:
        run_dir = Path(point["run_dir"])
        start = json.loads((run_dir / "attempts.json").read_text())["starts"][0]["time"]
        spans.append((start, (run_dir / "results.json").stat().st_mtime))
    (first_start, first_end), (second_start, second_end) = sorted(spans)
    assert first_end <= second_start  # never both training at once


@pytest.mark.train
def test_a_local_sweep_into_a_pipe_returns_at_once(tiny_mnist: Path) -> None:
    """`sweep --local | cat`: the points run detached, so the command returns while they train."""
    pytest.importorskip("torch")
    env = {"DELTAJOBS_DATA_ROOT": str(tiny_mnist)}
    long = ["--set", "train.epochs=2000", "--set", "train.val_size=100"]
    started = time.time()
    proc = cli("sweep", "mnist", "--local", "--grid", "train.lr=1e-3,1e-2", *long, "--json", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    sweep_id = json.loads(proc.stdout)["sweep_id"]
    try:
        assert time.time() - started < 30
        states = [p["state"] for p in cli_json("sweep", "status", sweep_id)["points"]]
        assert all(state not in FINAL_STATES for state in states), states
    finally:
        assert cli("sweep", "cancel", sweep_id).returncode == 0
