"""Integration: real jobs on minidelta (Delta's billing weights) against deltajobs' charge and estimate.

For each job shape: the charge `deltajobs charge` reports equals elapsed x billing / 3,600,000 from
raw sacct, and the estimate of the same request at the job's real elapsed time equals that charge.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltajobs.charge.estimate import estimate_job
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 180


def minidelta_up() -> bool:
    """sinfo exists and answers."""
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not minidelta_up(), reason="minidelta is not up (scripts/minidelta up)"),
]

GPU, CPU = "bgvu-delta-gpu", "bgvu-delta-cpu"
# (label, account, partition, GPUs, CPUs per task, --mem): the shapes whose billing Delta documents.
SHAPES = [
    ("1gpu", GPU, "gpuA100x4", 1, 1, "16G"),
    ("1gpu-32cpu", GPU, "gpuA100x4", 1, 32, "16G"),
    ("200g", GPU, "gpuA100x4", 1, 1, "200G"),
    ("interactive", GPU, "gpuA100x4-interactive", 1, 1, "16G"),
    ("a40", GPU, "gpuA40x4", 1, 1, "16G"),
    ("cpu", CPU, "cpu", 0, 4, "16G"),
]
EXPECTED_BILLING = {"1gpu": 1000, "1gpu-32cpu": 2000, "200g": 3200, "interactive": 2000, "a40": 500, "cpu": 8000}


def sbatch(label: str, account: str, partition: str, gpus: int, cpus: int, mem: str) -> str:
    argv = ["sbatch", "--parsable", f"--account={account}", f"--partition={partition}", "--nodes=1"]
    argv += ["--ntasks-per-node=1", f"--cpus-per-task={cpus}", f"--mem={mem}", "--time=00:10:00"]
    argv += [f"--gpus-per-node={gpus}"] if gpus else []
    argv += [f"--job-name=charge_it_{label}", "--output=/dev/null", "--wrap=sleep 3"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout.strip().split(";")[0]


def raw_sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """sacct's own view, parsed here without deltajobs: JobID -> State, ElapsedRaw, AllocTRES."""
    argv = ["sacct", "-X", "--noheader", "--parsable2", "--format=JobID,State,ElapsedRaw,AllocTRES"]
    out = subprocess.run([*argv, "--jobs=" + ",".join(job_ids)], capture_output=True, text=True, timeout=30).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {job_id: {"state": state, "elapsed": elapsed, "tres": tres} for job_id, state, elapsed, tres in rows}


def wait_completed(job_ids: list[str], wait_s: float = WAIT_S) -> dict[str, dict[str, str]]:
    """sacct's rows once every job COMPLETED; a job that ended otherwise, or is not done after
    `wait_s` (stuck PENDING included), fails the test: it is cancelled and its state named."""
    deadline = time.monotonic() + wait_s
    rows: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline:
        rows = raw_sacct(job_ids)
        if len(rows) == len(job_ids) and all(row["state"] == "COMPLETED" for row in rows.values()):
            return rows
        failed = {k: r["state"] for k, r in rows.items() if r["state"] not in ("PENDING", "RUNNING", "COMPLETED")}
        assert not failed, f"jobs ended badly: {failed}"
        time.sleep(1.0)
    states = {k: r["state"] for k, r in rows.items()}
    reasons = subprocess.run(["squeue", "-h", "-o", "%i %T %r", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30).stdout.split("\n")  # fmt: skip
    subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)
    stuck = f"jobs not COMPLETED after {wait_s:g}s (a stuck job is a failure): {states}"
    raise AssertionError(f"{stuck}; squeue: {reasons}")


def test_a_job_stuck_pending_fails_the_wait_and_is_cancelled() -> None:
    """Issue 33 item 13: "still PENDING" was a skip; a stuck job must fail the test."""
    argv = ["sbatch", "--parsable", "--hold", f"--account={GPU}", "--partition=gpuA100x4", "--gpus-per-node=1"]
    held = subprocess.run([*argv, "--time=00:05:00", "--output=/dev/null", "--wrap=true"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert held.returncode == 0, held.stderr
    job_id = held.stdout.strip().split(";")[0]
    with pytest.raises(AssertionError, match=r"not COMPLETED after 3s \(a stuck job is a failure\).*PENDING"):
        wait_completed([job_id], wait_s=3)
    deadline = time.monotonic() + 30  # slurmdbd records the cancel a moment later
    while not (state := raw_sacct([job_id]).get(job_id, {}).get("state", "")).startswith("CANCELLED"):
        assert time.monotonic() < deadline, f"job {job_id} was not cancelled: {state}"
        time.sleep(0.5)


def test_charge_and_estimate_match_sacct_billing() -> None:
    ids = {label: sbatch(label, *shape) for label, *shape in SHAPES}  # type: ignore[arg-type]
    raw = wait_completed(list(ids.values()))

    since = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    proc = subprocess.run(
        [sys.executable, "-m", "deltajobs", "charge", "--detail", "--json", "--since", since],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "DELTAJOBS_CLUSTER": "minidelta"},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["source"] == "sacct"
    reported = {job["job_id"]: job for job in report["jobs"]}

    settings = load_settings()
    for label, account, partition, gpus, cpus, mem in SHAPES:
        job_id = ids[label]
        row = raw[job_id]
        billing = float(dict(item.split("=", 1) for item in row["tres"].split(","))["billing"])
        assert billing == EXPECTED_BILLING[label], label
        charge = int(row["elapsed"]) * billing / 3_600_000
        assert reported[job_id]["su"] == pytest.approx(charge, abs=1e-12), label
        assert reported[job_id]["account"] == account

        resolved = resolve_job(
            "mnist",
            Overrides(partition=partition, gpus=gpus, cpus=cpus, mem=mem, time="00:10:00"),
            settings,
            "minidelta",
            require_account=False,
        )
        est = estimate_job(resolved)
        assert est.billing == pytest.approx(billing), label
        assert est.su_for(int(row["elapsed"])) == pytest.approx(charge, rel=1e-9), label
