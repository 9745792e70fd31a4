"""The run directories' copy of the registry: each row in a file beside its run, written and read back.

    RUN_DIR/job.json                    the job's registry row: at submission, then at each change of state
    RUN_DIR/array-tasks/N/job.json      task N of an array submitted as one job (they share RUN_DIR)
    SWEEP_DIR/sweep-row.json            the sweep's row: its job, backend, parameters and array job id
    SWEEP_DIR/tasks/task-NNN/job.json   a grouped sweep's task (--per-task, --pack): a run below the sweep

`Registry.add`, `update_many` and `add_sweep` write these (through `record_jobs`/`record_sweep`),
each whole or not at all, so that any host reading one sees a complete record. `scan` reads every
record under the runs directory back (a new registry starts from them: `recorded_rows`; rebuild.py
rebuilds a damaged one). Runs from before job.json are inferred: the job id from submitit's file
names (`<id>_submitted.pkl`), the backend from job.sh (SLURM) or its absence (local), the rest from
spec.yaml; a sweep's row and its points from sweep.json. An sbatch script's run of that age recorded
no job id and is skipped, named.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from deltajobs.errors import DeltaJobsError
from deltajobs.osutil import write_atomic
from deltajobs.registry.schema import JobRow, Restore

RECORD = "job.json"  # a job's row, in its run directory
SWEEP_RECORD = "sweep-row.json"  # a sweep's row, in its sweep directory
SWEEP_FILE = "sweep.json"  # what sweep/submit.py writes: the submission and each point's parameters
PREVIOUS = "previous"  # RUN/previous/JOBID/: the record (and files) of a job whose run was resumed (resume.py)
ARRAY_TASKS = "array-tasks"  # RUN/array-tasks/N/: task N of an array job (an sbatch script's --array)
SKIP = frozenset({"submitit", "code", "tb", "slots", PREVIOUS})  # directories inside a run that hold no runs
MAX_DEPTH = 3  # runs/<run>, runs/<sweep>/point-000, runs/<search>/workers/task-0
_JOB_FIELDS = frozenset(f.name for f in fields(JobRow))
_SUBMISSION_KEYS = frozenset({"sweep_id", "backend", "sweep_dir", "array_job_id", "logs", "points"})


# -- writing the records ---------------------------------------------------------------------------


def write_record(directory: Path, name: str, data: dict[str, Any]) -> None:
    """`data` as JSON in `directory/name`, whole or not at all: a temporary file renamed over the
    old one (atomic within a directory on Lustre too), so a reader sees the old record or the new;
    durable, since `registry rebuild` trusts it over the registry (`deltajobs.osutil.write_atomic`)."""
    write_atomic(directory / name, json.dumps(data, indent=1) + "\n", durable=True)


def _record(directory: str, name: str, data: dict[str, Any], strict: bool) -> None:
    """A record in `directory` if it exists; `strict`: a failed write raises (at submission), else
    it waits for the next change (the registry still has the row)."""
    path = Path(directory)
    if not path.is_dir():
        return
    try:
        write_record(path, name, data)
    except OSError as err:
        if strict:
            raise DeltaJobsError(f"cannot record {path / name} ({err.strerror or err}); nothing was kept") from None


def record_jobs(rows: Iterable[JobRow], strict: bool = False) -> None:
    """Each row in its run directory's job.json, or, for a job whose run was resumed since, in
    RUN/previous/JOBID/job.json (the run's job.json is the newer job's)."""
    for row in rows:
        earlier = Path(row.run_dir) / PREVIOUS / row.job_id
        if row.array_task:
            task = Path(row.run_dir) / ARRAY_TASKS / str(row.sweep_index)
            try:
                if Path(row.run_dir).is_dir():
                    task.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                if strict:
                    raise DeltaJobsError(
                        f"cannot record {task / RECORD} ({err.strerror or err}); nothing was kept"
                    ) from None
            _record(str(task), RECORD, row.to_dict(), strict)
            continue
        _record(str(earlier) if earlier.is_dir() else row.run_dir, RECORD, row.to_dict(), strict)


def record_sweep(row: dict[str, Any], strict: bool = False) -> None:
    _record(row["run_dir"], SWEEP_RECORD, row, strict)


# -- reading them back -----------------------------------------------------------------------------


@dataclass
class Found:
    """What the run directories hold: rows by job id and sweep id, and what could not be read."""

    jobs: dict[str, JobRow] = field(default_factory=dict)
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    inferred: set[str] = field(default_factory=set)  # ids of jobs and sweeps inferred from runs older than job.json
    skipped: list[str] = field(default_factory=list)  # "PATH: why"
    covered: set[str] = field(default_factory=set)  # run directories a sweep.json already accounted for

    def add(self, row: JobRow) -> None:
        """Keep the newer of two records of one job (a run directory copied elsewhere)."""
        known = self.jobs.get(row.job_id)
        if known is None or row.updated_at > known.updated_at:
            self.jobs[row.job_id] = row


def scan(roots: Iterable[Path], infer: bool = False, cluster: Callable[[], str] | None = None) -> Found:
    """Every record under `roots`; with `infer`, rows for runs from before job.json too (their
    cluster is `cluster()`: it is not in spec.yaml)."""
    found = Found()
    for root in roots:
        if root.is_dir():
            _visit(root.absolute(), found, infer, cluster or (lambda: "delta"), 0)
    return found


def recorded_rows(runs: Path) -> Restore:
    """The rows a new registry starts from: the records under `runs` (never raises)."""
    found = scan([runs])
    return list(found.jobs.values()), list(found.sweeps.values())


def _visit(directory: Path, found: Found, infer: bool, cluster: Callable[[], str], depth: int) -> None:
    if str(directory) in found.covered:
        return
    if (directory / SWEEP_RECORD).is_file():  # first: a grouped sweep's tasks are runs below it
        _read_sweep(directory, found)
        infer = False  # recorded since job.json: its runs have records (a grouped sweep's points have none)
    elif (directory / RECORD).is_file() or (directory / ARRAY_TASKS).is_dir():
        _read_job(directory, found)
        return  # a run directory holds no other runs
    elif infer and (directory / SWEEP_FILE).is_file():
        _guarded(directory / SWEEP_FILE, found, lambda: _infer_sweep(directory, found, cluster))
    elif infer and (directory / "spec.yaml").is_file():
        _guarded(directory / "spec.yaml", found, lambda: _infer_run(directory, found, cluster))
        return
    if depth >= MAX_DEPTH:
        return
    try:
        children = sorted(e.path for e in os.scandir(directory) if e.is_dir(follow_symlinks=False))
    except OSError as err:
        found.skipped.append(f"{directory}: {err.strerror or err}")
        return
    for child in children:
        if Path(child).name not in SKIP:
            _visit(Path(child), found, infer, cluster, depth + 1)


def _guarded(path: Path, found: Found, read: Callable[[], None]) -> None:
    """Run `read`; a record that cannot be read is named in `found.skipped`, never raised."""
    try:
        read()
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as err:
        found.skipped.append(f"{path}: {err.__class__.__name__}: {err}")


def _read_job(directory: Path, found: Found) -> None:
    """A run directory's job, and the earlier jobs of a run that was resumed (RUN/previous/*/job.json)."""

    def read(path: Path) -> None:
        data = json.loads(path.read_text())
        row = JobRow(**{k: v for k, v in data.items() if k in _JOB_FIELDS})
        found.add(_moved(row, directory))

    earlier = sorted((directory / PREVIOUS).glob(f"*/{RECORD}")) if (directory / PREVIOUS).is_dir() else []
    tasks = sorted((directory / ARRAY_TASKS).glob(f"*/{RECORD}")) if (directory / ARRAY_TASKS).is_dir() else []
    own = [directory / RECORD] if (directory / RECORD).is_file() else []
    for path in [*own, *earlier, *tasks]:
        _guarded(path, found, functools.partial(read, path))


