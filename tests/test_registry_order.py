"""A job's job.json never goes back to an older state (issue 33, item 9): two refreshes that change
one job write its record in the order they commit, because each writes it under the write lock.

The interleaving is forced: the first refresh is held right where it writes job.json, and the second
runs meanwhile from another connection (as another process would), then the first goes on.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from deltajobs.registry import records
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import load_settings


def test_a_slower_refresh_never_writes_an_older_state_over_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    row = JobRow("123", "j", "minidelta", "slurm", str(run_dir), "o", "e", time.time(), "PENDING")
    settings = load_settings()
    with Registry.open(settings) as registry:
        registry.add(row)

    first_writing, second_done = threading.Event(), threading.Event()
    write = records.write_record

    def held_write(directory: Path, name: str, data: dict[str, object]) -> None:
        if threading.current_thread().name == "first":  # hold the first refresh at its job.json
            first_writing.set()
            second_done.wait(timeout=3)  # the fix makes the second wait for the first: not forever
        write(directory, name, data)

    monkeypatch.setattr(records, "write_record", held_write)

    def refresh(state: str) -> None:
        with Registry.open(settings) as registry:
            registry.update_many({"123": {"state": state}})

    def second() -> None:
        first_writing.wait(timeout=10)
        refresh("COMPLETED")
        second_done.set()

    threads = [threading.Thread(target=refresh, args=("RUNNING",), name="first"), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with Registry.open(settings) as registry:
        assert registry.get("123").state == "COMPLETED"
    assert json.loads((run_dir / "job.json").read_text())["state"] == "COMPLETED"


def test_sweep_row_json_is_written_under_the_lock_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a sweep's record: the array id and the parameters, set by two processes."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    settings = load_settings()
    with Registry.open(settings) as registry:
        registry.add_sweep("sw-1", "j", "slurm", {"points": []}, str(sweep_dir))

    first_writing, second_done = threading.Event(), threading.Event()
    write = records.write_record

    def held_write(directory: Path, name: str, data: dict[str, object]) -> None:
        if threading.current_thread().name == "first":
            first_writing.set()
            second_done.wait(timeout=3)
        write(directory, name, data)

    monkeypatch.setattr(records, "write_record", held_write)

    def first() -> None:
        with Registry.open(settings) as registry:
            registry.set_sweep_array("sw-1", "77")

    def second() -> None:
        first_writing.wait(timeout=10)
        with Registry.open(settings) as registry:
            registry.set_sweep_params("sw-1", {"points": [], "workers": 2})
        second_done.set()

    threads = [threading.Thread(target=first, name="first"), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    recorded = json.loads((sweep_dir / "sweep-row.json").read_text())
    assert recorded["array_job_id"] == "77" and recorded["params"] == {"points": [], "workers": 2}
