"""Starting a job: the budget guard, then ONE submission. `deltajobs submit` and `deltajobs resume`
parse, call these and print what they return.

Two guards, in this order: where the backend starts a fresh environment, the job's python must run
deltajobs' task (`backends.probe.require_interpreter`, cached per set-up); the budget guard refuses
a job whose worst case, as billed, exceeds the cap or the balance (where the backend charges; `yes`
waives it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltajobs import backends
from deltajobs.backends.base import Backend, Submission
from deltajobs.backends.probe import require_interpreter
from deltajobs.charge.budget import check_budget
from deltajobs.jobs.lifecycle import submit_job
from deltajobs.jobs.pipeline import check_parents
from deltajobs.jobs.resume import check_sets, resumable, resume_job
from deltajobs.registry.schema import JobRow
from deltajobs.spec.resolve import Overrides, ResolvedJob, resolve_job
from deltajobs.spec.settings import Settings


@dataclass(frozen=True)
class Started:
    """A submitted job, and its worst case in SU as the budget guard priced it (None: no charge)."""

    submission: Submission
    estimate_su: float | None


def start_job(resolved: ResolvedJob, settings: Settings, run_dir: Path, backend: Backend, yes: bool) -> Started:
    """`submit`: the guards, then the job into `run_dir`."""
    check_parents(resolved, settings, backend)
    if backend.fresh_environment:
        require_interpreter(resolved)
    estimate = guard(resolved, settings, yes) if backend.charges else None
    return Started(submit_job(resolved, settings, run_dir, backend), estimate)


def guard(resolved: ResolvedJob, settings: Settings, yes: bool) -> float:
    """The budget guard of one job, or of every task of an array job (each task is charged)."""
    array = resolved.payload.array()
    if array is None:
        return check_budget(resolved, settings, yes)
    return check_budget(resolved, settings, yes, count=array.tasks, nouns=("task", "array"))


@dataclass(frozen=True)
class Resume:
    """A run that may be resumed, its spec layered with the new flags and validated; not submitted."""

    resolved: ResolvedJob
    previous: JobRow  # the run's latest job (final)
    checkpoint: Path | None  # what the new job continues from; None: it starts over (--restart)
    backend: Backend  # the one the run ran on

    def submit(self, settings: Settings, yes: bool) -> Started:
        """The guards, then the new job into the run directory (the old job's files set aside)."""
        if self.backend.fresh_environment:
            require_interpreter(self.resolved)
        estimate = guard(self.resolved, settings, yes) if self.backend.charges else None
        over = self.checkpoint is None
        return Started(resume_job(self.resolved, settings, self.previous, self.backend, over=over), estimate)


def prepare_resume(settings: Settings, run: str, overrides: Overrides, restart: bool) -> Resume:
    """The run RUN names (a job id, `last` or a run directory), on the backend and cluster it ran on,
    its spec layered with `overrides`; one line (SpecError) if it may not be resumed."""
    check_sets(overrides.sets)
    found = resumable(settings, run, restart)
    previous = found.row
    backend = backends.get(previous.backend)
    resolved = resolve_job(found.spec(), overrides, settings, previous.cluster, require_account=backend.needs_account)
    return Resume(resolved, previous, found.checkpoint, backend)