def _read_sweep(directory: Path, found: Found) -> None:
    def read() -> None:
        row = json.loads((directory / SWEEP_RECORD).read_text())
        row["run_dir"] = str(directory)
        found.sweeps[row["sweep_id"]] = row

    _guarded(directory / SWEEP_RECORD, found, read)


def _moved(row: JobRow, directory: Path) -> JobRow:
    """A row whose run directory was moved (a new runs_dir): its paths follow it."""
    if Path(row.run_dir) == directory:
        return row
    old, new = str(Path(row.run_dir).parent), str(directory.parent)
    for name in ("run_dir", "log_path", "err_path"):
        value = getattr(row, name)
        if value.startswith(old + os.sep):
            setattr(row, name, new + value[len(old) :])
    return row


# -- runs from before job.json ---------------------------------------------------------------------


def _infer_run(directory: Path, found: Found, cluster: Callable[[], str]) -> None:
    """A single run: the job id from submitit's files, the backend from job.sh, the rest from spec.yaml."""
    folder = directory / "submitit"
    pickles = sorted(folder.glob("*_submitted.pkl")) if folder.is_dir() else []
    ids = sorted({p.name.split("_")[0] for p in pickles})
    if len(ids) != 1:
        why = "no job id was recorded (an sbatch script's run?)" if not ids else f"several job ids {ids}"
        found.skipped.append(f"{directory}: {why}")
        return
    from deltajobs import backends

    raw = ids[0]
    backend, job_id = backends.infer(directory, raw)
    row = _spec_row(
        directory,
        backend,
        job_id=job_id,
        cluster=cluster(),
        log_path=str(folder / f"{raw}_0_log.out"),
        err_path=str(folder / f"{raw}_0_log.err"),
        submitted_at=pickles[0].stat().st_mtime,
    )
    found.add(row)
    found.inferred.add(row.job_id)


