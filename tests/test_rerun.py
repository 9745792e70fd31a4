"""`deltajobs rerun` from the outside, on this machine (the local backend): a script job, an sbatch
script and the packaged trainer, each run again from what its run directory kept, reproduce the same
final metrics with a fixed seed; the rerun runs the snapshot, not the live files edited since; flags
change only what they name; what cannot be rerun says why in one line. And `--after` pipelines on
this machine: the child waits for its parent, reads its directory, and is never started after a
failed one (`cancel --never-start`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from slurmutil import cli, cli_json

SEEDED = """\
import argparse, random
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()
rng = random.Random(args.seed)
loss = 1.0
for epoch in range(1, 4):
    loss -= args.lr * rng.random() * loss
    report(epoch=epoch, loss=loss)
print("VERSION 1", flush=True)
"""

SBATCH = """\
#!/bin/bash
#SBATCH --partition=cpu
#SBATCH --time=00:05:00
#SBATCH --mem=1g
value=$(python3 -c "import random; r = random.Random(7); print(round(r.random(), 6))")
echo "{\\"epoch\\": 1, \\"score\\": $value}" >> "$DELTAJOBS_METRICS"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "train.py").write_text(SEEDED)
    (tmp_path / "job.sh").write_text(SBATCH)
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one"], check=True
    )
    return tmp_path


def final(run_dir: str) -> dict[str, float]:
    data = json.loads((Path(run_dir) / "results.json").read_text())
    return {k: v for k, v in data["history"][-1].items() if k != "time"}  # report() stamps each line


def test_a_script_rerun_runs_its_snapshot_with_the_same_arguments_and_metrics(project: Path) -> None:
    first = cli_json("submit", "train.py", "--local", "--wait", "--", "--seed", "3", cwd=project)
    assert first["state"] == "COMPLETED"
    (project / "train.py").write_text(SEEDED.replace("VERSION 1", "VERSION 2").replace("rng.random()", "0.5"))
    again = cli_json("rerun", first["job_id"], "--wait", cwd=project)
    assert again["state"] == "COMPLETED" and again["rerun_of"] == first["job_id"]
    assert final(again["run_dir"]) == final(first["run_dir"])  # the snapshot ran, not the edited file
    assert "VERSION 1" in cli("logs", again["job_id"]).stdout
    assert (Path(again["run_dir"]) / "code" / "train.py").read_text() == SEEDED
    old = yaml.safe_load((Path(first["run_dir"]) / "spec.yaml").read_text())
    new = yaml.safe_load((Path(again["run_dir"]) / "spec.yaml").read_text())
    assert new["rerun_of"] == first["job_id"] and new["run"]["args"] == ["--seed", "3"]
    git = json.loads((Path(again["run_dir"]) / "env" / "git.json").read_text())
    assert git == json.loads((Path(first["run_dir"]) / "env" / "git.json").read_text())  # the code's record too
    # what a person reads
    text = cli("rerun", first["job_id"], cwd=project).stdout
    assert text.startswith("submitted local-") and f"rerun of {first['job_id']} (python train.py --seed 3)" in text
    status = cli("status", "--detail").stdout
    assert f"rerun of {first['job_id']}" in status
    assert (
        f"rerun of {first['job_id']} (`deltajobs diff {first['job_id']} {again['job_id']}`)"
        in cli("results", again["job_id"]).stdout
    )
    assert cli_json("results", again["job_id"])["rerun_of"] == first["job_id"]
    # flags change only what they name
    changed = cli_json("rerun", first["job_id"], "--time", "00:07:00", "--set", "run.args=[--seed, 4]", "--wait")
    spec = yaml.safe_load((Path(changed["run_dir"]) / "spec.yaml").read_text())
    assert spec["resources"]["time"] == "00:07:00" and spec["run"]["args"] == ["--seed", "4"]
    assert {k: v for k, v in spec["resources"].items() if k != "time"} == {
        k: v for k, v in old["resources"].items() if k != "time"
    }
    assert final(changed["run_dir"]) != final(first["run_dir"])


def test_an_sbatch_script_rerun_submits_the_script_as_it_was_submitted(project: Path) -> None:
    first = cli_json("submit", "job.sh", "--local", "--wait", cwd=project)
    assert first["state"] == "COMPLETED", cli("logs", first["job_id"], "--err").stdout
    (project / "job.sh").write_text(SBATCH.replace("Random(7)", "Random(8)"))
    again = cli_json("rerun", first["job_id"], "--wait", cwd=project)
    assert again["state"] == "COMPLETED"
    assert final(again["run_dir"]) == final(first["run_dir"])
    assert (Path(again["run_dir"]) / "job.sh").read_text() == SBATCH


def test_a_trainer_rerun_reproduces_its_test_accuracy(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tiny_mnist))
    tiny = ["--set", "train.epochs=1", "--set", "train.val_size=100", "--set", "train.batch_size=32"]
    first = cli_json("submit", "mnist", "--local", "--wait", *tiny)
    assert first["state"] == "COMPLETED", cli("logs", first["job_id"], "--err").stdout
    again = cli_json("rerun", first["job_id"], "--wait")
    assert again["state"] == "COMPLETED"
    a, b = (json.loads((Path(r["run_dir"]) / "results.json").read_text()) for r in (first, again))
    assert b["test_acc"] == a["test_acc"] and b["test_loss"] == a["test_loss"]


