"""`deltajobs resume` on minidelta (a real SLURM controller): a trainer job and a user's script, each
cancelled after its first checkpoint, continue as a new job in the same run directory and complete
with every epoch once in metrics.jsonl; both jobs keep their rows, `status`, `logs` and `results`
answer for each, and `resume` of the finished run is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurmutil import REPO, cli, cli_json, needs_slurm, wait_for_state

from deltajobs.spec.settings import load_settings

pytestmark = [needs_slurm, pytest.mark.slurm]

# `python -m deltajobs resume` once deltajobs/cli/__init__.py registers it (patch resume-cli-init.patch);
# until then the module is imported first: the same app, the same main().
BOOT = "import sys, deltajobs.cli.resume; from deltajobs.cli import main; sys.argv[0] = 'deltajobs'; main()"

CHECKPOINTING = """\
import json, os, sys, time
from deltajobs import report, should_stop
state = os.path.join(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "state.json")
done = json.load(open(state))["done"] if os.path.exists(state) else 0
print(f"restart {os.environ['DELTAJOBS_RESTART_COUNT']} starts at {done}", flush=True)
while done < 40:
    if should_stop():
        print(f"stopping after {done}", flush=True)
        sys.exit(1)
    time.sleep(0.5)
    done += 1
    report(epoch=done, val_acc=done / 40)  # then the state that says it was reported
    with open(state + ".tmp", "w") as f:
        json.dump({"done": done}, f)
    os.replace(state + ".tmp", state)
print("finished 40", flush=True)
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")


def resume(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BOOT, "resume", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def cancel_after(job_id: str, checkpoint: Path) -> None:
    """Cancel the job once `checkpoint` exists (its first checkpoint), and wait for CANCELLED."""
    deadline = time.time() + 240
    while not checkpoint.exists():
        assert time.time() < deadline, f"{job_id} wrote no {checkpoint}: {cli('logs', job_id, '--err').stdout}"
        time.sleep(0.5)
    assert cli("cancel", job_id).returncode == 0
    row = wait_for_state(job_id, {"CANCELLED", "COMPLETED", "FAILED"})
    assert row["state"] == "CANCELLED", row


def check_resumed(old_id: str, run_dir: Path, epochs: int) -> str:
    """`resume OLD --wait` completes the run as a new job; both rows answer. Returns the new id."""
    proc = resume(old_id, "--wait")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"resumed {run_dir.name} as ") and first.endswith(f"(slurm): resumes {old_id} (CANCELLED)")
    new_id = first.split()[3]
    assert f"  run dir: {run_dir}" in proc.stdout and "  charge:  at most " in proc.stdout
    assert f"{new_id} COMPLETED" in proc.stdout  # --wait followed it
    history = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert history == list(range(1, epochs + 1))  # every epoch once: none lost, none repeated
    rows = {r["job_id"]: r for r in cli_json("status", old_id, new_id)}
    assert rows[old_id]["state"] == "CANCELLED" and rows[new_id]["state"] == "COMPLETED"
    assert rows[old_id]["run_dir"] == rows[new_id]["run_dir"] == str(run_dir)
    assert rows[old_id]["su"] and rows[new_id]["su"]  # each job is charged: both rows keep it
    assert json.loads((run_dir / "previous" / old_id / "job.json").read_text())["job_id"] == old_id
    assert json.loads((run_dir / "job.json").read_text())["job_id"] == new_id
    for job_id in (old_id, new_id):  # results: the run directory's, its final attempt's
        results = cli("results", job_id, "--json")
        assert results.returncode == 0, results.stderr
        assert len(json.loads(results.stdout)["history"]) == epochs
    again = resume(old_id)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"deltajobs: error: job {old_id} was resumed as {new_id}, which COMPLETED: nothing to resume "
        f"(`deltajobs results {new_id}`)"
    )
    return new_id


def test_a_cancelled_trainer_job_resumes_from_its_checkpoint(env: None, tiny_mnist: Path) -> None:
    epochs = 1500  # tiny data: ~30 s of epochs, cancelled a few seconds in
    sets = [f"train.data_root={tiny_mnist}", f"train.epochs={epochs}", "train.val_size=100"]
    sets += ["train.batch_size=32", "train.threads=1", "train.checkpoint_every=1"]
    sub = cli_json("submit", "mnist", *[arg for s in sets for arg in ("--set", s)])
    run_dir = Path(sub["run_dir"])
    cancel_after(sub["job_id"], run_dir / "checkpoint.pt")
    new_id = check_resumed(sub["job_id"], run_dir, epochs)
    log = cli("logs", new_id).stdout
    assert f"resuming from {run_dir / 'checkpoint.pt'} (restart 0)" in log and f"epoch {epochs}/{epochs}" in log
    assert "caught SIGTERM" in cli("logs", sub["job_id"]).stdout  # the old job's log is its own
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


def test_a_cancelled_script_resumes_from_its_checkpoint_dir(env: None, tmp_path: Path) -> None:
    (tmp_path / "count.py").write_text(CHECKPOINTING)
    sub = cli_json("submit", "count.py", "--time", "00:05:00", cwd=tmp_path)
    run_dir = Path(sub["run_dir"])
    cancel_after(sub["job_id"], run_dir / "checkpoints" / "state.json")
    new_id = check_resumed(sub["job_id"], run_dir, 40)
    log = cli("logs", new_id).stdout
    done = json.loads((run_dir / "previous" / sub["job_id"] / "attempts.json").read_text())
    assert len(done["starts"]) == 1  # the old job's starts, set aside with it
    assert "restart 0 starts at " in log and "finished 40" in log
    assert "restart 0 starts at 0" not in log  # it continued, it did not start over
    assert load_settings().runs_path in run_dir.parents


SBATCH = """\
#!/bin/bash
#SBATCH --account=bgvu-delta-cpu
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=1
#SBATCH --mem=1g
#SBATCH --time=00:05:00
#SBATCH --output=count_%j.out
mkdir -p "$DELTAJOBS_CHECKPOINT_DIR"
n=$(cat "$DELTAJOBS_CHECKPOINT_DIR/n" 2>/dev/null || echo 0)
echo "starting at $n"
while [ "$n" -lt 8 ]; do sleep 1; n=$((n+1)); echo $n > "$DELTAJOBS_CHECKPOINT_DIR/n"; done
echo "done at $n"
"""


def test_a_cancelled_sbatch_script_is_submitted_again_as_written(env: None, tmp_path: Path) -> None:
    (tmp_path / "count.sh").write_text(SBATCH)
    sub = cli_json("submit", "count.sh", "-A", "bgvu-delta-cpu", cwd=tmp_path)
    run_dir = Path(sub["run_dir"])
    cancel_after(sub["job_id"], run_dir / "checkpoints" / "n")
    (tmp_path / "count.sh").write_text(SBATCH.replace("done at", "edited after submit:"))  # the copy runs
    proc = resume(sub["job_id"], "--wait")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    new_id = proc.stdout.split()[3]
    assert f"  log:     {tmp_path / f'count_{new_id}.out'}" in proc.stdout  # the script's own --output
    log = (tmp_path / f"count_{new_id}.out").read_text()
    assert "starting at 0" not in log and "done at 8" in log  # it continued from its state, as written
    assert (tmp_path / f"count_{sub['job_id']}.out").read_text().startswith("starting at 0")
