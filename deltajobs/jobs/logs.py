"""A job's outputs as the user follows them: its log files, the lines they gain, the events of a job
followed to its end, and its results.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltajobs import backends
from deltajobs.charge.advice import Advice
from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.jobs.lifecycle import finished_usage, reason_words, right_sizing
from deltajobs.registry.refresh import refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.registry.targets import Target, find_target
from deltajobs.slurm.parse import AcctRecord
from deltajobs.spec.settings import Settings


def log_file(row: JobRow, err: bool = False, task: int = 0) -> Path:
    """A task's stdout (or stderr with `err`) log."""
    return backends.get(row.backend).log_file(row, err=err, task=task)


class LogTail:
    """The lines a job's log gained since the last look, without submitit's bookkeeping lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position = 0
        self.partial = b""

    def new_lines(self, final: bool = False) -> list[str]:
        """Complete new lines (and, once the job is `final`, an unfinished last one)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.position)
                chunk = f.read()
                self.position = f.tell()
        except OSError:
            return []
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = b"" if final else lines.pop()
        text = [line.decode(errors="replace").rstrip("\r") for line in lines]
        return [line for line in text if line.strip() and not line.startswith("submitit ")]


@dataclass(frozen=True)
class Event:
    """Something to tell a user following a job: "state" (with the pending reason in words),
    "line" (a new line of its log), "warning" or, last, "end" (the final state)."""

    kind: str
    text: str


def follow(settings: Settings, job_id: str, interval: float = 2.0) -> Iterator[Event]:
    """Poll one job until it is final: its state changes and every new line of its log, in order;
    an array job (its id) until every task is final: each task's state changes."""
    with Registry.open(settings) as registry:
        try:
            registry.get(job_id)
        except NotFoundError as err:
            target = _array_target(registry, job_id, err)
            yield from _follow_tasks(registry, target.rows, interval)
            return
        yield from _follow(registry, job_id, interval)


def _follow_tasks(registry: Registry, rows: list[JobRow], interval: float) -> Iterator[Event]:
    """An array job's tasks until all are final; the end is COMPLETED only if every task completed."""
    seen: dict[str, str] = {}
    while True:
        result = refresh(registry, rows)
        if result.warning:
            yield Event("warning", result.warning)
        for row in rows:
            if seen.get(row.job_id) != row.state:
                words = reason_words(row.reason) if row.state == "PENDING" else ""
                yield Event("state", f"task {row.sweep_index} {row.state}{': ' + words if words else ''}")
                seen[row.job_id] = row.state
        if all(row.final for row in rows):
            yield Event("end", array_state(rows))
            return
        time.sleep(interval)


def array_state(rows: list[JobRow]) -> str:
    """An array job's state in one word: COMPLETED when every task did, else the first other one."""
    return next((row.state for row in rows if row.state != "COMPLETED"), "COMPLETED")


def _follow(registry: Registry, job_id: str, interval: float) -> Iterator[Event]:
    row = registry.get(job_id)
    tail = LogTail(log_file(row))
    seen_state = ""
    while True:
        result = refresh(registry, [row])
        if result.warning:
            yield Event("warning", result.warning)
        lines = [Event("line", line) for line in tail.new_lines(final=row.final)]
        if row.final:  # the last lines the job wrote come before the news that it ended
            yield from lines
            lines = []
        if row.state != seen_state:
            words = reason_words(row.reason) if row.state == "PENDING" else ""
            yield Event("state", f"{row.state}{': ' + words if words else ''}")
            seen_state = row.state
        yield from lines
        if row.final:
            yield Event("end", row.state)
            return
        time.sleep(interval)


def read_log_file(registry: Registry, row: JobRow, path: Path, keep_following: bool, poll: float) -> Iterator[str]:
    """One log file of `row` as it grows: all of it now, then (`keep_following`) what it gains until
    the job is final and the file stops growing. No file yet is an error unless followed."""
    position = 0
    while True:
        if path.exists():
            with path.open("rb") as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            yield chunk.decode(errors="replace")
        elif not keep_following:
            refresh(registry, [row])
            raise DeltaJobsError(f"job {row.job_id} is {row.state} and has no log yet ({path})")
        if not keep_following:
            return
        refresh(registry, [row])
        if row.final and path.exists() and path.stat().st_size == position:
            return
        time.sleep(poll)


