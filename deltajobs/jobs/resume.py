"""Continue a stopped run on the queue (`deltajobs resume RUN`): submit its run directory again, to
the backend it ran on, from its spec.yaml, so that the new job finds its checkpoint (TrainJob:
RUN/checkpoint.pt; a user's program: RUN/checkpoints, its DELTAJOBS_CHECKPOINT_DIR; an sbatch
script: whatever it keeps, as written).

    found = resumable(settings, "1234")                  # refuses active, completed, sweep, no checkpoint
    sub = resume_job(resolved, settings, found.row, backend)

A run directory holds one job at a time: the earlier job's own files move to RUN/previous/JOBID/
(its job.json, so that `registry rebuild` keeps its row and charge; its attempts, results, notes;
a copy of its spec.yaml), and its registry row stays: each attempt's charge is real.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deltajobs import backends
from deltajobs.backends.base import Backend, Submission
from deltajobs.errors import DeltaJobsError, NotFoundError, SpecError
from deltajobs.injob.diskspace import DISK_FULL_FILE, DiskFullError, is_disk_full
from deltajobs.injob.progress import ATTEMPTS_FILE
from deltajobs.jobs.lifecycle import job_row
from deltajobs.registry.records import RECORD
from deltajobs.registry.refresh import refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings

PREVIOUS_DIR = "previous"  # RUN/previous/JOBID/: the files of a job whose run was resumed
# The files of a run directory that describe one job, not the run (backends/local.py: CANCELLED).
JOB_FILES = (RECORD, ATTEMPTS_FILE, "results.json", DISK_FULL_FILE, "CANCELLED")
RUN_FILES = ("metrics.jsonl",)  # the run's, unless it starts over (--restart): then the old job's too
CHECKPOINTS = ("checkpoint.pt", "checkpoints")  # the trainer's file; DELTAJOBS_CHECKPOINT_DIR
RESUMABLE_SETS = ("resources.", "schedule.", "environment.", "account")  # what --set may change


def checkpoint_in(run_dir: Path) -> Path | None:
    """What a resumed job continues from: the trainer's checkpoint.pt, or a non-empty checkpoints/."""
    for name in CHECKPOINTS:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            return path
    return None


def run_rows(registry: Registry, ident: str) -> list[JobRow]:
    """The jobs of the run RUN names (a job id, `last`, or a run directory), oldest first."""
    from deltajobs.registry.targets import find_target

    path = Path(ident).expanduser()
    if os.sep in ident or path.is_dir():
        run_dir = path.absolute()
        if not (run_dir / "spec.yaml").is_file():
            raise NotFoundError(f"{run_dir} is not a run directory (it holds no spec.yaml)")
    else:
        target = find_target(registry, ident)
        if target.is_sweep:
            raise SpecError("", f"{ident} is {target.label}: {sweep_advice(registry, target.sweep_id or '')}")
        run_dir = Path(target.rows[0].run_dir)
    every = registry.query()
    rows = [r for r in every if Path(r.run_dir) == run_dir]
    if not rows:  # `cd` into a run under a symlinked runs directory, `resume .`: the path as resolved
        real = run_dir.resolve()
        rows = [r for r in every if Path(r.run_dir).resolve() == real]
    if not rows:
        raise NotFoundError(
            f"no job in the registry ({registry.path}) ran in {run_dir}; `deltajobs registry rebuild` reads them back"
        )
    if any(r.array_task for r in rows):
        array = rows[0].job_id.split("_")[0]
        raise SpecError(
            "",
            f"{ident} is array job {array}'s: resume takes single jobs; `deltajobs submit` of its script runs it again",
        )
    return sorted(rows, key=lambda r: (r.submitted_at, r.job_id))


def sweep_advice(registry: Registry, sweep_id: str) -> str:
    """What continues a sweep's work: `sweep resume` for a search's workers; a grid's points have none."""
    if "search" in registry.sweep(sweep_id)["params"]:
        return f"resume takes single jobs; `deltajobs sweep resume {sweep_id}` starts the search's workers again"
    return (
        "resume takes single jobs, and a grid sweep's points are not resumed one by one "
        f"(`deltajobs sweep status {sweep_id}` shows them; `deltajobs submit RUN_DIR/spec.yaml` runs one anew)"
    )


