"""The sweep CLI: `sweep JOB ...`, `sweep status ID` and `sweep results ID` all parse; ranking and plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import load_settings
from deltajobs.sweep.results import PointRow, SweepView, higher_is_better, rank, read_metrics

REPO = Path(__file__).resolve().parent.parent
ENV = {"DELTAJOBS_ACCOUNT": "bgvu-delta-gpu", "DELTAJOBS_CLUSTER": "delta"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args], capture_output=True, text=True, env={**os.environ, **ENV}, cwd=REPO
    )


def fake_sweep(sweep_id: str = "sw-c0ffee") -> Path:
    """A finished local sweep of train.lr x train.batch_size in the registry, with results.json files."""
    settings = load_settings()
    sweep_dir = settings.runs_path / f"mnist_train-{sweep_id}"
    points = [
        {"train.lr": 0.001, "train.batch_size": 32},
        {"train.lr": 0.001, "train.batch_size": 64},
        {"train.lr": 0.01, "train.batch_size": 32},
        {"train.lr": 0.01, "train.batch_size": 64},
    ]
    accs = [0.91, 0.95, 0.97, None]  # point 3 failed: no results
    rows = []
    for i, acc in enumerate(accs):
        run_dir = sweep_dir / f"point-{i:03d}"
        run_dir.mkdir(parents=True)
        if acc is not None:
            history = [{"epoch": 1, "train_loss": 1.0 - acc, "test_acc": acc}]
            results = {"test_acc": acc, "test_loss": 1.0 - acc, "params": 100, "history": history}
            (run_dir / "results.json").write_text(json.dumps(results))
        state = "COMPLETED" if acc is not None else "FAILED"
        rows.append(
            JobRow(
                job_id=f"local-{90000 + i}",
                name="mnist_train",
                cluster="delta",
                backend="local",
                run_dir=str(run_dir),
                log_path=str(sweep_dir / "submitit" / f"{90000 + i}_0_log.out"),
                err_path=str(sweep_dir / "submitit" / f"{90000 + i}_0_log.err"),
                submitted_at=time.time(),
                state=state,
                sweep_id=sweep_id,
                sweep_index=i,
            )
        )
    registry = Registry.open(settings)
    registry.add_sweep(
        sweep_id, "mnist", "local", {"keys": ["train.lr", "train.batch_size"], "points": points}, str(sweep_dir)
    )
    registry.add_many(rows)
    registry.close()
    return sweep_dir


def test_sweep_job_form_parses_and_dry_run_prints_points_and_array_script() -> None:
    proc = cli(
        "sweep",
        "mnist",
        "--grid",
        "train.lr=1e-3,1e-2",
        "--grid",
        "train.batch_size=32,64",
        "--max-parallel",
        "2",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#!/bin/bash\n")
    assert "#SBATCH --array=0-3%2" in proc.stdout and "%A_%a_0_log.out" in proc.stdout
    assert "# point 3: train.lr=1e-2, train.batch_size=64" in proc.stdout
    explicit = cli("sweep", "run", "mnist", "--grid", "train.lr=1e-3,1e-2", "--dry-run", "--json")
    assert explicit.returncode == 0, explicit.stderr
    data = json.loads(explicit.stdout)
    assert data["points"] == [{"train.lr": 0.001}, {"train.lr": 0.01}] and "--array=0-1\n" in data["script"]
    assert not load_settings().runs_path.exists()


def test_an_invalid_point_exits_2_naming_it_and_creates_nothing() -> None:
    proc = cli("sweep", "mnist", "--grid", "train.batch_size=32,64", "--grid", "train.lr=1e-3,-1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "deltajobs: error: point 1 (train.batch_size=32, train.lr=-1): train.lr: -1.0 must be greater than 0.0"
    )
    home = load_settings().home_path
    assert not (home / "runs").exists() and not (home / "registry.sqlite").exists()


def test_sweep_status_form_lists_each_point() -> None:
    fake_sweep()
    proc = cli("sweep", "status", "sw-c0ffee")
    assert proc.returncode == 0, proc.stderr
    assert "4 points, 3 COMPLETED, 1 FAILED" in proc.stdout
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("POINT"))
    assert header.split() == ["POINT", "LR", "BATCH_SIZE", "JOBID", "STATE", "ELAPSED", "REASON"]
    data = json.loads(cli("sweep", "status", "sw-c0ffee", "--json").stdout)
    assert [p["state"] for p in data["points"]] == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]


def test_sweep_results_form_ranks_by_the_metric_and_marks_the_best(tmp_path: Path) -> None:
    fake_sweep()
    proc = cli("sweep", "results", "sw-c0ffee")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split() and line.split()[0][0] in "*0123456789"]
    assert rows[0][:4] == ["*", "2", "0.01", "32"]  # best test_acc first
    assert [r[0] for r in rows[1:]] == ["1", "0", "3"]  # then by test_acc, the failed point last
    assert "best by test_acc: point 2" in proc.stdout
    data = json.loads(cli("sweep", "results", "sw-c0ffee", "--metric", "test_loss", "--json").stdout)
    assert data["higher_is_better"] is False and data["best"]["index"] == 2
    assert [p["index"] for p in data["points"]] == [2, 1, 0, 3]
    bad = cli("sweep", "results", "sw-c0ffee", "--metric", "nope")
    assert bad.returncode == 2 and "--metric: 'nope' is not in the results; choose one of:" in bad.stderr
    plot = tmp_path / "sweep.png"
    drawn = cli("sweep", "results", "sw-c0ffee", "--plot", str(plot))
    assert drawn.returncode == 0, drawn.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_sweep_is_not_found() -> None:
    proc = cli("sweep", "status", "sw-000000")
    assert proc.returncode == 5 and "sweep sw-000000 is not in the registry" in proc.stderr


def test_ranking_direction_follows_the_metric_name(tmp_path: Path) -> None:
    assert higher_is_better("test_acc") and higher_is_better("val_accuracy") and higher_is_better("samples_per_second")
    assert not higher_is_better("test_loss") and not higher_is_better("train_loss")
    points = [PointRow(index=i, job_id=str(i), state="COMPLETED", params={}, run_dir="") for i in range(3)]
    for point, loss in zip(points, [0.5, 0.2, 0.9], strict=True):
        point.metrics = {"test_loss": loss}
    assert [p.index for p in rank(points, "test_loss")] == [1, 0, 2]
    (tmp_path / "results.json").write_text(
        json.dumps({"test_acc": 0.9, "history": [{"train_loss": 3}, {"train_loss": 0.1}]})
    )
    assert read_metrics(tmp_path) == {"test_acc": 0.9, "train_loss": 0.1}
    assert read_metrics(tmp_path / "missing") == {}


@pytest.mark.parametrize(("values", "log"), [([2, 64, 1024], True), ([1e-3, 1e-2], True), ([32, 64], False)])
def test_the_plot_uses_a_log_axis_for_values_spanning_decades(values: list[float], log: bool) -> None:
    from deltajobs.sweep.plot import log_axis

    view = SweepView("sw-1", "mnist", "local", None, "", ["train.x"], [], False, [])
    assert log_axis(view, "train.x", [float(v) for v in values]) is log


def test_a_diverged_point_ranks_last_and_is_never_best(tmp_path: Path) -> None:
    from deltajobs.sweep.results import best_point

    points = [PointRow(index=i, job_id=str(i), state="COMPLETED", params={}, run_dir="") for i in range(4)]
    for point, loss in zip(points, [0.5, float("nan"), 0.2, float("inf")], strict=True):
        point.metrics = {"test_loss": loss, "test_acc": 0.1 if loss != 0.2 else float("nan")}
    assert [p.index for p in rank(points, "test_loss")] == [2, 0, 1, 3]
    assert [p.index for p in rank(points, "test_acc")] == [0, 1, 3, 2]
    assert best_point(points, "test_loss") is points[2]
    for point in points:
        point.metrics = {"test_loss": float("nan")}
    assert best_point(points, "test_loss") is None


def test_sweep_results_show_nan_and_rank_it_last() -> None:
    sweep_dir = fake_sweep()
    point = sweep_dir / "point-002"  # lr=0.01, bs=32 diverged: NaN loss and chance accuracy
    history = [{"epoch": 1, "train_loss": float("nan"), "test_acc": 0.098}]
    (point / "results.json").write_text(json.dumps({"test_acc": 0.098, "test_loss": float("nan"), "history": history}))
    proc = cli("sweep", "results", "sw-c0ffee", "--metric", "test_loss")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["*"], ["0"], ["1"], ["2"])]
    assert [r[0] for r in rows] == ["*", "0", "2"] and rows[0][1] == "1"  # point 1 best, diverged point 2 last
    assert rows[2][4] == "nan"
    assert "best by test_loss: point 1 " in proc.stdout