def is_program(run_dir: Path) -> bool:
    """Whether the run directory's job runs the user's own code (its spec.yaml has `run:`)."""
    import yaml

    try:
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(spec, dict) and spec.get("run") is not None


@dataclass
class JobResults:
    """A finished job's results.json, what it used and the advice for next time."""

    row: JobRow
    data: dict[str, Any]
    record: AcctRecord | None
    advice: list[Advice]
    warning: str | None


@dataclass
class ArrayResults:
    """An array job's tasks, brought up to date, what each was charged, and the reports its tasks
    wrote to the run directory they share (`{}` if none)."""

    array_job_id: str
    rows: list[JobRow]
    records: dict[str, AcctRecord]
    data: dict[str, Any]
    warning: str | None

    def task_su(self, row: JobRow) -> float | None:
        record = self.records.get(row.job_id)
        return record.su if record is not None else row.su

    @property
    def su(self) -> float:
        """Every task's charge added up (each task is a job of its own to SLURM, and charged)."""
        return sum(self.task_su(row) or 0.0 for row in self.rows)

    @property
    def state(self) -> str:
        return array_state(self.rows) if all(row.final for row in self.rows) else "RUNNING"


def job_results(settings: Settings, job_id: str) -> JobResults | ArrayResults:
    """The results of one job, its state brought up to date and its usage asked for once; of an
    array job (its id), every task's state and charge."""
    with Registry.open(settings) as registry:
        try:
            row = registry.get(job_id)
        except NotFoundError as err:
            target = _array_target(registry, job_id, err)
            return _array_results(registry, job_id, target.rows)
        refresh(registry, [row])
        data = results(row)
    records, warning = finished_usage([row])
    record = records.get(row.job_id)
    return JobResults(row, data, record, right_sizing(row, record), warning)


def _array_target(registry: Registry, job_id: str, unknown: NotFoundError) -> Target:
    """The array job `job_id` names; else `unknown`, the error that it is no job, as ever."""
    try:
        target = find_target(registry, job_id)
    except NotFoundError:
        raise unknown from None
    if target.array_job_id is None:
        raise unknown
    return target


def _array_results(registry: Registry, array_job_id: str, rows: list[JobRow]) -> ArrayResults:
    found = refresh(registry, rows)
    try:
        data = results(rows[0])  # the run directory's: the tasks share it
    except NotFoundError:
        data = {}
    records, warning = finished_usage(rows)
    return ArrayResults(array_job_id, rows, records, data, found.warning or warning)


def results(row: JobRow) -> dict[str, Any]:
    """A job's results.json (the trainer's, or what deltajobs wrote when a user's program ended);
    else, for a program that reported metrics (an sbatch script has no results.json), its reports."""
    path = Path(row.run_dir) / "results.json"
    metrics = Path(row.run_dir) / "metrics.jsonl"
    if not path.exists() and metrics.exists() and is_program(Path(row.run_dir)):
        from deltajobs.payloads.runner import read_metrics

        return {"status": row.state, "history": read_metrics(metrics)}
    if not path.exists():
        from deltajobs.injob.diskspace import EXIT_DISK_FULL, read_marker

        note = read_marker(Path(row.run_dir)) if row.final else None
        if note is not None or (row.exit_code or "").split(":")[0] == str(EXIT_DISK_FULL):
            said = note or "disk full / quota exceeded (exit status 28): `deltajobs logs {id} --err` says where"
            raise NotFoundError(f"job {row.job_id} ended {row.state} without results: {said.format(id=row.job_id)}")
        hint = "it has not finished" if not row.final else f"it ended {row.state} without results"
        raise NotFoundError(f"job {row.job_id} has no results.json yet ({hint}); see `deltajobs logs {row.job_id}`")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DeltaJobsError(f"{path} is not valid JSON") from None
