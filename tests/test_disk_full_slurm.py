"""A trainer job on minidelta whose run directory fills up mid-run (a tmpfs mounted on the host
under the runs directory: slurmd's jobs share the host's mounts; root only). The job's log ends with
the one line, sacct's exit code is 28:0, `status` says disk full / quota, `results` repeats the
line, the epoch-1 checkpoint is intact, and once space is freed the printed
`deltajobs resume RUN_DIR` completes it as a new job.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from slurmutil import cli, cli_json, needs_slurm, wait_for_state
from test_disk_full import mount_tmpfs, remount

from deltajobs.spec.settings import load_settings
from deltajobs.train.checkpoint import load_checkpoint

TRAIN = ["--set", "train.val_size=100", "--set", "train.batch_size=32", "--set", "train.threads=1"]


@needs_slurm
@pytest.mark.slurm
@pytest.mark.train
def test_a_job_on_a_full_disk_fails_in_one_line_and_resumes(
    tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tiny_mnist))
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    probe = cli("train", "mnist", *TRAIN, "--set", "train.epochs=1", "--run-dir", str(tmp_path / "probe"))
    assert probe.returncode == 0, probe.stderr
    size = (tmp_path / "probe" / "checkpoint.pt").stat().st_size
    runs = load_settings().runs_path
    mount_tmpfs(runs, int(size * 1.5) // 1024 + 256)  # one checkpoint fits, two do not
    try:
        check_job(runs)
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)


def check_job(runs: Path) -> None:
    sub = cli_json("submit", "mnist", *TRAIN, "--set", "train.epochs=3")
    job_id, run_dir = sub["job_id"], Path(sub["run_dir"])
    row = wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    err = cli("logs", job_id, "--err").stdout
    assert row["state"] == "FAILED" and row["exit_code"] == "28:0", err
    assert "Traceback" not in err, err
    [last] = [line for line in err.splitlines() if "disk full" in line]  # then srun's "exit code 28"
    assert last.startswith(
        f"deltajobs: disk full / quota exceeded writing {run_dir}/checkpoint.pt.tmp (tmpfs at {runs}"
    )
    assert "the last checkpoint (epoch 1) is kept" in last
    assert row["reason_words"] == f"disk full / quota: `deltajobs results {job_id}`"
    table = cli("status", job_id).stdout.splitlines()
    assert table[1].split()[2] == "FAILED" and table[1].endswith(f"disk full / quota: `deltajobs results {job_id}`")
    results = cli("results", job_id)
    assert results.returncode == 5
    assert results.stderr.strip() == f"deltajobs: error: job {job_id} ended FAILED without results: {last[11:]}"
    assert not list(run_dir.glob("*checkpoint.pt*.tmp"))  # the failed write's temporary file is gone
    assert load_checkpoint(run_dir / "checkpoint.pt", torch.device("cpu"))["epoch"] == 1

    remount(runs, 64 * 1024)  # space freed
    command = shlex.split(re.search(r"continue from it with `([^`]+)`", last).group(1))  # type: ignore[union-attr]
    assert command[:3] == ["deltajobs", "resume", str(run_dir)]  # on the queue, not on the login node
    again = cli(*command[1:], "--wait", "--json", timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["resumes"] == job_id and resumed["state"] == "COMPLETED"
    assert json.loads(cli("results", resumed["job_id"], "--json").stdout)["epochs"] == 3
    assert "epoch 2 step 0" in cli("logs", resumed["job_id"]).stdout
