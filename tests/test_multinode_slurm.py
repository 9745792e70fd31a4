"""Several nodes on minidelta (`scripts/minidelta up --nodes 3`): multi-node DDP over gloo, a node
that fails under a running job, and an account whose SU limit is too small for the job.

Skipped unless the running minidelta has two or more nodes; the single-node suite runs without them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from slurmutil import cli, cli_json, needs_slurm, slurm_up, wait_for_state
from test_resilience_slurm import FINAL, assert_same_metrics, drive_to_end, reference_run, train_sets

MINIDELTA = str(REPO / "scripts" / "minidelta")
LIMITED_ACCOUNT = "bgvz-delta-gpu"  # scripts/minidelta's tiny account: 0.01 SU


def node_names() -> list[str]:
    if not slurm_up():
        return []
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=10).stdout
    return sorted(set(out.split()))


needs_nodes = pytest.mark.skipif(
    len(node_names()) < 2, reason="minidelta has one node (start it with: scripts/minidelta up --nodes 3)"
)
pytestmark = [needs_slurm, needs_nodes, pytest.mark.slurm]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")


def job_nodes(job_id: str) -> str:
    """The nodes of the job's last run, as sacct writes them (`gpua[001-002]`)."""
    argv = ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "NodeList"]
    return subprocess.run(argv, capture_output=True, text=True).stdout.split()[-1]


def rank_errors(job_id: str, ranks: int, lines: int = 12) -> str:
    """The last stderr lines of every rank: the rank that failed first is seldom the last to print
    (one rank's error makes the others abort), so the tail of the merged log hides it."""
    tails = [cli("logs", job_id, "--err", "--rank", str(r), "--tail", str(lines)).stdout for r in range(ranks)]
    return "\n".join(f"--- rank {r}:\n{tail.rstrip()}" for r, tail in enumerate(tails))


def test_two_nodes_two_gpus_each_train_as_four_gloo_ranks(env: None, tiny_mnist: Path) -> None:
    sets = train_sets(tiny_mnist, epochs=2) + ["--set", "train.batch_size=64", "--set", "train.val_size=100"]
    sub = cli_json("submit", "mnist", *sets, "--nodes", "2", "--gpus", "2")
    row = wait_for_state(sub["job_id"], FINAL, timeout=300)
    assert row["state"] == "COMPLETED", rank_errors(sub["job_id"], 4)
    results = json.loads((Path(sub["run_dir"]) / "results.json").read_text())
    assert results["world_size"] == 4
    nodes = subprocess.run(["scontrol", "show", "hostnames", job_nodes(sub["job_id"])], capture_output=True, text=True)
    assert len(set(nodes.stdout.split())) == 2, nodes.stdout


def test_job_on_a_failed_node_is_requeued_and_resumes_elsewhere(env: None, tiny_mnist: Path, tmp_path: Path) -> None:
    sets = train_sets(tiny_mnist, epochs=60) + ["--set", "train.val_size=100"]
    sub = cli_json("submit", "mnist", *sets)
    wait_for_state(sub["job_id"], {"RUNNING"}, timeout=120)
    log_path = Path(sub["log"])
    deadline = time.time() + 240
    while "epoch 3/" not in (log_path.read_text() if log_path.exists() else ""):
        assert time.time() < deadline, "the job never got to its third epoch"
        time.sleep(1)
    failed = job_nodes(sub["job_id"])
    subprocess.run([MINIDELTA, "fail", failed], check=True, capture_output=True)
    try:
        row = drive_to_end(sub["job_id"], timeout=600)
    finally:
        subprocess.run([MINIDELTA, "heal", failed], check=True, capture_output=True)
    assert row["state"] == "COMPLETED", row["seen"]
    assert row["restarts"] >= 1, row["seen"]
    assert job_nodes(sub["job_id"]) != failed
    assert "resuming from" in log_path.read_text()
    states = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-D", "-j", sub["job_id"], "-o", "State"], capture_output=True, text=True
    ).stdout.split()
    assert "NODE_FAIL" in states, states
    # The same test accuracy as an uninterrupted twin: it resumed exactly (model, optimizer, RNG, order).
    resumed = json.loads((Path(sub["run_dir"]) / "results.json").read_text())
    assert_same_metrics(resumed, reference_run(sets, tmp_path / "twin"))
    # Both attempts are charged, and status says so.
    (detail,) = cli_json("status", sub["job_id"], "--detail")
    assert [a["state"] for a in detail["attempts"]][0] == "NODE_FAIL" and len(detail["attempts"]) >= 2
    assert detail["su"] == pytest.approx(sum(a["elapsed_s"] * a["billing"] for a in detail["attempts"]) / 3.6e6)
    assert "charged for" in cli("status", sub["job_id"], "--detail").stdout


