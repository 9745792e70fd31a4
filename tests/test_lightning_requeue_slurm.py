"""A plain Lightning script that deltajobs never saw requeues at its walltime warning and resumes from
its own HPC checkpoint, on minidelta (issue 34, item 1): with Lightning's default signal (SIGUSR1)
and with `SLURMEnvironment(requeue_signal=signal.SIGUSR2)`. The requeue Lightning asks of SLURM
itself (`scontrol requeue`) is an attempt like deltajobs' own: recorded, charged and counted.

A program that listens for no warning is left alone by it and runs to its TIMEOUT, as before.

One test waits for SLURM's own warning at the walltime; the others send it as SLURM sends it for a
script's job, SIGURG to every process of the job's step (`#SBATCH --signal=URG@grace`; `scancel
--signal=URG` does the same), at a moment the test picks: SLURM's may come a minute early.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from slurmutil import cli, cli_json, needs_slurm, release_begin_time, wait_for_state
from test_requeue_limits_slurm import slurm_job

pytest.importorskip("lightning")
pytestmark = [needs_slurm, pytest.mark.slurm]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
EPOCHS = 4

# Written as Lightning's docs say; nothing in it knows deltajobs but where it keeps its checkpoints.
LIGHTNING = """\
import json, os, signal, sys, time
import torch
import lightning as L
from lightning.pytorch.plugins.environments import SLURMEnvironment
from torch.utils.data import DataLoader, TensorDataset

LOG = os.path.join(os.environ["DELTAJOBS_RUN_DIR"], "epochs.jsonl")


def note(**record):
    with open(LOG, "a") as out:
        out.write(json.dumps(record) + "\\n")


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, index):
        time.sleep(0.4)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Notes(L.Callback):
    def on_train_start(self, trainer, module):
        note(start=os.environ["DELTAJOBS_RESTART_COUNT"], slurm=os.environ.get("SLURM_RESTART_COUNT", "0"),
             resumed=str(trainer.ckpt_path or ""), epoch=trainer.current_epoch)

    def on_train_epoch_end(self, trainer, module):
        note(epoch_end=trainer.current_epoch)


plugins = [SLURMEnvironment(requeue_signal=signal.SIGUSR2)] if sys.argv[1:] == ["usr2"] else []
data = DataLoader(TensorDataset(torch.randn(80, 4), torch.randn(80, 1)), batch_size=8)  # 10 batches: 4 s
trainer = L.Trainer(max_epochs=EPOCHS, default_root_dir=os.environ["DELTAJOBS_CHECKPOINT_DIR"], accelerator="cpu",
                    devices=1, plugins=plugins, callbacks=[Notes()], logger=False, enable_checkpointing=False,
                    enable_progress_bar=False)
