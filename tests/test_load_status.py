"""`status` over a long history (issue 24, section 5): plain `status` shows every unfinished job and
the newest finished ones with one line for the rest; a finished job's restart count is kept in its
row, so listing thousands of finished jobs reads no run directory; version-1 registries gain the
column on open. Unit tests: a real registry file, no scheduler."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path

import pytest

from deltajobs.cli.views import STATUS_ROWS, newest, status_dict, status_table
from deltajobs.injob.progress import ATTEMPTS_FILE
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry, db_path
from deltajobs.spec.settings import load_settings


def job(i: int, state: str, run_dir: Path) -> JobRow:
    return JobRow(
        job_id=str(5000 + i),
        name=f"fit{i}",
        cluster="minidelta",
        backend="slurm",
        run_dir=str(run_dir),
        log_path=str(run_dir / "o"),
        err_path=str(run_dir / "e"),
        submitted_at=1000.0 + i,
        state=state,
        partition="cpu",
    )


def test_plain_status_keeps_every_unfinished_job_and_the_newest_finished_ones(tmp_path: Path) -> None:
    rows = [job(i, "RUNNING" if i in (0, 7) else "COMPLETED", tmp_path) for i in range(50)]
    rows[3].state, rows[3].reason = "PENDING", "Priority"
    shown, hidden = newest(rows, 10)
    assert [r.job_id for r in shown] == ["5000", "5003", "5007", *(str(5000 + i) for i in range(43, 50))]
    assert hidden == 40
    assert newest(rows, None) == (rows, 0) and newest(rows[:5], 10) == (rows[:5], 0)
    text = status_table(rows, limit=10)
    lines = text.splitlines()
    assert lines[0].split() == ["JOBID", "NAME", "STATE", "PARTITION", "GPUS", "ELAPSED", "SU", "REASON"]
    assert len(lines) == 1 + 10 + 1
    assert lines[-1] == "(40 earlier finished jobs not shown: `deltajobs status --all`)"
    assert lines[2].split()[:3] == ["5003", "fit3", "PENDING"]
    assert lines[2].endswith("waiting behind higher-priority jobs")  # the pending reason, in words
    assert "not shown" not in status_table(rows)  # --all and ids: no limit
    many_running = [job(i, "RUNNING", tmp_path) for i in range(STATUS_ROWS + 5)]
    assert len(status_table(many_running, limit=STATUS_ROWS).splitlines()) == STATUS_ROWS + 6  # never hidden
    one = [*many_running, job(99, "FAILED", tmp_path)]
    assert status_table(one, limit=STATUS_ROWS).splitlines()[-1].startswith("(1 earlier finished job not shown")


def test_squeue_reason_none_is_not_printed(tmp_path: Path) -> None:
    row = job(1, "PENDING", tmp_path)
    row.reason = "None"  # squeue's reason for a job it has not looked at yet
    assert "None" not in status_table([row])


def test_a_job_that_ends_keeps_its_restart_count_and_status_reads_no_file(tmp_path: Path) -> None:
    requeued, plain = tmp_path / "requeued", tmp_path / "plain"
    for run_dir in (requeued, plain):
        run_dir.mkdir()
    starts = [{"time": time.time(), "nodes": node} for node in ("gpua001", "gpua002", "gpua002")]
    (requeued / ATTEMPTS_FILE).write_text(json.dumps({"starts": starts}))
    with Registry.open(load_settings()) as registry:
        registry.add_many([job(1, "RUNNING", requeued), job(2, "PENDING", plain)])
        assert registry.get("5001").restarts is None  # running: counted from the run directory
        assert status_dict(registry.get("5001"))["restarts"] == 2
        registry.update_many({"5001": {"state": "COMPLETED"}, "5002": {"state": "RUNNING"}})
        ended, running = registry.get("5001"), registry.get("5002")
    assert (ended.restarts, running.restarts) == (2, None)
    assert json.loads((requeued / "job.json").read_text())["restarts"] == 2  # the record rebuild reads
    (requeued / ATTEMPTS_FILE).unlink()  # what status shows of a finished job no longer needs the file
    assert status_dict(ended)["restarts"] == 2
    assert "COMPLETED (restarts 2)" in status_table([ended])
    assert ended.to_dict() == dataclasses.asdict(ended)  # the shallow copy `status --json` prints


def test_a_version_1_registry_gains_the_restarts_column_and_keeps_its_rows(tmp_path: Path) -> None:
    with Registry.open(load_settings()) as registry:
        registry.add(job(1, "COMPLETED", tmp_path))
    path = db_path(load_settings())
    with sqlite3.connect(path) as conn:  # the file as deltajobs wrote it before this column existed
        conn.execute("DROP INDEX jobs_submitted")
        conn.execute("ALTER TABLE jobs DROP COLUMN restarts")
        conn.execute("PRAGMA user_version=1")
    conn.close()
    with Registry.open(load_settings()) as registry:
        assert [r.job_id for r in registry.query()] == ["5001"]
        registry.update("5001", restarts=3)
        assert registry.get("last").restarts == 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        names = {r[1] for r in conn.execute("PRAGMA index_list(jobs)")}
    conn.close()
    assert "jobs_submitted" in names


@pytest.mark.parametrize("count", [0, 1])
def test_status_table_of_nothing_or_one_job_is_unchanged(count: int, tmp_path: Path) -> None:
    rows = [job(i, "COMPLETED", tmp_path) for i in range(count)]
    text = status_table(rows, limit=STATUS_ROWS)
    assert "not shown" not in text
    assert text.startswith("no jobs") if not count else text.splitlines()[1].startswith("5000")


def test_the_cli_limits_plain_status_and_lists_everything_with_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import run_main

    now = time.time()
    rows = [job(i, "COMPLETED", tmp_path) for i in range(STATUS_ROWS + 12)]
    for i, row in enumerate(rows):
        row.submitted_at = now - 3600 + i  # all within the last week: plain status would list every one
    with Registry.open(load_settings()) as registry:
        registry.add_many(rows)
    code, out, err = run_main(monkeypatch, capsys, "status")
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert len(lines) == 1 + STATUS_ROWS + 1
    assert lines[1].startswith("5012 ") and lines[STATUS_ROWS].startswith(f"{5000 + STATUS_ROWS + 11} ")  # the newest
    assert lines[-1] == "(12 earlier finished jobs not shown: `deltajobs status --all`)"
    code, out, _ = run_main(monkeypatch, capsys, "status", "--all")
    assert code == 0 and len(out.splitlines()) == 1 + STATUS_ROWS + 12 and "not shown" not in out
    code, out, _ = run_main(monkeypatch, capsys, "status", "--json")
    assert code == 0 and len(json.loads(out)) == STATUS_ROWS + 12  # --json: every row, for programs