def test_job_beyond_the_su_limit_is_refused_then_pends(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", LIMITED_ACCOUNT)
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    sets = train_sets(tiny_mnist, epochs=1)
    refused = cli("submit", "mnist", *sets, "--time", "00:10:00")
    assert refused.returncode != 0 and "exceeds the balance" in refused.stderr, refused.stderr
    balances = cli_json("accounts")
    assert {"account": LIMITED_ACCOUNT, "balance_su": pytest.approx(0.01, abs=1e-3)}.items() <= next(
        row for row in balances if row["account"] == LIMITED_ACCOUNT
    ).items()
    sub = cli_json("submit", "mnist", *sets, "--time", "00:10:00", "--yes")
    try:
        deadline = time.time() + 60
        while (row := cli_json("status", sub["job_id"])[0])["reason"] in (None, "", "None", "Priority"):
            assert time.time() < deadline, row
            time.sleep(1)
        assert row["state"] == "PENDING" and row["reason"] == "QOSGrpBillingMinutes", row
        assert "the account's balance is too low" in cli("status", sub["job_id"]).stdout
    finally:
        subprocess.run(["scancel", sub["job_id"]], capture_output=True)


def test_a_sweep_spreads_over_the_nodes_and_a_drained_node_is_said_in_words(env: None, tiny_mnist: Path) -> None:
    sets = train_sets(tiny_mnist, epochs=1) + ["--set", "train.val_size=100"]
    # 64 CPUs a task: one task fills a node, so the array's two tasks must run on two nodes.
    sub = cli_json("sweep", "mnist", "--grid", "train.lr=1e-3,2e-3", *sets, "--cpus", "64")
    for point in sub["points"]:
        assert wait_for_state(point["job_id"], FINAL, timeout=300)["state"] == "COMPLETED"
    nodes = {job_nodes(point["job_id"]) for point in sub["points"]}
    assert nodes == {"gpua001", "gpua002"}, nodes
    subprocess.run(["scontrol", "update", "NodeName=gpua[001-002]", "State=DRAIN", "Reason=maintenance"], check=True)
    try:
        job = cli_json("submit", "mnist", *sets)["job_id"]
        deadline = time.time() + 60
        while not (row := cli_json("status", job)[0])["reason_words"]:
            assert time.time() < deadline, row
            time.sleep(1)
        assert row["state"] == "PENDING" and "drained" in row["reason_words"], row
        assert "sinfo -R" in cli("status", job).stdout
    finally:
        subprocess.run(["scontrol", "update", "NodeName=gpua[001-002]", "State=RESUME"], capture_output=True)
    assert wait_for_state(job, FINAL, timeout=300)["state"] == "COMPLETED"


def test_accelerate_launch_on_two_nodes_is_one_world(env: None, tmp_path: Path) -> None:
    """One launcher per node (issue 34, item 3): --num_machines 2, each node its --machine_rank, the
    rendezvous on the first node; the two processes reduce together and rank 0 alone reports."""
    pytest.importorskip("accelerate")
    from test_accelerate import RANKS

    accelerate = Path(sys.executable).parent / "accelerate"  # the job runs this interpreter's environment
    (tmp_path / "ranks.py").write_text(RANKS)
    sub = cli_json(
        "submit", "--command", f"{accelerate} launch ranks.py", "--nodes", "2", "--gpus", "1", "--cpus", "2",
        "--time", "00:05:00", cwd=tmp_path,
    )  # fmt: skip
    row = wait_for_state(sub["job_id"], FINAL, timeout=180)
    assert row["state"] == "COMPLETED", rank_errors(sub["job_id"], 2)
    log = cli("logs", sub["job_id"]).stdout
    assert "--num_processes=2 --num_machines=2 --machine_rank=0" in log, log[-3000:]
    assert "--num_processes=2 --num_machines=2 --machine_rank=1" in log, log[-3000:]
    run_dir = Path(sub["run_dir"])
    for i in (0, 1):
        facts = json.loads((run_dir / f"rank-{i}.json").read_text())
        assert (facts["process_index"], facts["num_processes"], facts["sum"]) == (i, 2, 3.0), facts
        assert (facts["RANK"], facts["LOCAL_RANK"], facts["WORLD_SIZE"]) == (str(i), "0", "2"), facts
    reports = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["rank"]) for r in reports] == [(1, 0), (2, 0)]  # rank 0's, once each
    nodes = subprocess.run(["scontrol", "show", "hostnames", job_nodes(sub["job_id"])], capture_output=True, text=True)
    assert len(set(nodes.stdout.split())) == 2, nodes.stdout
