"""What a person reads from the watching commands: merged logs, `tensorboard --print-only`, and the
GPU part of the right-sizing advice (no Python reprs, errors on one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_human_output import cli, results_json

from deltajobs.injob.gpu_usage import GPU_FILE
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import load_settings


def add_row(job_id: str, run_dir: Path, gpus_per_node: int = 1, ntasks_per_node: int = 1) -> JobRow:
    """A finished local job in the registry (no sacct is asked about it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    row = JobRow(
        job_id,
        "mnist",
        "minidelta",
        "local",
        str(run_dir),
        str(run_dir / f"{job_id}_0_log.out"),
        str(run_dir / f"{job_id}_0_log.err"),
        1.0,
        "COMPLETED",
        nodes=1,
        gpus_per_node=gpus_per_node,
        ntasks_per_node=ntasks_per_node,
    )
    with Registry.open(load_settings()) as registry:
        registry.add(row)
    return row


def test_logs_of_two_ranks_are_labelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    row = add_row("51", tmp_path / "run", ntasks_per_node=2)
    Path(row.log_path).write_text("loss 1\nloss 2\n")
    Path(row.log_path.replace("_0_log", "_1_log")).write_text("rank 1 ready\n")
    code, out, _ = cli(monkeypatch, capsys, "logs", "51")
    assert code == 0 and out == "0: loss 1\n0: loss 2\n1: rank 1 ready\n"
    code, out, _ = cli(monkeypatch, capsys, "logs", "51", "--tail", "1")
    assert code == 0 and out == "1: rank 1 ready\n"
    code, out, err = cli(monkeypatch, capsys, "logs", "51", "--rank", "3")
    assert code == 2 and err == "deltajobs: error: --rank: 3 is not a rank of job 51; it has ranks 0-1\n"


def test_tensorboard_print_only_says_where_and_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_row("52", tmp_path / "run")
    code, out, err = cli(monkeypatch, capsys, "tensorboard", "52", "--port", "6123", "--print-only")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"TensorBoard for job 52: {tmp_path / 'run'}"
    assert lines[1] == "  open:    http://127.0.0.1:6123/"
    assert lines[2].startswith("  laptop:  ssh -N -L 6123:127.0.0.1:6123 ") and "(then open" in lines[2]
    assert err == f"deltajobs: no TensorBoard event files under {tmp_path / 'run'} yet (they appear as epochs end)\n"
    code, out, err = cli(monkeypatch, capsys, "tensorboard", "nope", "--print-only")
    assert code != 0 and err.startswith("deltajobs: error: nope is not a job, a sweep or an array job")
    assert err.count("\n") == 1


def test_results_advise_on_idle_and_starved_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    add_row("53", run_dir, gpus_per_node=4)
    results_json(run_dir, [0.5, 0.4])
    reading = [[0, 9, 5120], [1, 0, 1], [2, 0, 1], [3, 0, 1]]
    (run_dir / GPU_FILE).write_text("".join(json.dumps({"time": t, "gpus": reading}) + "\n" for t in range(3)))
    code, out, _ = cli(monkeypatch, capsys, "results", "53")
    assert code == 0
    advice = out.split("Right-sizing:\n", 1)[1].splitlines()
    assert advice[0] == "  - 4 GPUs reserved, 1 used: --gpus 1"
    assert advice[1].startswith("  - GPU busy 9% of the time: the input pipeline or the host is the bottleneck")