@dataclass(frozen=True)
class Resumable:
    """A run that may be resumed: its latest job (final) and what the next one continues from."""

    row: JobRow
    checkpoint: Path | None

    @property
    def run_dir(self) -> Path:
        return Path(self.row.run_dir)

    def spec(self) -> dict[str, Any]:
        data = yaml.safe_load((self.run_dir / "spec.yaml").read_text())
        if not isinstance(data, dict):
            raise SpecError("spec.yaml", f"{self.run_dir / 'spec.yaml'} holds no job spec")
        return data


def resumable(settings: Settings, ident: str, restart: bool = False) -> Resumable:
    """The run RUN names, if it may be resumed: its latest job is final, did not complete, is not a
    sweep's, and the run holds a checkpoint (or `restart`: it starts over). Else one line (SpecError)."""
    with Registry.open(settings) as registry:
        rows = run_rows(registry, ident)
        latest = rows[-1]
        refresh(registry, [latest])
        if latest.sweep_id is not None:
            advice = sweep_advice(registry, latest.sweep_id)
            raise SpecError("", f"job {latest.job_id} is a point of sweep {latest.sweep_id}: {advice}")
    resumed = ident != latest.job_id and ident in {r.job_id for r in rows}
    name = f"job {ident} was resumed as {latest.job_id}, which" if resumed else f"job {latest.job_id}"
    if not latest.final:
        raise SpecError("", f"{name} is still {latest.state}; `deltajobs cancel {latest.job_id}` first")
    if latest.state == "COMPLETED":
        raise SpecError("", f"{name} COMPLETED: nothing to resume (`deltajobs results {latest.job_id}`)")
    checkpoint = checkpoint_in(Path(latest.run_dir))
    if checkpoint is None and not restart:
        raise SpecError(
            "",
            f"{latest.run_dir} holds no checkpoint (checkpoint.pt, or files in checkpoints/): job {latest.job_id} "
            "would start over; pass --restart to run it again from the start",
        )
    if backends.get(latest.backend).charges and requeued(latest.job_id):  # a scheduler that requeues
        raise SpecError(
            "", f"job {latest.job_id} is queued again (requeued by SLURM); `deltajobs cancel {latest.job_id}` first"
        )
    return Resumable(latest, checkpoint)


def requeued(job_id: str) -> bool:
    """Whether squeue shows `job_id` pending or running again: a row recorded as final (PREEMPTED,
    NODE_FAIL, TIMEOUT) that SLURM requeued under the same id, which refresh() no longer asks about.
    False where squeue cannot answer (slurm.still_queued)."""
    from deltajobs.slurm import commands as slurm

    return bool(slurm.still_queued([job_id]))


def resume_job(
    resolved: ResolvedJob, settings: Settings, previous: JobRow, backend: Backend, over: bool = False
) -> Submission:
    """Submit the run of `previous` (final) again into its run directory, its files set aside first;
    a new row for the new job. On any failure the run directory is as it was and no row is added."""
    run_dir = Path(previous.run_dir)
    with Registry.open(settings) as registry:
        aside = set_aside(run_dir, previous.job_id, over)
        try:
            try:
                (run_dir / "spec.yaml").write_text(yaml.safe_dump(resolved.spec.to_dict(), sort_keys=False))
            except OSError as err:
                raise write_error(run_dir / "spec.yaml", previous.job_id, err) from err
            submission = backend.submit(resolved, run_dir)
        except BaseException:
            put_back(run_dir, aside)
            raise
        try:
            registry.add(job_row(resolved, submission, backend))
        except BaseException:
            backend.undo([submission.job_id])
            put_back(run_dir, aside)
            raise
    return submission


