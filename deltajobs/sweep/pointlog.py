"""A sweep point's log: its task's log when the task ran one point; its part of the task's log when
the task ran several one after another (from its `deltajobs: point N (...) starts` line to the next
point's, every attempt's); its own `point.out`/`point.err` when it ran packed beside others."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltajobs import backends
from deltajobs.errors import NotFoundError, SpecError
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import Settings
from deltajobs.sweep.tasks import MARK, PACKED_ERR, PACKED_OUT


@dataclass(frozen=True)
class PointLog:
    text: str
    source: Path  # the file it comes from
    note: str = ""  # where the point's lines are, in words, when they are part of a task's log


def point_log(settings: Settings, sweep_id: str, index: int, err: bool = False) -> PointLog:
    with Registry.open(settings) as registry:
        sweep = registry.sweep(sweep_id)
        rows = registry.query(sweep_id=sweep_id)
    groups: list[list[int]] = sweep["params"].get("tasks") or [[i] for i in range(len(rows))]
    task = next((t for t, group in enumerate(groups) if index in group), None)
    if task is None:
        count = sum(len(g) for g in groups)
        raise SpecError("--point", f"{index}; {sweep_id} has points 0 to {count - 1}")
    row = next((r for r in rows if r.sweep_index == task), None)
    if row is None:
        raise NotFoundError(f"point {index}'s task is not in the registry")
    log = backends.get(row.backend).log_file(row, err=err)
    if len(groups[task]) == 1:
        return PointLog(_read(log), log)
    if sweep["params"].get("pack", 1) > 1:
        own = _point_dir(Path(sweep["run_dir"]), index, sum(len(g) for g in groups)) / (
            PACKED_ERR if err else PACKED_OUT
        )
        return PointLog(_read(own), own, f"point {index} ran packed in task {row.job_id}; its own log: {own}")
    part = slice_point(_read(log), index)
    return PointLog(part, log, f"point {index}'s part of task {row.job_id}'s log {log}")


def slice_point(text: str, index: int) -> str:
    """The lines of point `index` in a task's log: from each of its start lines to the next point's."""
    mine, keep = [], False
    start = f"{MARK}{index} ("
    for line in text.splitlines(keepends=True):
        if line.startswith(MARK) and " starts in " in line:
            keep = line.startswith(start)
        if keep:
            mine.append(line)
    return "".join(mine)


def _point_dir(sweep_dir: Path, index: int, count: int) -> Path:
    from deltajobs.sweep.record import point_dir

    return point_dir(sweep_dir, index, count)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