def _infer_sweep(directory: Path, found: Found, cluster: Callable[[], str]) -> None:
    """A sweep's row and its points' rows from its sweep.json (points with a job.json are read later)."""
    record = json.loads((directory / SWEEP_FILE).read_text())
    created = (directory / SWEEP_FILE).stat().st_mtime
    points = record.get("points") or []
    params = {k: v for k, v in record.items() if k not in _SUBMISSION_KEYS}
    params["points"] = [] if "search" in params else [p.get("params") or {} for p in points]
    names: list[str] = []
    for point in points:
        run_dir = Path(point["run_dir"])
        if (run_dir / RECORD).is_file():
            continue
        found.covered.add(str(run_dir))
        row = _spec_row(
            run_dir,
            record["backend"],
            job_id=str(point["job_id"]),
            cluster=cluster(),
            log_path=point["log"],
            err_path=point["err"],
            submitted_at=created,
            sweep_id=record["sweep_id"],
            sweep_index=point["index"],
        )
        names.append(row.name)
        found.add(row)
        found.inferred.add(row.job_id)
    sweep = {"sweep_id": record["sweep_id"], "job": names[0] if names else directory.name}
    sweep |= {"array_job_id": record.get("array_job_id"), "backend": record["backend"], "created_at": created}
    found.sweeps[record["sweep_id"]] = sweep | {"params": params, "run_dir": str(directory)}
    found.inferred.add(record["sweep_id"])


def _spec_row(run_dir: Path, backend: str, **known: Any) -> JobRow:
    """A row with what spec.yaml says of the job's resources, in the state it had at submission."""
    from deltajobs import backends

    spec = yaml.safe_load((run_dir / "spec.yaml").read_text()) or {}
    res = spec.get("resources") or {}
    gpus = res.get("gpus_per_node")
    return JobRow(
        name=spec.get("name") or run_dir.name,
        backend=backend,
        run_dir=str(run_dir),
        state=backends.get(backend).first_state,
        account=spec.get("account"),
        partition=res.get("partition") if backends.get(backend).charges else backend,
        nodes=res.get("nodes"),
        gpus_per_node=gpus,
        ntasks_per_node=res.get("tasks_per_node") or max(1, gpus or 0),
        cpus_per_task=res.get("cpus_per_task"),
        mem=res.get("mem"),
        time_limit=res.get("time"),
        **known,
    )
