"""The job lifecycle against a real SLURM controller (minidelta) and the local backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm, wait_for_state

from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import job_names
from deltajobs.spec.settings import load_settings

TINY = ["--set", "train.epochs=1", "--set", "train.val_size=100", "--set", "train.batch_size=32"]


@pytest.fixture
def tiny_env(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tiny_mnist))
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return {}


def registry_ids() -> list[str]:
    registry = Registry.open(load_settings())
    try:
        return [r.job_id for r in registry.query()]
    finally:
        registry.close()


def runs() -> list[Path]:
    root = load_settings().runs_path
    return sorted(root.iterdir()) if root.exists() else []


@needs_slurm
@pytest.mark.slurm
def test_submit_runs_to_completed_with_results_and_logs(tiny_env: dict[str, str]) -> None:
    sub = cli_json("submit", "mnist", *TINY)
    job_id, run_dir = sub["job_id"], Path(sub["run_dir"])
    # the script sbatch got is exactly what `render` prints for the same run directory
    rendered = cli("render", "mnist", *TINY, "--run-dir", str(run_dir))
    assert rendered.returncode == 0, rendered.stderr
    submitted = run_dir / "submitit" / f"{job_id}_submission.sh"
    assert submitted.read_text() == rendered.stdout == (run_dir / "job.sh").read_text()
    row = wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    assert row["state"] == "COMPLETED", cli("logs", job_id, "--err").stdout
    assert set(row["seen"]) <= {"PENDING", "RUNNING", "COMPLETING", "COMPLETED"}
    assert row["su"] and row["su"] > 0
    results = cli_json("results", job_id)
    assert 0.0 <= results["test_acc"] <= 1.0 and results["epochs"] == 1
    log = cli("logs", job_id)
    assert log.returncode == 0 and "epoch 1/1" in log.stdout
    text = cli("results", job_id)
    assert "test_acc" in text.stdout and "EPOCH" in text.stdout
    assert (run_dir / "spec.yaml").exists() and (run_dir / "metrics.jsonl").exists()


@needs_slurm
@pytest.mark.slurm
def test_cancel_a_running_job(tiny_env: dict[str, str]) -> None:
    job_id = cli_json("submit", "mnist", "--set", "train.epochs=500", "--set", "train.val_size=100")["job_id"]
    wait_for_state(job_id, {"RUNNING"})
    proc = cli("cancel", job_id)
    assert proc.returncode == 0 and f"{job_id}: cancelled" in proc.stdout
    assert wait_for_state(job_id, {"CANCELLED", "COMPLETED", "FAILED"})["state"] == "CANCELLED"


@needs_slurm
@pytest.mark.slurm
def test_a_job_that_raises_is_failed_with_the_traceback(tiny_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "nodata"
    empty.mkdir()
    job_id = cli_json("submit", "mnist", *TINY, "--set", f"train.data_root={empty}")["job_id"]
    row = wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert row["state"] == "FAILED"
    err = cli("logs", job_id, "--err").stdout
    assert "Traceback" in err and "deltajobs data fetch mnist" in err


@needs_slurm
@pytest.mark.slurm
@pytest.mark.parametrize("job", job_names())
def test_sbatch_test_only_accepts_every_rendered_spec(job: str, tmp_path: Path) -> None:
    script = cli("render", job, "--cluster", "minidelta", "-A", "bgvu-delta-gpu", "--run-dir", str(tmp_path / "run"))
    assert script.returncode == 0, script.stderr
    path = tmp_path / "job.sh"
    path.write_text(script.stdout)
    import subprocess

    proc = subprocess.run(["sbatch", "--test-only", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "to start at" in proc.stderr


@needs_slurm
@pytest.mark.slurm
def test_sbatch_refusal_leaves_nothing_behind(tiny_env: dict[str, str]) -> None:
    proc = cli("submit", "mnist", *TINY, "--account", "zzzz-delta-gpu")
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sbatch refused the job" in lines[0] and "Traceback" not in proc.stderr
    assert registry_ids() == [] and runs() == []


def test_unknown_job_id_is_one_line() -> None:
    registry = load_settings().home_path / "registry.sqlite"
    for command in (["status", "424242"], ["results", "424242"], ["cancel", "424242"]):
        proc = cli(*command)
        assert proc.returncode == 5, command
        assert proc.stderr.strip().splitlines() == [
            f"deltajobs: error: job 424242 is not in the registry ({registry}); `deltajobs status --all` lists them"
        ]
    proc = cli("logs", "424242")  # logs also takes a sweep or an array job id
    assert proc.returncode == 5 and proc.stderr.strip().splitlines() == [
        f"deltajobs: error: 424242 is not a job, a sweep or an array job in the registry ({registry}); "
        "`deltajobs status --all` lists jobs"
    ]


def test_local_backend_runs_the_same_flow(tiny_env: dict[str, str]) -> None:
    sub = cli_json("submit", "mnist", *TINY, "--local")
    assert sub["backend"] == "local" and sub["job_id"].startswith("local-")
    row = wait_for_state(sub["job_id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=180)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout
    results = cli_json("results", sub["job_id"])
    assert results["epochs"] == 1 and "test_acc" in results
    assert "epoch 1/1" in cli("logs", sub["job_id"]).stdout
    assert json.loads((Path(sub["run_dir"]) / "results.json").read_text())["test_acc"] == results["test_acc"]


def test_local_cancel(tiny_env: dict[str, str]) -> None:
    sub = cli_json("submit", "mnist", "--set", "train.epochs=500", "--set", "train.val_size=100", "--local")
    wait_for_state(sub["job_id"], {"RUNNING"})
    assert cli("cancel", sub["job_id"]).returncode == 0
    assert wait_for_state(sub["job_id"], {"CANCELLED", "FAILED", "COMPLETED"}, timeout=30)["state"] == "CANCELLED"
    pid = int(sub["job_id"].split("-")[1])
    assert not os.path.exists(f"/proc/{pid}/cmdline") or b"submitit" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_an_unreadable_registry_leaves_no_run_directory(tiny_env: dict[str, str]) -> None:
    path = load_settings().home_path / "registry.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a SQLite database" * 100)
    proc = cli("submit", "mnist", *TINY, "--local")
    assert proc.returncode == 1 and "registry" in proc.stderr and "unreadable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert runs() == []
