"""A resumed run's two jobs where a person reads them and where the registry is rebuilt from: `status`
and `results` name the link ("resumes 1234"), `registry rebuild` brings both rows back (the old
one's record sits in RUN/previous/JOBID/job.json), and a change to the old row is recorded there,
not over the new job's job.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_main
from test_resume import env, recorded_run  # noqa: F401  (fixture and helper)

import deltajobs.cli.resume  # noqa: F401  (registers `resume` until cli/__init__.py does)
from deltajobs.jobs.resume import PREVIOUS_DIR, set_aside
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import load_settings


def resumed_pair(old_id: str, new_id: str) -> tuple[Path, str, str]:
    """A run whose job `old_id` (SLURM, FAILED, charged) was resumed as `new_id` (COMPLETED)."""
    old = recorded_run(old_id, "FAILED", backend="slurm")
    run_dir = Path(old.run_dir)
    set_aside(run_dir, old_id)
    row = json.loads((run_dir / PREVIOUS_DIR / old_id / "job.json").read_text())
    row |= {"job_id": new_id, "state": "COMPLETED", "submitted_at": row["submitted_at"] + 60, "su": 0.5}
    with Registry.open(load_settings()) as registry:
        registry.add(JobRow(**row))
    (run_dir / "results.json").write_text(json.dumps({"status": "completed", "history": [{"epoch": 1, "acc": 0.5}]}))
    return run_dir, old_id, new_id


def test_status_and_results_name_the_link(
    env: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, old_id, new_id = resumed_pair("7001", "7002")
    code, out, _ = run_main(monkeypatch, capsys, "status", new_id)
    assert code == 0 and f"{new_id}: resumes {old_id} (the same run directory: `deltajobs resume`)" in out
    code, out, _ = run_main(monkeypatch, capsys, "status", old_id)
    assert f"{old_id}: resumed by {new_id} (the same run directory: `deltajobs resume`)" in out
    code, out, _ = run_main(monkeypatch, capsys, "status", "--json", old_id, new_id)
    links = {r["job_id"]: (r["resumes"], r["resumed_by"]) for r in json.loads(out)}
    assert links == {old_id: (None, new_id), new_id: (old_id, None)}
    code, out, _ = run_main(monkeypatch, capsys, "results", new_id)
    assert out.splitlines()[0] == f"job {new_id} (python) COMPLETED in {run_dir} (resumes {old_id})"


def test_rebuild_brings_back_both_jobs_of_a_resumed_run(
    env: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, old_id, new_id = resumed_pair("7101", "7102")
    settings = load_settings()
    (settings.home_path / "registry.sqlite").unlink()  # lost: the run directories still know both
    with Registry.open(settings) as registry:
        rows = {r.job_id: r for r in registry.query()}
    assert set(rows) == {old_id, new_id}
    assert (rows[old_id].state, rows[old_id].su) == ("FAILED", 0.25)
    assert (rows[new_id].state, rows[new_id].su) == ("COMPLETED", 0.5)
    assert rows[old_id].run_dir == rows[new_id].run_dir == str(run_dir)


def test_a_change_to_the_old_row_is_recorded_beside_it(env: None) -> None:  # noqa: F811
    run_dir, old_id, new_id = resumed_pair("7201", "7202")
    with Registry.open(load_settings()) as registry:
        registry.update(old_id, state="NODE_FAIL")
    assert json.loads((run_dir / PREVIOUS_DIR / old_id / "job.json").read_text())["state"] == "NODE_FAIL"
    assert json.loads((run_dir / "job.json").read_text())["job_id"] == new_id