def test_what_cannot_be_rerun_says_why_in_one_line(project: Path) -> None:
    missing = cli("rerun", "12345")
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    assert "12345" in missing.stderr and "Traceback" not in missing.stderr
    first = cli_json("submit", "train.py", "--local", "--wait", cwd=project)
    bad = cli("rerun", first["job_id"], "--set", "resources.nodez=2")
    assert bad.returncode != 0 and "nodez" in bad.stderr and "Traceback" not in bad.stderr
    runs = sorted((Path(first["run_dir"]).parent).iterdir())
    (Path(first["run_dir"]) / "code" / "train.py").unlink()
    gone = cli("rerun", first["job_id"])
    assert gone.returncode != 0 and "snapshot" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
    assert sorted((Path(first["run_dir"]).parent).iterdir()) == runs  # no run directory left behind


PARENT = """\
import os, pathlib, time
time.sleep(1)
pathlib.Path(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "best.pt").write_text("weights")
"""

CHILD = """\
import os, sys
print("read", open(sys.argv[1]).read(), "from", os.environ["DELTAJOBS_PARENT_RUN_DIR"], flush=True)
"""


def test_a_local_child_waits_for_its_parent_and_reads_its_directory(tmp_path: Path) -> None:
    (tmp_path / "parent.py").write_text(PARENT)
    (tmp_path / "child.py").write_text(CHILD)
    parent = cli_json("submit", "parent.py", "--local", cwd=tmp_path)
    child = cli_json(
        "submit", "child.py", "--local", "--after", parent["job_id"], "--wait",
        "--", "{after.run_dir}/checkpoints/best.pt",
        cwd=tmp_path,
    )  # fmt: skip
    assert child["state"] == "COMPLETED"
    assert f"read weights from {parent['run_dir']}" in cli("logs", child["job_id"]).stdout
    assert cli_json("status", parent["job_id"])[0]["state"] == "COMPLETED"


def test_a_three_step_local_chain_runs_in_order_and_an_sbatch_step_reads_its_parent(tmp_path: Path) -> None:
    (tmp_path / "parent.py").write_text(PARENT)
    (tmp_path / "middle.sh").write_text(
        "#!/bin/bash\n#SBATCH --partition=cpu\n#SBATCH --time=00:05:00\n#SBATCH --mem=1g\n"
        'cp "$DELTAJOBS_PARENT_RUN_DIR/checkpoints/best.pt" "$DELTAJOBS_CHECKPOINT_DIR/best.pt"\n'
    )
    (tmp_path / "child.py").write_text(CHILD)
    first = cli_json("submit", "parent.py", "--local", cwd=tmp_path)
    middle = cli_json("submit", "middle.sh", "--local", "--after", first["job_id"], cwd=tmp_path)
    last = cli_json(
        "submit", "child.py", "--local", "--after", middle["job_id"], "--wait",
        "--", "{after.run_dir}/checkpoints/best.pt",
        cwd=tmp_path,
    )  # fmt: skip
    assert last["state"] == "COMPLETED", cli("logs", last["job_id"]).stdout
    assert f"read weights from {middle['run_dir']}" in cli("logs", last["job_id"]).stdout


def test_a_local_child_of_a_failed_parent_never_starts_and_is_cleared(tmp_path: Path) -> None:
    (tmp_path / "fail.py").write_text("raise SystemExit(2)\n")
    (tmp_path / "child.py").write_text(CHILD)
    proc = cli("submit", "fail.py", "--local", "--wait", "--json", cwd=tmp_path)
    parent = json.loads(proc.stdout)
    assert proc.returncode == 1 and parent["state"] == "FAILED"
    child = cli_json("submit", "child.py", "--local", "--after", parent["job_id"], "--", "x", cwd=tmp_path)
    grandchild = cli_json("submit", "child.py", "--local", "--after", child["job_id"], "--", "x", cwd=tmp_path)
    for _ in range(50):
        row = cli_json("status", child["job_id"])[0]
        if row["reason"] == "DependencyNeverSatisfied":
            break
        subprocess.run(["sleep", "0.2"])
    assert row["state"] == "PENDING" and row["blocked_by"] == f"parent {parent['job_id']} FAILED"
    assert f"parent {parent['job_id']} FAILED: never starts" in cli("status").stdout
    assert cli_json("status", grandchild["job_id"])[0]["reason"] == "Dependency"  # its parent only waits
    cancelled = cli("cancel", "--never-start").stdout
    assert f"{child['job_id']}: cancelled" in cancelled and f"{grandchild['job_id']}: cancelled" in cancelled
    assert cli_json("status", child["job_id"])[0]["state"] == "CANCELLED"
    assert cli_json("status", grandchild["job_id"])[0]["state"] == "CANCELLED"
    assert not (Path(child["run_dir"]) / "results.json").exists()


