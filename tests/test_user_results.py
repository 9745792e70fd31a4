"""What a person reads about a user's program: results and status text, plots and TensorBoard
scalars of its reports, the nodes each attempt ran on, torchrun's rendezvous."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deltajobs.cli.views import program_results_text
from deltajobs.injob.progress import nodes_text
from deltajobs.payloads.launchers import with_rendezvous
from deltajobs.registry.schema import JobRow
from deltajobs.watch.reportboard import export, program_runs


def row(run_dir: Path) -> JobRow:
    return JobRow("42", "train", "minidelta", "slurm", str(run_dir), "", "", time.time(), "COMPLETED", su=0.0123)


def write_run(run_dir: Path, records: list[dict]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text("name: train\nrun: {script: /x/train.py}\n")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_results_text_of_a_program(tmp_path: Path) -> None:
    history = [{"epoch": 1, "val_acc": 0.5, "loss": 1.25, "time": 1.0}, {"epoch": 2, "val_acc": 0.75, "loss": 0.5}]
    (tmp_path / "attempts.json").write_text(json.dumps({"starts": [{"nodes": "gpua001"}, {"nodes": "gpua002"}]}))
    data = {"command": "python train.py --lr 0.1", "exit_code": 0, "elapsed_seconds": 75.0, "history": history}
    text = program_results_text(row(tmp_path), data, [])
    lines = text.splitlines()
    assert lines[0] == f"job 42 (train) COMPLETED in {tmp_path}"
    assert lines[1:5] == [
        "  ran python train.py --lr 0.1 (exit 0, 1m15s)",
        "  charge 0.012 SU",
        "  ran on gpua001, then gpua002",
        "  last report (2 in all): epoch 2  val_acc 0.75  loss 0.5",
    ]
    assert "EPOCH  VAL_ACC  LOSS" in text and "2      0.75     0.5" in text
    assert "Traceback" not in text and "{" not in text
    assert "no metrics reported" in program_results_text(row(tmp_path), {"history": []}, [])


def test_nodes_text(tmp_path: Path) -> None:
    assert nodes_text(tmp_path) == ""
    (tmp_path / "attempts.json").write_text(json.dumps({"starts": [{"host": "vm"}, {"nodes": "vm"}]}))
    assert nodes_text(tmp_path) == "ran on vm (2 attempts)"


def test_torchrun_gets_the_jobs_nodes_and_rendezvous() -> None:
    env = {"SLURM_NNODES": "2", "SLURM_JOB_ID": "77", "MASTER_ADDR": "gpua001", "MASTER_PORT": "20077"}
    assert with_rendezvous(["torchrun", "train.py", "--lr", "1"], env, 4) == [
        "torchrun",
        "--nnodes=2",
        "--nproc-per-node=4",
        "--rdzv-id=77",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpua001:20077",
        "train.py",
        "--lr",
        "1",
    ]
    given = ["torchrun", "--standalone", "--nproc_per_node=2", "train.py"]
    assert with_rendezvous(given, env, 4) == ["torchrun", "--nnodes=2", *given[1:]]
    assert with_rendezvous(["python", "train.py"], env, 4) == ["python", "train.py"]


def test_reports_become_tensorboard_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    run_dir = tmp_path / "sweep" / "point-000"
    write_run(run_dir, [{"epoch": 1, "val_acc": 0.5, "time": 1.0}, {"epoch": 2, "val_acc": 0.75, "note": "x"}])
    (tmp_path / "sweep" / "trainer").mkdir()
    (tmp_path / "sweep" / "trainer" / "spec.yaml").write_text("name: t\ntrain: {epochs: 1}\n")
    assert program_runs(tmp_path / "sweep") == [run_dir]
    assert export(run_dir) == 2
    assert export(run_dir) == 2  # rewritten, not appended: nothing shows twice
    events = list((run_dir / "tb" / "reports").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(run_dir / "tb" / "reports"))
    accumulator.Reload()
    points = accumulator.Tensors("val_acc")  # TensorBoard's scalars plugin reads these (v2 summaries)
    assert [(p.step, float(make_ndarray(p.tensor_proto))) for p in points] == [(1, 0.5), (2, 0.75)]


def test_reports_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from deltajobs.watch.plots import plot_curves

    history = [{"step": 10, "train_loss": 1.0, "val_acc": 0.5}, {"step": 20, "train_loss": 0.5, "val_acc": 0.6}]
    path = plot_curves({"history": history}, tmp_path / "curves.png", title="job 42")
    assert path.stat().st_size > 1000
