"""What an id on the command line names: one job, or the jobs of a sweep (by sweep id or array id).

target = find_target(registry, "last")        # the latest job
target = find_target(registry, "a1b2c3")      # a sweep: its points, in order
target = find_target(registry, "1234")        # a job, or the array job 1234 of a sweep
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import NotFoundError
from deltajobs.registry.store import JobRow, Registry


@dataclass(frozen=True)
class Target:
    """The jobs an id names and the directory that holds their outputs (a run or a sweep directory)."""

    label: str  # "job 1234" or "sweep a1b2c3"
    rows: list[JobRow]
    directory: Path
    sweep_id: str | None = None

    @property
    def is_sweep(self) -> bool:
        return self.sweep_id is not None


def find_target(registry: Registry, ident: str) -> Target:
    """A job id (or `last`), a sweep id, or a sweep's array job id; NotFoundError names all three."""
    try:
        row = registry.get(ident)
    except NotFoundError:
        pass
    else:
        return Target(f"job {row.job_id}", [row], Path(row.run_dir))
    sweep_id = ident
    try:
        sweep = registry.sweep(ident)
    except NotFoundError:
        points = [r for r in registry.query() if r.sweep_id and r.job_id.startswith(f"{ident}_")]
        if not points or points[0].sweep_id is None:
            raise NotFoundError(
                f"{ident} is not a job, a sweep or an array job in the registry ({registry.path}); "
                "`deltajobs status --all` lists jobs"
            ) from None
        sweep_id = points[0].sweep_id
        sweep = registry.sweep(sweep_id)
    rows = registry.query(sweep_id=sweep_id)
    return Target(f"sweep {sweep_id}", rows, Path(sweep["run_dir"]), sweep_id)
