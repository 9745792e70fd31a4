"""The SLURM backend: sbatch (through submitit, with the script `spec/render.py` produced), one squeue and
one sacct call to refresh any number of jobs, one scancel to cancel them.

Each submission is tagged (`slurm.new_tag`: its run or sweep directory and a nonce, as --comment):
a busy SLURM is asked again, and a timed-out sbatch that queued its job all the same is found by
its tag, so one submission is one job (see `slurm.sbatch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltajobs.backends.base import ArraySubmission, Backend, Cancelled, StateChanges, Submission
from deltajobs.errors import DeltaJobsError, SlurmError
from deltajobs.slurm import commands as slurm
from deltajobs.slurm import parse as slurm_parse
from deltajobs.slurm.commands import SlurmBusy
from deltajobs.slurm.submitit_private import DeltaSlurmArrayExecutor, DeltaSlurmExecutor, FailedJobError
from deltajobs.spec.render import job_python, render, submitit_folder
from deltajobs.spec.resolve import ResolvedJob

if TYPE_CHECKING:
    from deltajobs.registry.schema import JobRow


class SlurmBackend(Backend):
    name = "slurm"
    needs_account = True
    charges = True
    first_state = "PENDING"
    fresh_environment = True
    compute_nodes = True

    def submit(self, resolved: ResolvedJob, run_dir: Path) -> Submission:
        payload = resolved.payload
        if payload.sbatch_file() is not None:
            return submit_sbatch_file(resolved, run_dir)
        script = render(resolved, run_dir)
        (run_dir / "job.sh").write_text(script)
        folder = submitit_folder(run_dir)
        executor = _executor(DeltaSlurmExecutor, resolved, folder, script, slurm.new_tag(run_dir.name))
        try:
            job = executor.submit(payload.task(run_dir))
        except SlurmBusy:
            raise
        except (SlurmError, FailedJobError, OSError, RuntimeError) as err:
            raise SlurmError(f"sbatch refused the job: {sbatch_error_line(err)}") from None
        return _submission(str(job.job_id), run_dir, folder, run_dir / "job.sh")

    def submit_array(
        self,
        resolved: list[ResolvedJob],
        run_dirs: list[Path],
        sweep_dir: Path,
        max_parallel: int | None,
        calls: list[Any] | None = None,
    ) -> ArraySubmission:
        """ONE sbatch call of the array script: task i unpickles point i's task (or calls[i])."""
        script = render_array(resolved[0], sweep_dir, len(resolved), max_parallel)
        (sweep_dir / "job.sh").write_text(script)
        folder = submitit_folder(sweep_dir)
        executor = _executor(DeltaSlurmArrayExecutor, resolved[0], folder, script, slurm.new_tag(sweep_dir.name))
        calls = calls or [one.payload.task(run_dir) for one, run_dir in zip(resolved, run_dirs, strict=True)]
        try:
            jobs = executor.submit_array(calls)
        except SlurmBusy:
            raise
        except (SlurmError, FailedJobError, OSError, RuntimeError) as err:
            raise SlurmError(f"sbatch refused the sweep: {sbatch_error_line(err)}") from None
        points = [
            _submission(str(job.job_id), run_dir, folder, sweep_dir / "job.sh")
            for job, run_dir in zip(jobs, run_dirs, strict=True)
        ]
        array_id = points[0].job_id.split("_")[0]
        return ArraySubmission(points, array_id, max_parallel, folder / f"{array_id}_%a_0_log.out")

    def refresh(self, rows: list[JobRow]) -> StateChanges:
        """At most one squeue and one sacct call for all the rows that are not final."""
        result = StateChanges()
        active = [r for r in rows if not r.final]
        if not active:
            return result
        ids = [r.job_id for r in active]
        arrays = sorted({job_id.split("_")[0] for job_id in ids if "_" in job_id})
        try:
            queued = slurm.squeue()
            result.calls.append("squeue")
            accounted = slurm.sacct([*ids, *arrays])  # an array's own id: its tasks that never started
            result.calls.append("sacct")
        except SlurmError as err:
            result.warning = f"SLURM is not answering ({err}); showing cached states"
            return result
        unread = slurm_parse.one_line([*queued.warnings, *accounted.warnings])
        result.notes = [unread] if unread else []
        queue = {q.job_id: q for q in queued}
        acct = {a.job_id: a for a in accounted}
        for row in active:
            record = acct.get(row.job_id)
            if record is None and row.job_id not in queue:
                record = unstarted_task(acct, row.job_id)
            change = merge_slurm(row, queue.get(row.job_id), record)
            if change:
                result.changes[row.job_id] = change
        return result

    def cancel(self, rows: list[JobRow]) -> Cancelled:
        slurm.scancel([r.job_id for r in rows])
        return Cancelled()  # SLURM says CANCELLED itself; the next refresh records it

    def undo(self, job_ids: list[str]) -> None:
        with contextlib.suppress(SlurmError):
            slurm.scancel(sorted({j.split("_")[0] for j in job_ids}))  # one scancel for a whole array

    def usage(self, rows: list[JobRow]) -> dict[str, slurm_parse.AcctRecord]:
        """One sacct call for every finished row: what each used, and each attempt."""
        ids = [r.job_id for r in rows if r.final]
        return {a.job_id: a for a in slurm.sacct(ids)} if ids else {}


