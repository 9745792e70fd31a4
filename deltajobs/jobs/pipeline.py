"""Jobs that pass results on: a child submitted with `--after ID` is told its parents' run
directories (`spec.parents`), waits for them on every backend, and, where a parent failed so that
it can never start, is named with that parent (`blocked_by`) and cleared by `cancel --never-start`
(`never_starting`).
"""

from __future__ import annotations

from pathlib import Path

from deltajobs.backends.base import Backend
from deltajobs.clusters.directives import dependency_ids
from deltajobs.errors import NotFoundError, SpecError
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.registry.targets import find_target
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings

# Pending reasons of a job whose dependency can never be met (SLURM's; the local backend says the same).
NEVER = "DependencyNeverSatisfied"


def parent_dirs(settings: Settings, after: str) -> tuple[dict[str, str], list[str]]:
    """The run directory of each `--after` job deltajobs knows (id -> directory, in order), and
    the ids it does not (a job submitted with plain sbatch: waited for, but no directory)."""
    ids = [job_id.strip() for job_id in after.split(",") if job_id.strip()]
    known: dict[str, str] = {}
    unknown: list[str] = []
    with Registry.open(settings) as registry:
        for job_id in ids:
            try:  # a job, or an array job's id: its tasks' run directory, or its sweep's
                known[job_id] = str(find_target(registry, job_id).directory)
            except NotFoundError:
                unknown.append(job_id)
    return known, unknown


def check_parents(resolved: ResolvedJob, settings: Settings, backend: Backend) -> None:
    """A child waits only for jobs of its own backend: SLURM cannot wait for a job on this machine,
    and a backend that honours no dependency of its own waits only for its jobs named by --after."""
    parents = resolved.spec.schedule.parents
    dependency = resolved.spec.schedule.dependency
    if not backend.any_dependency and dependency and dependency != "afterok:" + ":".join(parents):
        if any(not item.startswith("afterok:") for item in dependency.split(",")):
            raise SpecError(
                "--dependency",
                f"{dependency!r} is the scheduler's; a {backend.name} job waits only for --after ID[,ID...]",
            )
        named = ", ".join(job_id for job_id in dependency_ids(dependency) if job_id not in parents)
        raise SpecError("--after", f"{named}: not a {backend.name} job deltajobs ran; it waits only for those")
    if not parents:
        return
    with Registry.open(settings) as registry:
        for job_id in parents:
            try:
                row = registry.get(job_id)
            except NotFoundError:
                continue  # its row was forgotten since; SLURM still knows the job
            if row.backend != backend.name:
                raise SpecError(
                    "--after",
                    f"job {job_id} is a {row.backend} job; a {backend.name} job can wait only for {backend.name} jobs",
                )


def parents_of(row: JobRow) -> list[str]:
    """The jobs a row waits for (its spec's schedule.parents and dependency ids), from its run
    directory's spec.yaml; none where it cannot be read."""
    import yaml

    try:
        spec = yaml.safe_load((_spec_path(row)).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    schedule = spec.get("schedule") or {}
    ids = list(schedule.get("parents") or {})
    ids += [i for i in dependency_ids(str(schedule.get("dependency") or "")) if i not in ids]
    return ids


def blocked_by(registry: Registry, row: JobRow) -> str | None:
    """For a job that can never start: which parent ended how (`parent 1234 FAILED`), else None."""
    if row.state != "PENDING" or row.reason != NEVER:
        return None
    ended = []
    for job_id in parents_of(row):
        try:
            parent = registry.get(job_id)
        except NotFoundError:
            continue
        if parent.final and parent.state != "COMPLETED":
            ended.append(f"{job_id} {parent.state}")
    if not ended:
        return None
    return ("parent " if len(ended) == 1 else "parents ") + ", ".join(ended)


def never_starting(rows: list[JobRow]) -> list[JobRow]:
    """The rows that wait for a dependency that can never be met."""
    return [row for row in rows if row.state == "PENDING" and row.reason == NEVER]


def descendants(rows: list[JobRow], roots: list[JobRow]) -> list[JobRow]:
    """The waiting rows that wait, through any chain of --after, for one of `roots` (a job that
    will never start: its children never will either)."""
    gone = {row.job_id for row in roots}
    waiting = [row for row in rows if row.state == "PENDING" and row.job_id not in gone]
    found: list[JobRow] = []
    grew = True
    while grew:
        grew = False
        for row in waiting:
            if row.job_id not in gone and gone & set(parents_of(row)):
                gone.add(row.job_id)
                found.append(row)
                grew = True
    return found


def _spec_path(row: JobRow) -> Path:
    return Path(row.run_dir) / "spec.yaml"
