"""The registry rebuilt over the two kinds of array task records (SLURM faked at the process boundary,
as in test_sbatch_array.py): a grouped sweep's (`--per-task`, `--pack`: SWEEP/tasks/task-NNN/job.json
beside its sweep-row.json) and an array sbatch script's (RUN/array-tasks/N/job.json). Each comes
back whole, whether the registry was damaged (`registry rebuild`) or deleted (the next command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from test_registry_rebuild import corrupt
from test_sbatch_array import ARRAY, fake, submit  # noqa: F401  (fake: the fixture)

from deltajobs.registry.rebuild import rebuild
from deltajobs.registry.store import Registry, db_path
from deltajobs.spec.settings import load_settings

CPU = ["--account", "bgvu-delta-cpu", "--partition", "cpu", "--gpus", "0"]
KEPT = ("job_id", "run_dir", "log_path", "err_path", "sweep_id", "sweep_index", "time_limit")  # a rebuild keeps them


def grouped_sweep(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    project = Path("project")
    project.mkdir()
    (project / "fit.py").write_text("print('hi')\n")
    monkeypatch.chdir(project)
    grid = ["--grid", "lr=1,2,3,4", "--time", "00:03:00"]
    code, out, err = run_main(monkeypatch, capsys, "sweep", "fit.py", *grid, *flags, *CPU, "--yes", "--json")
    assert code == 0, err
    return json.loads(out)


def kept(registry: Registry, **query: Any) -> dict[str, tuple[Any, ...]]:
    return {r.job_id: tuple(getattr(r, name) for name in KEPT) for r in registry.query(**query)}


def lose_registry(how: str) -> None:
    """The registry damaged and rebuilt, or deleted (the next open starts from the records)."""
    settings = load_settings()
    if how == "damaged":
        corrupt(db_path(settings))
        done = rebuild(settings)
        assert done.damaged and done.skipped == []
    else:
        db_path(settings).unlink()


@pytest.mark.parametrize("how", ["damaged", "deleted"])
@pytest.mark.parametrize("grouping", [("--per-task", "2"), ("--pack", "2")])
def test_a_grouped_sweep_and_its_task_rows_come_back_as_they_were(
    fake: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    grouping: tuple[str, ...],
    how: str,
) -> None:
    sub = grouped_sweep(monkeypatch, capsys, *grouping)
    assert [Path(t["run_dir"]).relative_to(sub["sweep_dir"]).parts[0] for t in sub["tasks"]] == ["tasks", "tasks"]
    with Registry.open(load_settings()) as registry:
        rows, sweep = kept(registry, sweep_id=sub["sweep_id"]), registry.sweep(sub["sweep_id"])
    assert sorted(rows) == ["1234_0", "1234_1"]
    lose_registry(how)
    with Registry.open(load_settings()) as registry:
        assert kept(registry) == rows  # each task's row in its own tasks/task-NNN, none moved
        assert registry.sweep(sub["sweep_id"]) == sweep
    code, out, err = run_main(monkeypatch, capsys, "sweep", "status", sub["sweep_id"], "--json")
    assert code == 0, err
    points = json.loads(out)["points"]
    assert [(p["index"], p["job_id"], p["run_dir"]) for p in points] == [
        (p["index"], p["job_id"], p["run_dir"]) for p in sub["points"]
    ]


@pytest.mark.parametrize("how", ["damaged", "deleted"])
def test_an_array_jobs_task_rows_come_back_in_its_run_directory(
    fake: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    sub = submit(monkeypatch, capsys, ARRAY)
    run_dir = Path(sub["run_dir"])
    assert sorted(p.parent.name for p in run_dir.glob("array-tasks/*/job.json")) == ["0", "1", "2", "3"]
    with Registry.open(load_settings()) as registry:
        rows = kept(registry)
    assert sorted(rows) == [f"1234_{i}" for i in range(4)]
    assert {row[1] for row in rows.values()} == {str(run_dir)}
    lose_registry(how)
    with Registry.open(load_settings()) as registry:
        assert kept(registry) == rows
        assert all(r.array_task for r in registry.query())