def test_after_refuses_what_it_cannot_wait_for_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    for after, words in (("12;rm", "not a job id"), ("local-1-2,abc", "not a job id")):
        proc = cli("submit", "child.py", "--local", "--after", after, cwd=tmp_path)
        assert proc.returncode != 0 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = cli("submit", "child.py", "--local", "--", "{after.run_dir}/x", cwd=tmp_path)
    assert proc.returncode != 0 and "needs --after" in proc.stderr and "Traceback" not in proc.stderr
    for flags, field in (
        (["--after", "4242"], "--after"),
        (["--dependency", "afterany:local-1-2"], "--dependency"),
        (["--dependency", "afterok:local-1-2"], "--after"),
    ):
        proc = cli("submit", "child.py", "--local", *flags, cwd=tmp_path)  # nothing here would wait for it
        assert proc.returncode != 0 and f"error: {field}:" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


def test_a_local_sweep_after_a_parent_and_a_rerun_after_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "parent.py").write_text(PARENT)
    (tmp_path / "child.py").write_text(CHILD)
    old = cli_json("submit", "parent.py", "--local", "--wait", cwd=tmp_path)
    sweep = cli_json(
        "sweep", "child.py", "--grid", "seed=1,2", "--local", "--after", old["job_id"],
        "--", "{after.run_dir}/checkpoints/best.pt",
        cwd=tmp_path,
    )  # fmt: skip
    for point in sweep["points"]:
        for _ in range(100):
            if cli_json("status", point["job_id"])[0]["state"] == "COMPLETED":
                break
            subprocess.run(["sleep", "0.3"])
        assert f"read weights from {old['run_dir']}" in cli("logs", point["job_id"]).stdout
    child = cli_json(
        "submit",
        "child.py",
        "--local",
        "--after",
        old["job_id"],
        "--wait",
        "--",
        "{after.run_dir}/checkpoints/best.pt",
        cwd=tmp_path,
    )
    new = cli_json("submit", "parent.py", "--local", "--wait", cwd=tmp_path)
    again = cli_json("rerun", child["job_id"], "--after", new["job_id"], "--wait", cwd=tmp_path)
    assert again["state"] == "COMPLETED"
    assert f"read weights from {new['run_dir']}" in cli("logs", again["job_id"]).stdout  # not the old parent's
    spec = yaml.safe_load((Path(again["run_dir"]) / "spec.yaml").read_text())
    assert spec["run"]["args"] == [f"{new['run_dir']}/checkpoints/best.pt"]
    assert spec["environment"]["env"]["DELTAJOBS_PARENT_RUN_DIR"] == new["run_dir"]
    # which parent's output each read is what diff names
    diff = cli_json("diff", child["job_id"], again["job_id"])
    shown = json.dumps(diff)
    assert old["run_dir"] in shown and new["run_dir"] in shown
    text = cli("diff", child["job_id"], again["job_id"]).stdout
    assert "arguments" in text and "parents" in text


FUNCTION_USER = """\
import random
from deltajobs import Executor, report

def fit(seed, lr):
    rng = random.Random(seed)
    score = sum(rng.random() * lr for _ in range(5))
    report(epoch=1, score=score)
    return score

if __name__ == "__main__":
    job = Executor(local=True).submit(fit, 11, lr=0.5)
    print(job.job_id, job.result(poll=0.2, timeout=60), flush=True)
"""


def test_a_function_rerun_calls_the_same_pickled_call_again(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(FUNCTION_USER)
    import sys

    proc = subprocess.run([sys.executable, "user.py"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job_id, value = proc.stdout.split()
    (tmp_path / "user.py").write_text(FUNCTION_USER.replace("rng.random() * lr", "lr"))  # not what reruns
    again = cli_json("rerun", job_id, "--wait", cwd=tmp_path)
    assert again["state"] == "COMPLETED"
    results = json.loads((Path(again["run_dir"]) / "results.json").read_text())
    assert results["history"][-1]["score"] == pytest.approx(float(value))


def test_a_sweep_point_reruns_as_a_job_of_its_own_with_its_parameters(project: Path) -> None:
    sweep = cli_json("sweep", "train.py", "--grid", "lr=0.2,0.4", "--local", "--", "--seed", "5", cwd=project)
    point = sweep["points"][1]
    for p in sweep["points"]:
        for _ in range(100):
            if cli_json("status", p["job_id"])[0]["state"] == "COMPLETED":
                break
            subprocess.run(["sleep", "0.3"])
    again = cli_json("rerun", point["job_id"], "--wait", cwd=project)
    assert again["state"] == "COMPLETED"
    assert final(again["run_dir"]) == final(point["run_dir"])
    spec = yaml.safe_load((Path(again["run_dir"]) / "spec.yaml").read_text())
    assert spec["run"]["params"] == {"lr": 0.4} and spec["run"]["args"] == ["--seed", "5"]
    row = cli_json("status", again["job_id"])[0]
    assert row["sweep_id"] is None  # a job of its own, not a new point of the sweep