def submit_sbatch_file(resolved: ResolvedJob, run_dir: Path) -> Submission:
    """An existing sbatch script, as written: deltajobs' needs go on sbatch's command line."""
    import getpass

    from deltajobs.payloads.sbatch import SCRIPT, SbatchPayload

    payload = resolved.payload
    assert isinstance(payload, SbatchPayload)
    tag = slurm.new_tag(run_dir.name)
    options = slurm.with_tag(payload.sbatch_options(run_dir), tag)
    (run_dir / "sbatch.args").write_text(" ".join(options) + "\n")
    try:
        job_id = slurm.sbatch(options, str(run_dir / SCRIPT), tag)
    except SlurmBusy:
        raise
    except SlurmError as err:
        raise SlurmError(f"sbatch refused the job: {sbatch_error_line(err)}") from None
    user = getpass.getuser()
    array = payload.array()
    if array is None:
        log, err_log = payload.log_paths(run_dir, job_id, user)
        return Submission(job_id, SlurmBackend.name, run_dir, log, err_log, run_dir / SCRIPT)
    tasks = []
    for index in array.indices:  # every task from the start: squeue lists each, pending or not
        task_log, task_err = payload.log_paths(run_dir, f"{job_id}_{index}", user)
        tasks.append(Submission(f"{job_id}_{index}", SlurmBackend.name, run_dir, task_log, task_err, run_dir / SCRIPT))
    log, err_log = payload.log_paths(run_dir, f"{job_id}_%a", user)
    return Submission(job_id, SlurmBackend.name, run_dir, log, err_log, run_dir / SCRIPT, tuple(tasks))


def unstarted_task(acct: dict[str, slurm_parse.AcctRecord], job_id: str) -> slurm_parse.AcctRecord | None:
    """An array task that never started and has left squeue (its array cancelled while it waited):
    sacct has no record of its own, only the array's, `1234` or `1234_[2-3%2]`. That record's final
    state, with nothing run and nothing charged; None while it is not final or not found."""
    array, _, task = job_id.partition("_")
    if not task.isdigit():
        return None
    for key, record in acct.items():
        if key != array and not key.startswith(f"{array}_["):
            continue
        if key != array and int(task) not in _task_ids(key[len(array) + 2 : -1]):
            continue
        if record.state in slurm_parse.FINAL_STATES:
            return dataclasses.replace(record, job_id=job_id, elapsed_s=0, attempts=[], start="None")
    return None


def _task_ids(text: str) -> tuple[int, ...]:
    from deltajobs.payloads.sbatch_request import parse_array

    try:
        return parse_array(text).indices
    except DeltaJobsError:
        return ()


def merge_slurm(
    row: JobRow, queued: slurm_parse.QueueRecord | None, acct: slurm_parse.AcctRecord | None
) -> dict[str, Any]:
    """squeue is authoritative while a job is queued or running; sacct after it leaves the queue."""
    change: dict[str, Any] = {}
    if acct is not None:
        change.update(
            state=acct.state,
            started_at=acct.start if acct.start not in ("Unknown", "None") else None,
            ended_at=acct.end if acct.end not in ("Unknown", "None") else None,
            elapsed_s=acct.elapsed_s,
            exit_code=acct.exit_code,
            billing=acct.billing or None,
            su=acct.su if acct.billing else None,
        )
        if change["started_at"] and acct.partition and "," not in acct.partition:
            change["partition"] = acct.partition  # where it ran, of those `--partition a,b` listed
    if queued is not None:
        change.update(state=queued.state, reason=queued.reason)
        if queued.state == "RUNNING":
            change["reason"] = None
            if queued.partition and "," not in queued.partition:
                change["partition"] = queued.partition
    elif acct is None:
        return {}  # left squeue, not yet in sacct: keep the last known state, look again next time
    if change.get("state") == row.state and all(getattr(row, k) == v for k, v in change.items()):
        return {}
    return change


def array_spec(count: int, max_parallel: int | None) -> str:
    """sbatch's --array value: task ids 0..count-1, `%P` to run at most P at once."""
    throttle = f"%{max_parallel}" if max_parallel and max_parallel < count else ""
    return f"0-{count - 1}{throttle}"


def render_array(resolved: ResolvedJob, sweep_dir: Path, count: int, max_parallel: int | None) -> str:
    """The array script. One script serves every point: only the payload's keys vary (train.*, a
    script's parameters), and those travel in each task's pickle, not in the script."""
    return render(resolved, sweep_dir, array=array_spec(count, max_parallel))


def sbatch_error_line(err: BaseException) -> str:
    """sbatch's own error line (`slurm.run` prefixes it with `sbatch failed: `)."""
    lines = [line.strip().removeprefix("sbatch failed: ") for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [err.__class__.__name__])[-1]


def _executor(
    cls: type[DeltaSlurmExecutor], resolved: ResolvedJob, folder: Path, script: str, tag: str
) -> DeltaSlurmExecutor:
    res = resolved.spec.resources
    return cls(
        folder,
        script,
        python=job_python(resolved),
        timeout_min=max(1, res.seconds // 60),
        max_requeues=res.max_requeues,
        tag=tag,
    )


def _submission(job_id: str, run_dir: Path, folder: Path, script: Path) -> Submission:
    return Submission(
        job_id=job_id,
        backend=SlurmBackend.name,
        run_dir=run_dir,
        log_path=folder / f"{job_id}_0_log.out",
        err_path=folder / f"{job_id}_0_log.err",
        script_path=script,
    )
