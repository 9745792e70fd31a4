"""The logs of many ranks and array tasks as one stream, each line labelled like `srun --label`.

    for text in job_logs(settings, "1234", follow=True):   # a 2-rank job: "0: ...", "1: ..."
        print(text, end="")

A job's ranks log to `<id>_<rank>_log.out`; a sweep's points (its array tasks) each have their
own. One stream (a single-rank job, or a rank picked with `rank`) is passed through unchanged, as
before; several are read line by line and merged in arrival order (what each file gained since
the last look, every `poll` seconds), each line prefixed with its rank (`0: `), its task (`2: `),
or both (`2.1: `) for a sweep of multi-rank points.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import DeltaJobsError, SpecError
from deltajobs.jobs.logs import LogTail, log_file, read_log_file
from deltajobs.registry.refresh import refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.registry.targets import Target, find_target
from deltajobs.spec.settings import Settings


@dataclass(frozen=True)
class LogStream:
    label: str  # "0", "2" or "2.1"
    row: JobRow
    path: Path


def ranks_of(row: JobRow) -> int:
    """How many ranks log apart: nodes x tasks per node, or 1 where they share one log (an sbatch
    script's own --output)."""
    count = max(1, (row.nodes or 1) * (row.ntasks_per_node or 1))
    return 1 if count > 1 and log_file(row, False, 1) == log_file(row, False, 0) else count


def log_streams(target: Target, err: bool = False, rank: int | None = None, task: int | None = None) -> list[LogStream]:
    """The log files to show: every rank of a job, every task of a sweep (rank 0 of each unless a
    point has several ranks), or the one `rank`/`task` picks. For a single job `task` is its rank."""
    if not target.has_tasks:
        row = target.rows[0]
        if rank is not None and task is not None and rank != task:
            raise SpecError("--rank", f"{rank} and --task {task} disagree; a job's tasks are its ranks: give one")
        pick = rank if rank is not None else task
        return [LogStream(str(r), row, log_file(row, err, r)) for r in _ranks(row, pick)]
    rows = target.rows
    if task is not None:
        rows = [r for r in rows if r.sweep_index == task]
        if not rows:
            raise SpecError("--task", f"{task} is not a task of {target.label}; it has tasks {task_ids(target.rows)}")
    streams = []
    for row in rows:
        index = str(row.sweep_index if row.sweep_index is not None else row.job_id)
        ranks = _ranks(row, rank if rank is not None else (None if ranks_of(row) > 1 else 0))
        for r in ranks:
            label = index if rank is not None or ranks_of(row) == 1 else f"{index}.{r}"
            streams.append(LogStream(label, row, log_file(row, err, r)))
    return streams


def task_ids(rows: list[JobRow]) -> str:
    """`0-3`, or `1, 3` where the ids are not one run (an array job's `--array=1,3`)."""
    ids = sorted(r.sweep_index for r in rows if r.sweep_index is not None)
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ", ".join(str(i) for i in ids)


def _ranks(row: JobRow, pick: int | None) -> list[int]:
    count = ranks_of(row)
    if pick is None:
        return list(range(count))
    if not 0 <= pick < count:
        raise SpecError("--rank", f"{pick} is not a rank of job {row.job_id}; it has ranks 0-{count - 1}")
    return [pick]


def merge_logs(registry: Registry, streams: list[LogStream], follow: bool, poll: float = 1.0) -> Iterator[str]:
    """Labelled lines ("0: text\\n") of `streams`: what they hold now, then (`follow`) what they
    gain, in arrival order, until every job is final and its logs were read to the end."""
    tails = [LogTail(stream.path) for stream in streams]
    rows = list({id(s.row): s.row for s in streams}.values())
    while True:
        if follow:
            refresh(registry, rows)
        final = not follow or all(row.final for row in rows)
        for stream, tail in zip(streams, tails, strict=True):
            for line in tail.new_lines(final=final):
                yield f"{stream.label}: {line}\n"
        if final:
            return
        time.sleep(poll)


def job_logs(
    settings: Settings,
    ident: str,
    *,
    err: bool = False,
    rank: int | None = None,
    task: int | None = None,
    follow: bool = False,
    poll: float = 1.0,
) -> Iterator[str]:
    """The text to print for `deltajobs logs IDENT`: one stream as it is, several labelled and merged."""
    with Registry.open(settings) as registry:
        target = find_target(registry, ident)
        streams = log_streams(target, err, rank, task)
        if len(streams) == 1:
            yield from read_log_file(registry, streams[0].row, streams[0].path, follow, poll)
            return
        if not follow and not any(stream.path.exists() for stream in streams):
            refresh(registry, target.rows)
            states = sorted({row.state for row in target.rows})
            raise DeltaJobsError(f"{target.label} is {'/'.join(states)} and has no logs yet ({streams[0].path.parent})")
        yield from merge_logs(registry, streams, follow, poll)
