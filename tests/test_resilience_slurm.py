"""Timeouts, preemption, faults and multi-task jobs on minidelta (a real SLURM controller)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, make_tiny_mnist
from slurmutil import cli, cli_json, needs_slurm, release_begin_time, wait_for_state

from deltajobs.spec.settings import load_settings

pytestmark = [needs_slurm, pytest.mark.slurm]

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}


@pytest.fixture(scope="module")
def medium_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 training images: an epoch is long enough to be interrupted in the middle."""
    return make_tiny_mnist(tmp_path_factory.mktemp("medium"), n_train=6000, n_test=500, seed=1)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")


def train_sets(data: Path, epochs: int) -> list[str]:
    """A run of known length, with label noise so the loss never collapses to zero."""
    sets = [
        f"train.data_root={data}",
        f"train.epochs={epochs}",
        "train.val_size=500",
        "train.label_noise=0.2",
        "train.threads=1",
        "train.checkpoint_every=1",
        "train.seed=7",
    ]
    return [arg for s in sets for arg in ("--set", s)]


def reference_run(sets: list[str], run_dir: Path) -> dict:
    proc = cli("train", "mnist", *sets, "--run-dir", str(run_dir), "--json", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def drive_to_end(job_id: str, timeout: float) -> dict:
    """Follow a job through requeues, releasing each BeginTime hold, until it is final."""
    deadline = time.time() + timeout
    seen: list[str] = []
    while time.time() < deadline:
        row = cli_json("status", job_id)[0]
        label = f"{row['state']}:{row['reason'] or ''}"
        if not seen or seen[-1] != label:
            seen.append(label)
        if row["state"] == "PENDING" and row["reason"] == "BeginTime":
            release_begin_time(job_id)
        if row["state"] in FINAL:
            return {**row, "seen": seen}
        time.sleep(2)
    raise AssertionError(f"job {job_id} did not end; states: {seen}")


def assert_same_metrics(resumed: dict, reference: dict) -> None:
    assert resumed["status"] == reference["status"] == "completed"
    assert resumed["test_loss"] == reference["test_loss"]
    assert resumed["test_acc"] == reference["test_acc"]
    for got, want in zip(resumed["history"], reference["history"], strict=True):
        assert (got["epoch"], got["train_loss"], got["val_loss"]) == (
            want["epoch"],
            want["train_loss"],
            want["val_loss"],
        )


def test_timeout_checkpoints_requeues_and_resumes_exactly(env: None, medium_mnist: Path, tmp_path: Path) -> None:
    sets = train_sets(medium_mnist, epochs=1200)  # 2-6 minutes of work: more than a 3-minute run holds
    # SLURM sends the USR2 warning `signal_grace` seconds before the limit, or up to 60 s earlier
    # ("due to the resolution of event handling", sbatch(1)): 60-120 s into each 3-minute run, so
    # every run is interrupted after real progress and the job needs two or more runs.
    sub = cli_json(
        "submit",
        "mnist",
        *sets,
        "--time",
        "00:03:00",
        "--set",
        "resources.signal_grace=60",
        "--set",
        "resources.max_requeues=10",
    )
    reference = reference_run(sets, tmp_path / "reference")
    row = drive_to_end(sub["job_id"], timeout=1200)
    assert row["state"] == "COMPLETED", (row["seen"], cli("logs", sub["job_id"], "--err").stdout[-3000:])
    assert row["restarts"] >= 1, row["seen"]
    log = cli("logs", sub["job_id"]).stdout
    assert "caught SIGUSR2" in log and "resuming from" in log
    resumed = json.loads((Path(sub["run_dir"]) / "results.json").read_text())
    assert_same_metrics(resumed, reference)


def test_preempted_job_resumes_from_its_checkpoint(env: None, medium_mnist: Path) -> None:
    sets = train_sets(medium_mnist, epochs=25)
    sub = cli_json("submit", "mnist", *sets, "--partition", "gpuA100x4-preempt")
    assert "#SBATCH --requeue" in (Path(sub["run_dir"]) / "job.sh").read_text()
    log_path = Path(sub["log"])
    deadline = time.time() + 240
    while "epoch 2/" not in (log_path.read_text() if log_path.exists() else ""):
        assert time.time() < deadline, "the job never got to its second epoch"
        time.sleep(1)
    # What preemption does to a --requeue job: SIGTERM to its steps, then back to the queue.
    subprocess.run(["scontrol", "requeue", sub["job_id"]], check=True)
    row = drive_to_end(sub["job_id"], timeout=480)
    assert row["state"] == "COMPLETED", row["seen"]
    log = log_path.read_text()
    assert "caught SIGTERM" in log and "resuming from" in log
    assert row["restarts"] == 1
    results = json.loads((Path(sub["run_dir"]) / "results.json").read_text())
    assert results["status"] == "completed" and len(results["history"]) == 25


def test_two_cpu_tasks_train_with_gloo_like_one_process(env: None, tiny_mnist: Path, tmp_path: Path) -> None:
    sets = train_sets(tiny_mnist, epochs=3) + ["--set", "train.batch_size=64", "--set", "train.val_size=100"]
    sub = cli_json(
        "submit",
        "mnist",
        *sets,
        "--partition",
        "cpu",
        "--gpus",
        "0",
        "--account",
        "bgvu-delta-cpu",
        "--set",
        "resources.tasks_per_node=2",
        "--mem",
        "8G",
    )
    script = (Path(sub["run_dir"]) / "job.sh").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "MASTER_ADDR" in script
    reference = reference_run(sets, tmp_path / "reference")
    row = wait_for_state(sub["job_id"], FINAL, timeout=300)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout[-3000:]
    results = json.loads((Path(sub["run_dir"]) / "results.json").read_text())
    assert results["world_size"] == 2 and reference["world_size"] == 1
    assert results["test_loss"] == pytest.approx(reference["test_loss"], rel=1e-3, abs=1e-4)
    assert results["test_acc"] == pytest.approx(reference["test_acc"], abs=0.01)
    for got, want in zip(results["history"], reference["history"], strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-3, abs=1e-4)


def test_out_of_memory_is_reported_with_advice(env: None, tiny_mnist: Path) -> None:
    sets = train_sets(tiny_mnist, epochs=2000) + ["--set", "train.val_size=100"]
    sub = cli_json("submit", "mnist", *sets, "--mem", "150M")
    row = wait_for_state(sub["job_id"], FINAL, timeout=240)
    assert row["state"] == "OUT_OF_MEMORY", row
    text = cli("status", sub["job_id"]).stdout
    assert "ran out of memory: raise --mem" in text


def _ctld_pid() -> int:
    return int(Path("/run/minidelta/slurmctld.pid").read_text())


def test_slurmctld_down_status_is_cached_and_submit_records_nothing(env: None, tiny_mnist: Path) -> None:
    sets = train_sets(tiny_mnist, epochs=200) + ["--set", "train.val_size=100"]
    sub = cli_json("submit", "mnist", *sets)
    wait_for_state(sub["job_id"], {"RUNNING"}, timeout=120)
    registry = load_settings().home_path / "registry.sqlite"
    runs_before = sorted(load_settings().runs_path.iterdir())
    subprocess.run(["kill", str(_ctld_pid())], check=True)
    try:
        deadline = time.time() + 30
        while subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP"):
            assert time.time() < deadline
            time.sleep(0.5)
        status = cli("status", timeout=120)
        assert status.returncode == 3
        assert sub["job_id"] in status.stdout and "RUNNING" in status.stdout
        assert "showing cached states" in status.stderr and "Traceback" not in status.stderr
        # sbatch is asked again for DELTAJOBS_SLURM_DEADLINE s (2 minutes by default), said once
        submitted = cli("submit", "mnist", *sets, env={"DELTAJOBS_SLURM_DEADLINE": "30"}, timeout=120)
        assert submitted.returncode == 3
        errors = submitted.stderr.strip().splitlines()
        assert len(errors) == 2 and errors[0].startswith("deltajobs: SLURM is slow to answer (sbatch: ")
        assert "slurmctld is not answering" in errors[1] and errors[1].endswith("; nothing was submitted")
        assert sorted(load_settings().runs_path.iterdir()) == runs_before
        with sqlite3.connect(registry) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    finally:
        subprocess.run([str(REPO / "scripts" / "minidelta"), "up"], check=True, capture_output=True)
    row = wait_for_state(sub["job_id"], FINAL, timeout=240)
    assert row["state"] == "COMPLETED"
