"""The job's environment as on Delta, on minidelta with Lmod (issue 23): a job from .venv runs in it
after `module reset; module load pytorch-conda/2.8`, where the module's python alone fails as it
would on Delta; the course's train.sh runs unchanged; doctor names the cause of a broken set-up;
`deltajobs shell` opens with the modules loaded."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm, wait_for_state

pytestmark = [needs_slurm, pytest.mark.slurm]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
TINY = ["--set", "train.epochs=1", "--set", "train.val_size=100", "--set", "train.batch_size=32"]

COURSE_SH = """\
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

module purge
module reset
module load pytorch-conda/2.8

nvidia-smi && python train_mnist.py
"""

# A stand-in for the course's train_mnist.py: torch only, a few steps on random data.
TRAIN_MNIST = """\
import sys
import torch
torch.manual_seed(0)
model = torch.nn.Linear(784, 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
for step in range(20):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
print(f"python {sys.executable} torch {torch.__version__} loss {loss.item():.3f}")
"""


@pytest.fixture
def env(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tiny_mnist))
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")


def test_a_job_from_the_venv_runs_where_the_modules_python_alone_fails(env: None, tmp_path: Path) -> None:
    sub = cli_json("submit", "mnist", *TINY)  # no environment.venv: the venv deltajobs runs in
    script = (Path(sub["run_dir"]) / "job.sh").read_text()
    assert "module load pytorch-conda/2.8" in script and f"source {sys.prefix}/bin/activate" in script
    row = wait_for_state(sub["job_id"], FINAL)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout[-2000:]
    # Yesterday's rendering: the module's python runs the task, as it would on Delta.
    old = cli("render", "mnist", *TINY, "--set", "environment.inherit=false", "--run-dir", str(tmp_path / "old"))
    assert old.returncode == 0 and "source " not in old.stdout
    (tmp_path / "old" / "submitit").mkdir(parents=True)
    (tmp_path / "old.sh").write_text(old.stdout)
    job_id = subprocess.run(
        ["sbatch", "--parsable", str(tmp_path / "old.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    deadline = time.time() + 120
    err = tmp_path / "old" / "submitit" / f"{job_id}_0_log.err"
    while time.time() < deadline and "ModuleNotFoundError" not in (err.read_text() if err.exists() else ""):
        time.sleep(1)
    assert "ModuleNotFoundError: No module named 'submitit'" in err.read_text()
    # deltajobs itself refuses that set-up before anything is submitted, and says why.
    refused = cli("submit", "mnist", *TINY, "--set", "environment.inherit=false")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "the job would fail" in refused.stderr and "submitit missing" in refused.stderr


def test_the_course_train_sh_runs_unchanged(env: None, tmp_path: Path) -> None:
    (tmp_path / "train.sh").write_text(COURSE_SH)
    (tmp_path / "train_mnist.py").write_text(TRAIN_MNIST)
    check = cli("check", "train.sh", cwd=tmp_path)
    assert check.returncode == 0 and "estimate: at most 0.083 SU on gpuA100x4" in check.stdout, check.stdout
    sub = cli_json("submit", "train.sh", cwd=tmp_path)
    row = wait_for_state(sub["job_id"], FINAL)
    out = (tmp_path / f"mnist_{sub['job_id']}.out").read_text()
    assert row["state"] == "COMPLETED", out
    assert "NVIDIA-SMI" in out and "minidelta placeholder" in out
    assert "python /opt/minidelta/envs/pytorch-conda-2.8/bin/python torch " in out  # the module's python


def test_doctor_names_a_module_that_does_not_exist(env: None) -> None:
    proc = cli("doctor", "mnist", "--set", "environment.modules=[pytorch-conda/9.9]")
    assert proc.returncode == 1
    assert "FAIL  job's python" in proc.stdout and "'module load pytorch-conda/9.9' failed" in proc.stdout
    assert "fix: check the module names with `module avail`" in proc.stdout


def test_shell_has_the_modules_loaded(env: None) -> None:
    environ = {**os.environ, "DELTAJOBS_ACCOUNT": "bgvu-delta-gpu", "DELTAJOBS_CLUSTER": "minidelta"}
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "deltajobs", "shell", "--time", "00:05:00"], environ)
    out, deadline = b"", time.time() + 90
    sent = False
    while time.time() < deadline and b"DONE=42" not in out:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        out += chunk
        if not sent and b"exit or Ctrl-D ends it" in out:
            os.write(fd, b'module -t list 2>&1 | tr "\\n" " "; echo; echo "DONE=$((6*7))"; exit\n')
            sent = True
    os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert "pytorch-conda/2.8" in text.split("DONE=42")[0].split("module -t list")[-1], text