def set_aside(run_dir: Path, job_id: str, over: bool = False) -> Path:
    """Move the job's own files to RUN/previous/JOBID/ (spec.yaml: a copy; with `over`, a run that
    starts over, its metrics.jsonl too). Its creation is the lock: a second `resume` of the same
    job at the same time fails here."""
    aside = run_dir / PREVIOUS_DIR / job_id
    try:
        aside.parent.mkdir(exist_ok=True)
        aside.mkdir()
    except FileExistsError:
        raise SpecError("", f"job {job_id} is being resumed already ({aside} exists)") from None
    except OSError as err:
        _remove_empty(aside.parent)
        raise write_error(aside, job_id, err) from err
    target = aside / "spec.yaml"
    try:
        shutil.copy2(run_dir / "spec.yaml", target)
        for name in JOB_FILES + (RUN_FILES if over else ()):
            if (run_dir / name).exists():
                target = aside / name
                os.replace(run_dir / name, target)
    except OSError as err:
        _undo_aside(run_dir, aside)
        raise write_error(target, job_id, err) from err
    return aside


def write_error(path: Path, job_id: str, err: OSError) -> DeltaJobsError:
    """One line for a write of `resume` that failed (the run directory is put back as it was): a
    full disk or quota is a DiskFullError (exit 28), any other OSError a DeltaJobsError."""
    kept = "the run directory is as it was"
    if is_disk_full(err):
        return DiskFullError(path, kept=kept, again=f"`deltajobs resume {job_id}` again")
    return DeltaJobsError(f"cannot write {path}: {err.strerror or err}; {kept}")


def _undo_aside(run_dir: Path, aside: Path) -> None:
    """Undo a `set_aside` that failed part way: the copy of spec.yaml gone, what was moved back,
    the lock (RUN/previous/JOBID/) removed. Renames within a directory need no space."""
    with contextlib.suppress(OSError):
        (aside / "spec.yaml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        for entry in list(aside.iterdir()):
            with contextlib.suppress(OSError):
                os.replace(entry, run_dir / entry.name)
    _remove_empty(aside)
    _remove_empty(aside.parent)


def _remove_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()  # only if empty


def put_back(run_dir: Path, aside: Path) -> None:
    """Undo `set_aside`: the files back where they were, the new job's record gone."""
    (run_dir / RECORD).unlink(missing_ok=True)
    for entry in aside.iterdir():
        os.replace(entry, run_dir / entry.name)
    aside.rmdir()
    with contextlib.suppress(OSError):
        aside.parent.rmdir()  # only if empty: this was the first resume


def resume_chain(row: JobRow) -> tuple[str | None, str | None]:
    """(the job this one resumes, the job that resumed it), from RUN/previous/ and the run's job.json;
    (None, None) for a run that was never resumed (one failed listdir: cheap for many rows)."""
    previous = os.path.join(row.run_dir, PREVIOUS_DIR)
    if not os.path.isdir(previous):  # most runs: one stat, no Path objects (status --json of 10,000 rows)
        return None, None
    try:
        earlier = sorted(Path(previous).iterdir(), key=_submitted_at)
    except OSError:
        return None, None
    chain = [p.name for p in earlier] + [_recorded_id(Path(row.run_dir))]
    if row.job_id not in chain:
        return None, None
    at = chain.index(row.job_id)
    before = chain[at - 1] if at > 0 else None
    after = chain[at + 1] if at + 1 < len(chain) and chain[at + 1] else None
    return before, after


def resume_links(row: JobRow) -> str:
    """`resumes 1234`, `resumed by 1240`, both, or "" (what `status` and `results` show)."""
    before, after = resume_chain(row)
    return ", ".join([*([f"resumes {before}"] if before else []), *([f"resumed by {after}"] if after else [])])


def _submitted_at(aside: Path) -> float:
    try:
        return float(json.loads((aside / RECORD).read_text())["submitted_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return aside.stat().st_mtime


def _recorded_id(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / RECORD).read_text())["job_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_sets(sets: list[str]) -> None:
    """--set on resume changes where and how long the job runs, never what it runs (the checkpoint
    was written by that): resources.*, schedule.*, environment.*, account."""
    for text in sets:
        key = text.split("=", 1)[0].strip()
        if not key.startswith(RESUMABLE_SETS[:3]) and key != RESUMABLE_SETS[3]:
            raise SpecError(
                "--set",
                f"{key!r} cannot change on resume (the checkpoint was written with it); choose keys under "
                "resources., schedule., environment., or account; a changed job is a new run (`deltajobs submit`)",
            )
