"""A job on the local backend whose run directory fills up: `status` says disk full / quota in its
REASON column and `results` gives the trainer's one line; the printed `deltajobs resume` completes it
once space is freed. A real tmpfs under the runs directory (root only; skipped otherwise)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_disk_full import TRAIN, mount_tmpfs

REPO = Path(__file__).resolve().parent.parent


def deltajobs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


@pytest.mark.train
def test_status_and_results_say_disk_full_for_a_local_job(tiny_mnist: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    env = {**os.environ, "DELTAJOBS_DATA_ROOT": str(tiny_mnist), "DELTAJOBS_HOME": str(tmp_path / "state")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    probe = deltajobs("train", "mnist", *TRAIN, "--set", "train.epochs=1", "--run-dir", str(tmp_path / "p"), env=env)
    assert probe.returncode == 0, probe.stderr
    size = (tmp_path / "p" / "checkpoint.pt").stat().st_size
    runs = tmp_path / "state" / "runs"  # the registry beside it stays on a roomy disk
    mount_tmpfs(runs, int(size * 1.5) // 1024 + 256)
    try:
        check_disk_full_job(runs, env)
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)


def check_disk_full_job(runs: Path, env: dict[str, str]) -> None:
    sub = deltajobs("submit", "mnist", "--local", *TRAIN, "--set", "train.epochs=3", "--json", env=env)
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    for _ in range(120):
        status = deltajobs("status", job_id, env=env)
        if "RUNNING" not in status.stdout and "PENDING" not in status.stdout:
            break
        time.sleep(1)
    assert status.returncode == 0, status.stderr
    row = status.stdout.splitlines()[1]
    assert " FAILED " in row and row.endswith(f"disk full / quota: `deltajobs results {job_id}`"), status.stdout
    results = deltajobs("results", job_id, env=env)
    assert results.returncode == 5
    last = results.stderr.strip().splitlines()[-1]
    assert last.startswith(f"deltajobs: error: job {job_id} ended FAILED without results: disk full / quota exceeded ")
    assert "checkpoint.pt.tmp (tmpfs at " in last and "the last checkpoint (epoch 1) is kept" in last
    subprocess.run(["mount", "-o", "remount,size=65536k", str(runs)], check=True)
    command = shlex.split(re.search(r"continue from it with `([^`]+)`", last).group(1))  # type: ignore[union-attr]
    assert command[:2] == ["deltajobs", "resume"]  # a submitted job goes back to its backend, not `train` here
    again = deltajobs(*command[1:], "--wait", "--json", env=env)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["resumes"] == job_id and resumed["state"] == "COMPLETED"
    results = deltajobs("results", resumed["job_id"], "--json", env=env)
    assert results.returncode == 0 and json.loads(results.stdout)["epochs"] == 3


def test_the_gpu_sampler_keeps_its_readings_in_memory_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from test_disk_full import fill

    from deltajobs.injob.gpu_usage import GPU_FILE, GpuSampler

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho '0, 9, 5120'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    fs = tmp_path / "fs"
    mount_tmpfs(fs, 64)
    try:
        fill(fs)
        with GpuSampler(fs / GPU_FILE, interval=0.05) as sampler:
            time.sleep(0.3)
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)
    assert len(sampler.samples) >= 2 and not sampler.writing
    assert sampler.summary() is not None and "Traceback" not in capfd.readouterr().err
