"""The one interface every backend implements (submitit's executors are the model): submit a job or
an array of them, bring their states up to date, cancel them, find their logs. Code above this
package never asks which backend it holds: it calls the one `deltajobs.backends.get` gave it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from deltajobs.slurm.parse import AcctRecord
from deltajobs.spec.resolve import ResolvedJob

if TYPE_CHECKING:
    from deltajobs.registry.schema import JobRow


@dataclass(frozen=True)
class Submission:
    """One submitted job: its id, where it runs and where its logs go."""

    job_id: str
    backend: str
    run_dir: Path
    log_path: Path
    err_path: Path
    script_path: Path | None
    # An array submitted as one job (an sbatch script's --array): each task, `<id>_<task>`, with its
    # own logs; the job's own logs are then their pattern (`%a`: the task).
    tasks: tuple[Submission, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "backend": self.backend,
            "run_dir": str(self.run_dir),
            "log": str(self.log_path),
            "err": str(self.err_path),
            "script": str(self.script_path) if self.script_path else None,
        }
        if self.tasks:
            data["tasks"] = [{"job_id": t.job_id, "log": str(t.log_path), "err": str(t.err_path)} for t in self.tasks]
        return data


@dataclass(frozen=True)
class ArraySubmission:
    """The points of a sweep, submitted together: one SLURM job array, or one local job each."""

    points: list[Submission]
    array_job_id: str | None
    max_parallel: int | None
    log_pattern: Path


@dataclass
class StateChanges:
    """What a refresh learnt: registry column changes per job id, and a warning if it could not ask."""

    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    warning: str | None = None
    notes: list[str] = field(default_factory=list)  # what the scheduler printed that could not be read
    calls: list[str] = field(default_factory=list)  # which commands ran (for tests and benchmarks)


@dataclass
class Cancelled:
    """What a cancel did: registry changes per job id, and the rows it did not stop. Every other row
    it was given was stopped (on SLURM: scancel took it)."""

    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)  # had ended unseen: the state they ended in is in `changes`
    refused: dict[str, str] = field(default_factory=dict)  # left alone, may still run: why, and what to do


class Backend(ABC):
    """Where jobs run. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    needs_account: ClassVar[bool]  # jobs must name an account to charge
    charges: ClassVar[bool]  # jobs spend Service Units: the budget guard applies
    first_state: ClassVar[str]  # a job's state right after submission
    fresh_environment: ClassVar[bool] = False  # jobs set their software up anew (modules, venv): check it
    compute_nodes: ClassVar[bool] = False  # jobs run on a cluster's compute nodes, not on this machine
    # schedule.dependency is the scheduler's to honour (any kind); False: the backend waits only for
    # --after's parents that it ran itself (schedule.parents)
    any_dependency: ClassVar[bool] = True

    @abstractmethod
    def submit(self, resolved: ResolvedJob, run_dir: Path) -> Submission:
        """Submit one job training into `run_dir` (which exists and holds spec.yaml)."""

    @abstractmethod
    def submit_array(
        self,
        resolved: list[ResolvedJob],
        run_dirs: list[Path],
        sweep_dir: Path,
        max_parallel: int | None,
        calls: list[Any] | None = None,
    ) -> ArraySubmission:
        """Submit one job per point; at most `max_parallel` run at once. Each runs `calls[i]` if given
        (a search's workers), else trains `resolved[i]` into `run_dirs[i]`."""

    @abstractmethod
    def refresh(self, rows: list[JobRow]) -> StateChanges:
        """The changes to rows that are not final (never raises for an unreachable scheduler: warns)."""

    @abstractmethod
    def cancel(self, rows: list[JobRow]) -> Cancelled:
        """Cancel rows that are not final: what was stopped, what had ended, what was left alone."""

    @abstractmethod
    def undo(self, job_ids: list[str]) -> None:
        """Best effort: remove jobs just submitted whose bookkeeping failed."""

    def partition(self, resolved: ResolvedJob) -> str:
        """What the registry and `status` show as the job's partition until it starts: the list
        it may run on (the SLURM backend then records the one sacct says it ran on)."""
        return ",".join(p.name for p in resolved.partitions)

    def usage(self, rows: list[JobRow]) -> dict[str, AcctRecord]:
        """What finished rows used, per job id, where the backend keeps accounts."""
        return {}

    def waiting(self, row: JobRow) -> bool:
        """Whether a running row is only waiting for a slot (a local sweep's --max-parallel)."""
        return False

    def log_file(self, row: JobRow, err: bool = False, task: int = 0) -> Path:
        """A task's stdout (or stderr) log: submitit names them `<id>_<task>_log.out|err`."""
        path = Path(row.err_path if err else row.log_path)
        return path.with_name(path.name.replace("_0_log.", f"_{task}_log.")) if task else path