trainer.fit(Model(), data)
note(done=True)
"""

# Listens for nothing: the warning must not end it; only the walltime does.
DEAF = "import time\nprint('working', flush=True)\ntime.sleep(600)\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    return tmp_path


def notes(run_dir: str) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in (Path(run_dir) / "epochs.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError):
        return []


def warn_after_an_epoch(job_id: str, run_dir: str, timeout: float = 120) -> None:
    """SLURM's warning (SIGURG to the job's step) right after the first epoch ended: the next one
    has just begun, so the checkpoint Lightning saves and the kill of its requeue fall in one epoch."""
    deadline = time.time() + timeout
    while not any("epoch_end" in n for n in notes(run_dir)):
        assert time.time() < deadline, f"no epoch ended: {cli('logs', job_id, '--err').stdout[-3000:]}"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=URG", job_id], check=True)


def finish_after_requeue(job_id: str, timeout: float = 240) -> dict[str, str]:
    """Wait for the end, letting a requeued job start again at once (minidelta holds it ~2 min)."""
    deadline = time.time() + timeout
    while (job := slurm_job(job_id)).get("JobState") not in FINAL or job.get("Restarts") == "0":
        if job.get("JobState") == "PENDING" and job.get("Reason") == "BeginTime":
            release_begin_time(job_id)
        assert time.time() < deadline, f"{job}\n{cli('logs', job_id, '--err').stdout[-3000:]}"
        time.sleep(1)
    return job


@pytest.mark.parametrize("how", ["default", "usr2"])
def test_an_unchanged_lightning_script_requeues_at_the_warning_and_trains_every_epoch_once(
    project: Path, how: str
) -> None:
    (project / "fit.py").write_text(LIGHTNING.replace("EPOCHS", str(EPOCHS)))
    args = ["--", "usr2"] if how == "usr2" else []
    sub = cli_json("submit", "fit.py", "--time", "00:10:00", *args, cwd=project)
    job_id, run_dir = sub["job_id"], sub["run_dir"]
    try:
        warn_after_an_epoch(job_id, run_dir)
        job = finish_after_requeue(job_id)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
    err = cli("logs", job_id, "--err").stdout
    out = cli("logs", job_id).stdout
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", (job, err[-3000:])
    seen = notes(run_dir)
    starts = [n for n in seen if "start" in n]
    ends = [n["epoch_end"] for n in seen if "epoch_end" in n]
    assert ends == list(range(EPOCHS)), seen  # every epoch trained once across the two attempts
    assert [n["start"] for n in starts] == ["0", "1"] and [n["slurm"] for n in starts] == ["0", "1"], starts
    assert starts[0]["resumed"] == "" and re.search(r"hpc_ckpt_1\.ckpt$", starts[1]["resumed"]), starts
    assert seen[-1] == {"done": True}
    signal_name = "SIGUSR2" if how == "usr2" else "SIGUSR1"
    assert re.search(rf"the walltime is near: {signal_name} to \S+ \(pid \d+\)", out), out[-3000:]  # said
    # The requeue Lightning asked for is an attempt like deltajobs' own: counted and charged.
    assert wait_for_state(job_id, {"COMPLETED"})["restarts"] == 1
    row = cli_json("status", job_id, "--detail")[0]
    assert row["restarts"] == 1 and len(row["attempts"]) == 2, row
    detail = cli("status", job_id, "--detail").stdout
    assert "(restarts 1)" in detail and "charged for 2 attempts (" in detail, detail
    results = cli("results", job_id).stdout
    assert re.search(r"charge \S+ SU for 2 attempts \(\S+ REQUEUED, \S+ COMPLETED\)", results), results


def test_at_max_requeues_slurm_refuses_lightnings_own_requeue_and_the_run_goes_on(project: Path) -> None:
    """resources.max_requeues=1: the second attempt is the last; it tells SLURM so (Requeue=0), and the
    `scontrol requeue` Lightning runs at its warning is refused: training goes on to the end."""
    (project / "fit.py").write_text(LIGHTNING.replace("EPOCHS", str(EPOCHS)))
    sub = cli_json("submit", "fit.py", "--time", "00:10:00", "--set", "resources.max_requeues=1", cwd=project)
    job_id, run_dir = sub["job_id"], sub["run_dir"]
    try:
        warn_after_an_epoch(job_id, run_dir)
        deadline = time.time() + 240
        while len([n for n in notes(run_dir) if "start" in n]) < 2:  # the second attempt has begun
            job = slurm_job(job_id)
            if job.get("JobState") == "PENDING" and job.get("Reason") == "BeginTime":
                release_begin_time(job_id)
            assert time.time() < deadline, job
            time.sleep(0.5)
        while not [n for n in notes(run_dir)[-1:] if "epoch_end" in n]:  # an epoch of it ended
            assert time.time() < deadline
            time.sleep(0.1)
        subprocess.run(["scancel", "--signal=URG", job_id], check=True)
        row = wait_for_state(job_id, FINAL, timeout=120)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
    err, out = cli("logs", job_id, "--err").stdout, cli("logs", job_id).stdout
    assert row["state"] == "COMPLETED" and slurm_job(job_id).get("Restarts") == "1", (row, err[-3000:])
    assert "resources.max_requeues=1 allows: SLURM will not requeue the job again (Requeue=0)" in out, out[-3000:]
    assert out.count("the walltime is near: SIGUSR1 to ") == 2, out[-3000:]
    assert re.search(r"Requeuing SLURM job \d+ failed", err), err[-3000:]  # Lightning's own words
    assert [n["epoch_end"] for n in notes(run_dir) if "epoch_end" in n] == list(range(EPOCHS))


def test_at_its_real_walltime_slurms_own_warning_requeues_it(project: Path) -> None:
    """No scancel: SLURM's --signal=URG@60 on a 3-minute job comes 60-120 s in (a minute early at
    most), when Lightning (ready ~10 s in) has trained 12-27 of 30 four-second epochs; the second
    attempt ends the rest (at most 72 s) before its own warning."""
    (project / "fit.py").write_text(LIGHTNING.replace("EPOCHS", "30"))
    sub = cli_json(
        "submit", "fit.py", "--time", "00:03:00", "--set", "resources.signal_grace=60", cwd=project
    )  # fmt: skip
    job_id, run_dir = sub["job_id"], sub["run_dir"]
    try:
        job = finish_after_requeue(job_id, timeout=420)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
    out = cli("logs", job_id).stdout
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", (job, out[-3000:])
    seen = notes(run_dir)
    assert [n["epoch_end"] for n in seen if "epoch_end" in n] == list(range(30)), seen
    assert re.search(r"hpc_ckpt_1\.ckpt$", [n for n in seen if "start" in n][1]["resumed"]), seen
    assert re.search(r"the walltime is near: SIGUSR1 to \S+ \(pid \d+\)", out), out[-3000:]


def test_a_program_that_listens_for_no_warning_runs_to_its_timeout(project: Path) -> None:
    (project / "deaf.py").write_text(DEAF)
    sub = cli_json(
        "submit", "deaf.py", "--time", "00:01:00", "--set", "resources.signal_grace=10", cwd=project
    )  # fmt: skip
    job_id = sub["job_id"]
    deadline = time.time() + 60
    while "working" not in cli("logs", job_id).stdout:
        assert time.time() < deadline, cli("logs", job_id, "--err").stdout
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=URG", job_id], check=True)  # the warning, early: ignored
    row = wait_for_state(job_id, FINAL, timeout=240)
    assert row["state"] == "TIMEOUT", row
    out = cli("logs", job_id).stdout
    assert "catches neither SIGUSR2 nor SIGUSR1 (yet)" in out, out[-2000:]
    assert not list(Path(sub["run_dir"]).glob("results.json"))
