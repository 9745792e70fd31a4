"""Sweep submission with SLURM faked at the process boundary: one sbatch call, pickles per task, all or nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission

from deltajobs import backends
from deltajobs.backends.slots import take_slot
from deltajobs.backends.slurm import array_spec
from deltajobs.errors import NotFoundError, SlurmError
from deltajobs.payloads.trainer_job import TrainJob
from deltajobs.registry.store import Registry
from deltajobs.spec.render import submitit_folder
from deltajobs.spec.resolve import Overrides
from deltajobs.spec.settings import load_settings
from deltajobs.sweep.plan import SweepPlan, parse_sweep, plan_sweep
from deltajobs.sweep.record import point_dir
from deltajobs.sweep.submit import render_sweep, submit_sweep

FAKE_SLURM = {
    "sbatch": """#!/bin/bash
echo "$@" >> "$FAKE_SLURM_LOG/sbatch"
if [ -n "$FAKE_SBATCH_FAIL" ]; then echo "sbatch: error: Batch job submission failed: Invalid account" >&2; exit 1; fi
echo "Submitted batch job 4242"
""",
    "scontrol": """#!/bin/bash
[ "$1" = ping ] && echo "Slurmctld(primary) at vm is UP"
exit 0
""",
    "scancel": '#!/bin/bash\necho "$@" >> "$FAKE_SLURM_LOG/scancel"\n',
    "srun": "#!/bin/bash\nexit 1\n",
    "squeue": "#!/bin/bash\nexit 0\n",
    "sacct": "#!/bin/bash\nexit 0\n",
}


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sbatch, scontrol, scancel, srun, squeue, sacct on PATH that record their calls in the returned dir."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    return log


def calls(log: Path, command: str) -> list[str]:
    path = log / command
    return path.read_text().splitlines() if path.exists() else []


def grid_plan(*grid: str) -> SweepPlan:
    spec = parse_sweep(list(grid or ("train.lr=1e-3,1e-2", "train.batch_size=32,64")), [], None, 0)
    return plan_sweep("mnist", spec, Overrides(sets=["train.epochs=1"]), load_settings(), "minidelta")


def test_array_spec_throttles_only_below_the_point_count() -> None:
    assert array_spec(64, 8) == "0-63%8"
    assert array_spec(4, None) == "0-3"
    assert array_spec(4, 4) == "0-3"
    assert array_spec(1, 2) == "0-0"


def test_a_sweep_is_one_sbatch_call_of_the_rendered_array_script(fake_slurm: Path) -> None:
    plan = grid_plan()
    sub = submit_sweep(plan, load_settings(), backends.get("slurm"), max_parallel=2, sweep_id="sw-abcdef")
    assert len(calls(fake_slurm, "sbatch")) == 1
    assert sub.array_job_id == "4242" and [p.job_id for p in sub.points] == ["4242_0", "4242_1", "4242_2", "4242_3"]
    folder = submitit_folder(sub.sweep_dir)
    script = (sub.sweep_dir / "job.sh").read_text()
    assert (folder / "4242_submission.sh").read_text() == script == render_sweep(plan, sub.sweep_dir, 2)
    assert "#SBATCH --array=0-3%2" in script and f"--output={folder}/%A_%a_0_log.out" in script
    for i, point in enumerate(plan.points):
        run_dir = point_dir(sub.sweep_dir, i, 4)
        task = DelayedSubmission.load(folder / f"4242_{i}_submitted.pkl").function
        assert isinstance(task, TrainJob) and task.run_dir == str(run_dir)
        assert task.spec["train"]["lr"] == float(point.params["train.lr"])
        assert task.spec["train"]["batch_size"] == point.params["train.batch_size"]
        assert (run_dir / "spec.yaml").exists() and not (run_dir / "job.sh").exists()
    assert sorted(p.name for p in folder.glob("*.pkl")) == [f"4242_{i}_submitted.pkl" for i in range(4)]
    registry = Registry.open(load_settings())
    rows = registry.query(sweep_id="sw-abcdef")
    sweep = registry.sweep("sw-abcdef")
    registry.close()
    assert [(r.job_id, r.sweep_index, r.state) for r in rows] == [(f"4242_{i}", i, "PENDING") for i in range(4)]
    assert rows[3].log_path == str(folder / "4242_3_0_log.out") and rows[3].run_dir == str(
        point_dir(sub.sweep_dir, 3, 4)
    )
    assert sweep["array_job_id"] == "4242" and sweep["params"]["max_parallel"] == 2
    assert sweep["params"]["points"][1] == {"train.lr": 0.001, "train.batch_size": 64}
    record = json.loads((sub.sweep_dir / "sweep.json").read_text())
    assert record["array_job_id"] == "4242" and record["keys"] == ["train.lr", "train.batch_size"]
    assert record["points"][1]["job_id"] == "4242_1" and record["points"][1]["params"]["train.batch_size"] == 64


def test_a_refused_sbatch_leaves_nothing_behind(fake_slurm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SBATCH_FAIL", "1")
    with pytest.raises(SlurmError, match="sbatch refused the sweep: .*Invalid account"):
        submit_sweep(grid_plan(), load_settings(), backends.get("slurm"), sweep_id="sw-000001")
    runs = load_settings().runs_path
    assert not runs.exists() or not list(runs.iterdir())
    registry = Registry.open(load_settings())
    with pytest.raises(NotFoundError):
        registry.sweep("sw-000001")
    assert registry.query() == []
    registry.close()


def test_a_registry_failure_cancels_the_array(fake_slurm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Registry, rows: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Registry, "add_many", broken)
    with pytest.raises(sqlite3.OperationalError):
        submit_sweep(grid_plan(), load_settings(), backends.get("slurm"), sweep_id="sw-000002")
    assert calls(fake_slurm, "scancel") == ["4242"]
    assert not list(load_settings().runs_path.iterdir())
    registry = Registry.open(load_settings())
    with pytest.raises(NotFoundError):
        registry.sweep("sw-000002")
    registry.close()


def test_slots_let_at_most_n_points_in_lowest_waiting_first(tmp_path: Path) -> None:
    order: list[int] = []

    def point(index: int) -> None:
        fd = take_slot(tmp_path, 1, index, poll=0.02)
        order.append(index)
        time.sleep(0.1)
        os.close(fd)

    first = take_slot(tmp_path, 1, 0)
    waiters = [threading.Thread(target=point, args=(i,)) for i in (3, 1, 2)]
    for waiter in waiters:
        waiter.start()
        time.sleep(0.1)
    assert order == []  # the only slot is held
    os.close(first)
    for waiter in waiters:
        waiter.join(timeout=5)
    assert order == [1, 2, 3]
    a, b = take_slot(tmp_path, 2, 5), take_slot(tmp_path, 2, 6)  # two slots: two holders at once
    os.close(a)
    os.close(b)
