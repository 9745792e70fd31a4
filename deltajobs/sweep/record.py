"""A sweep's directory and its record: where a sweep and each of its points live
(`sweep_dir_for`, `point_dir`), what was submitted (`SweepSubmission`), and sweep.json beside the
points (`write_record`). Shared by the submit paths (submit.py: a point per array task;
grouped.py: several points per task).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltajobs.backends.base import Submission
from deltajobs.osutil import write_atomic
from deltajobs.spec.settings import Settings


def new_sweep_id() -> str:
    return f"sw-{secrets.token_hex(3)}"


def sweep_dir_for(settings: Settings, name: str, sweep_id: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (settings.runs_path / f"{name}-{stamp}-{sweep_id}").absolute()


def point_dir(sweep_dir: Path, index: int, count: int) -> Path:
    return sweep_dir / f"point-{index:0{max(3, len(str(count - 1)))}d}"


@dataclass(frozen=True)
class SweepSubmission:
    sweep_id: str
    backend: str
    sweep_dir: Path
    array_job_id: str | None
    max_parallel: int | None
    log_pattern: Path
    points: list[Submission] = field(default_factory=list)  # one per array task (a point each, by default)
    groups: list[list[int]] | None = None  # grouped sweeps: the point indexes each task runs
    point_dirs: list[Path] = field(default_factory=list)  # grouped sweeps: each point's run directory

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "sweep_id": self.sweep_id,
            "backend": self.backend,
            "sweep_dir": str(self.sweep_dir),
            "array_job_id": self.array_job_id,
            "max_parallel": self.max_parallel,
            "logs": str(self.log_pattern),
            "points": [{"index": i, **p.to_dict()} for i, p in enumerate(self.points)],
        }
        if self.groups:  # points, each with the task that runs it; the tasks beside them
            pairs = enumerate(zip(self.groups, self.points, strict=True))
            record["tasks"] = [{"task": t, "points": group, **task.to_dict()} for t, (group, task) in pairs]
            record["points"] = [
                {"index": i, "task": t, "job_id": self.points[t].job_id, "run_dir": str(self.point_dirs[i])}
                for t, group in enumerate(self.groups)
                for i in group
            ]
        return record


def write_record(sub: SweepSubmission, params: dict[str, Any]) -> None:
    """sweep.json next to the points: the submission, with each point's parameters beside its job."""
    record = {**sub.to_dict(), **{k: v for k, v in params.items() if k != "points"}}
    for point, values in zip(record["points"], params["points"], strict=True):
        point["params"] = values
    write_atomic(sub.sweep_dir / "sweep.json", json.dumps(record, indent=1) + "\n", durable=True)
