"""What an id on the command line names: one job, or the jobs of a sweep (by sweep id or array id).

target = find_target(registry, "last")        # the latest job
target = find_target(registry, "a1b2c3")      # a sweep: its points, in order
target = find_target(registry, "1234")        # a job, the array job 1234 of a sweep, or an array job's tasks
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import NotFoundError
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry


@dataclass(frozen=True)
class Target:
    """The jobs an id names and the directory that holds their outputs (a run or a sweep directory)."""

    label: str  # "job 1234", "sweep a1b2c3" or "array job 1234"
    rows: list[JobRow]
    directory: Path
    sweep_id: str | None = None
    array_job_id: str | None = None  # an array submitted as one job (an sbatch script's --array)

    @property
    def is_sweep(self) -> bool:
        return self.sweep_id is not None

    @property
    def has_tasks(self) -> bool:
        """A sweep's points or an array job's tasks: one row per array task, `sweep_index` its id."""
        return self.is_sweep or self.array_job_id is not None


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
        points = [r for r in registry.query() if r.job_id.startswith(f"{ident}_")]
        if not points:
            raise NotFoundError(
                f"{ident} is not a job, a sweep or an array job in the registry ({registry.path}); "
                "`deltajobs status --all` lists jobs"
            ) from None
        if points[0].sweep_id is None:  # an array submitted as one job: its tasks share a run directory
            tasks = sorted(points, key=lambda r: (r.sweep_index is None, r.sweep_index or 0, r.job_id))
            return Target(f"array job {ident}", tasks, Path(tasks[0].run_dir), array_job_id=ident)
        sweep_id = points[0].sweep_id
        sweep = registry.sweep(sweep_id)
    rows = registry.query(sweep_id=sweep_id)
    return Target(f"sweep {sweep_id}", rows, Path(sweep["run_dir"]), sweep_id)
