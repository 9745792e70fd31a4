"""The local backend: each job is a detached submitit LocalExecutor job on this machine, known by the
pid and start time of its controller (`local-<pid>-<start>`, `local_process.py`: never signalled
unless it is still that process, told by /proc or, without it, by `ps`); its state comes from that
process and submitit's result pickle.
A local sweep runs one such job per point, at most `slots` training at once (`slots.py`).
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltajobs.backends.base import ArraySubmission, Backend, Cancelled, StateChanges, Submission
from deltajobs.backends.local_process import CONTROLLER, CannotTell, Pinned, children, is_controller, look, start_of
from deltajobs.backends.local_wait import WAITING_FILE, AfterParents
from deltajobs.backends.slots import SlotJob, started
from deltajobs.injob.diskspace import EXIT_DISK_FULL, read_marker
from deltajobs.slurm.submitit_private import DetachedLocalExecutor
from deltajobs.spec.render import submitit_folder
from deltajobs.spec.resolve import ResolvedJob

if TYPE_CHECKING:
    from deltajobs.registry.schema import JobRow

PREFIX = "local-"  # job ids are local-<pid>-<start> of the submitit controller (local-<pid> before)
CANCELLED_FILE = "CANCELLED"  # in the run directory of a job cancelled by deltajobs
TERM_WAIT_S = 5  # how long a cancelled task gets to write its checkpoint before SIGKILL


class LocalBackend(Backend):
    name = "local"
    needs_account = False
    charges = False
    first_state = "RUNNING"
    any_dependency = False  # it waits for --after's local jobs (local_wait), nothing else

    def partition(self, resolved: ResolvedJob) -> str:
        return "local"

    def submit(self, resolved: ResolvedJob, run_dir: Path) -> Submission:
        folder = submitit_folder(run_dir)
        executor = DetachedLocalExecutor(folder=folder, max_num_timeout=resolved.spec.resources.max_requeues)
        parents = resolved.spec.schedule.parents
        seconds = resolved.spec.resources.seconds + sum(_walltime(Path(d)) for d in parents.values())  # + the wait
        executor.update_parameters(timeout_min=max(1, seconds // 60))
        task = resolved.payload.task(run_dir)
        job = executor.submit(AfterParents(task, parents, str(run_dir), parent_state) if parents else task)
        return _submission(str(job.job_id), run_dir, folder)

    def submit_array(
        self,
        resolved: list[ResolvedJob],
        run_dirs: list[Path],
        sweep_dir: Path,
        max_parallel: int | None,
        calls: list[Any] | None = None,
    ) -> ArraySubmission:
        """One detached job per point; each waits for one of `max_parallel` slots (default: as many
        points as this machine's CPUs hold at cpus_per_task each) before it trains. `calls` (a
        search's workers) all run at once: there are as many as may run in parallel."""
        res = resolved[0].spec.resources
        slots = len(calls) if calls else max_parallel or max(1, (os.cpu_count() or 1) // res.cpus_per_task)
        folder = submitit_folder(sweep_dir)
        waves = math.ceil(len(run_dirs) / slots)  # a point's walltime includes its wait for a slot
        executor = DetachedLocalExecutor(folder=folder, max_num_timeout=res.max_requeues)
        waited = sum(_walltime(Path(d)) for d in resolved[0].spec.schedule.parents.values())  # and for its parents
        executor.update_parameters(timeout_min=max(1, res.seconds // 60) * waves + waited // 60)
        points: list[Submission] = []
        try:
            for index, (one, run_dir) in enumerate(zip(resolved, run_dirs, strict=True)):
                call = (
                    calls[index]
                    if calls
                    else SlotJob(one.payload.task(run_dir), str(run_dir), str(folder / "slots"), slots, index)
                )
                parents = one.spec.schedule.parents
                if parents:  # a sweep after --after's jobs: each point waits for them, then for a slot
                    call = AfterParents(call, parents, str(run_dir), parent_state)
                points.append(_submission(str(executor.submit(call).job_id), run_dir, folder))
        except BaseException:
            self.undo([p.job_id for p in points])
            raise
        return ArraySubmission(points, None, slots, folder / "%j_0_log.out")

    def refresh(self, rows: list[JobRow]) -> StateChanges:
        result = StateChanges()
        for row in rows:
            if not row.final:
                change = local_state(row)
                if change:
                    result.changes[row.job_id] = change
        return result

    def cancel(self, rows: list[JobRow]) -> Cancelled:
        """Stop each row's job if its controller is still that process; a row whose controller is
        gone (its pid now someone else's, or no one's) is left alone and gets the state it ended in;
        one whose process cannot be told apart from a stranger's is left alone and said so."""
        result = Cancelled()
        for row in rows:
            controller = Pinned(pid_of(row.job_id))
            try:
                if _is_job(row):  # checked after pinning: the process checked is the one signalled
                    (Path(row.run_dir) / CANCELLED_FILE).touch()
                    _stop(controller, gently=True)
                    result.changes[row.job_id] = {"state": "CANCELLED"}
                else:
                    result.changes[row.job_id] = local_state(row)
                    result.gone.append(row.job_id)
            except CannotTell as err:
                result.refused[row.job_id] = _cannot_tell(row, err)
            finally:
                controller.close()
        return result

    def undo(self, job_ids: list[str]) -> None:
        """Kill jobs just submitted whose bookkeeping failed. Each controller is this process's own
        child, started a moment ago: known by its start, or (an id without one) by its parent."""
        for job_id in job_ids:
            pid, start = parse_id(job_id)
            controller = Pinned(pid)
            try:
                if _our_controller(pid, start):
                    _stop(controller, gently=False)
            except CannotTell:  # neither /proc nor ps: our own child, unreaped, cannot be anyone else
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            finally:
                controller.close()

    def waiting(self, row: JobRow) -> bool:
        return row.state == "RUNNING" and not started(Path(row.run_dir))


def parse_id(job_id: str) -> tuple[int, str | None]:
    """(pid, start) of a local job's controller (`local_process.Seen.start`); no start in an id from
    before it was kept."""
    pid, _, start = job_id.removeprefix(PREFIX).partition("-")
    return int(pid), start or None


def pid_of(job_id: str) -> int:
    return parse_id(job_id)[0]


def _is_job(row: JobRow) -> bool:
    """Whether the row's controller is still running as that very process (`local_process.py`);
    CannotTell where that cannot be known."""
    pid, start = parse_id(row.job_id)
    return is_controller(pid, start, Path(row.log_path).parent, row.submitted_at)


def _our_controller(pid: int, start: str | None) -> bool:
    """Whether process `pid` is the controller this process just started, with that start if known."""
    if start is not None:
        return is_controller(pid, start)
    seen = look(pid)
    return seen is not None and not seen.zombie and seen.parent == os.getpid() and seen.runs_controller(None)


def _cannot_tell(row: JobRow, err: CannotTell) -> str:
    pid = pid_of(row.job_id)
    folder = Path(row.log_path).parent
    return (
        f"cannot tell whether process {pid} is still this job ({err}); if "
        f"`ps -o command= -p {pid}` shows `{CONTROLLER} {folder}`, stop it with `kill {pid}`"
    )


def local_state(row: JobRow) -> dict[str, Any]:
    """A local job's state from its controller process, its result pickle and the CANCELLED mark."""
    pid = pid_of(row.job_id)
    result = Path(row.log_path).with_name(f"{pid}_0_result.pkl")
    now = time.time()
    if (Path(row.run_dir) / CANCELLED_FILE).exists():
        state = "CANCELLED"
    elif result.exists():
        state = "COMPLETED" if _result_tag(result) == "success" else "FAILED"
    elif _running(row):
        reason = _waiting_for(row)
        if reason is not None:
            return {"state": "PENDING", "reason": reason} if (row.state, row.reason) != ("PENDING", reason) else {}
        return {"elapsed_s": int(now - row.submitted_at)} if row.state == "RUNNING" else {"state": "RUNNING"}
    else:
        state = "FAILED"  # died without a result: killed, or crashed before submitit could write one
    end = result.stat().st_mtime if result.exists() else now
    code = "0:0" if state == "COMPLETED" else "1:0"
    if state == "FAILED" and read_marker(Path(row.run_dir)) is not None:  # as sacct would say it
        code = f"{EXIT_DISK_FULL}:0"
    return {"state": state, "elapsed_s": int(end - row.submitted_at), "exit_code": code}


def _waiting_for(row: JobRow) -> str | None:
    """The pending reason of a job that waits for its parents (`local_wait`), else None."""
    try:
        return (Path(row.run_dir) / WAITING_FILE).read_text().split("\n", 1)[0] or None
    except OSError:
        return None


def _walltime(run_dir: Path, depth: int = 0) -> int:
    """How long a parent may take to end: its walltime and its own parents', up the chain (from
    each spec.yaml; 0 where one cannot be read)."""
    import yaml

    from deltajobs.clusters.units import parse_walltime

    try:
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text()) or {}
        own = parse_walltime(str(spec["resources"]["time"]))
    except Exception:  # noqa: BLE001 - unreadable or malformed: no allowance for it
        return 0
    parents = (spec.get("schedule") or {}).get("parents") or {}
    if depth > 50 or not isinstance(parents, dict):
        return own
    return own + sum(_walltime(Path(str(d)), depth + 1) for d in parents.values())


def parent_state(job_id: str, run_dir: str) -> str:
    """A local parent's state as `status` would give it (COMPLETED, FAILED, CANCELLED, RUNNING,
    PENDING), asked from inside its child's job (`local_wait.AfterParents`)."""
    if not job_id.startswith(PREFIX):
        return "RUNNING"  # not a local job: nothing here can tell (`jobs.pipeline.check_parents` refuses it)
    pid, _ = parse_id(job_id)
    folder = submitit_folder(Path(run_dir))
    if not (folder / f"{pid}_0_log.out").exists() and (Path(run_dir).parent / "submitit").is_dir():
        folder = Path(run_dir).parent / "submitit"  # a sweep's point: its sweep's folder (`submit_array`)
    parent = _Parent(job_id, run_dir, str(folder / f"{pid}_0_log.out"))
    return str(local_state(parent).get("state", "RUNNING"))  # type: ignore[arg-type]  # what it reads of a row


@dataclass(frozen=True)
class _Parent:
    """What `local_state` reads of a registry row (a job does not open the registry)."""

    job_id: str
    run_dir: str
    log_path: str
    submitted_at: float = 0.0
    state: str = "RUNNING"
    reason: str | None = None


def _submission(pid: str, run_dir: Path, folder: Path) -> Submission:
    start = start_of(int(pid))  # the controller is our child, not reaped yet: it is there
    return Submission(
        job_id=f"{PREFIX}{pid}" if start is None else f"{PREFIX}{pid}-{start}",
        backend=LocalBackend.name,
        run_dir=run_dir,
        log_path=folder / f"{pid}_0_log.out",
        err_path=folder / f"{pid}_0_log.err",
        script_path=None,
    )


def _running(row: JobRow) -> bool:
    """Whether the row's job still runs: its controller is that very process; where that cannot be
    told (no /proc and no ps), all that can be known is that some process has its pid."""
    try:
        return _is_job(row)
    except CannotTell:
        pass
    try:
        os.kill(pid_of(row.job_id), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _result_tag(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return str(pickle.load(f)[0])
    except Exception:  # noqa: BLE001 - a half-written or foreign pickle counts as failure
        return "error"


def _stop(controller: Pinned, gently: bool) -> None:
    """Kill a local job: its tasks first get SIGINT to checkpoint (`gently`), then everything SIGKILL.
    Every process is pinned (`local_process.Pinned`): one that ended meanwhile passes on no signal."""
    tasks = children(controller)
    try:
        if not gently:
            for target in [*tasks, controller]:
                target.send(signal.SIGKILL)
            return
        for task in tasks:
            task.send(signal.SIGINT)
        controller.send(signal.SIGKILL)
        deadline = time.time() + TERM_WAIT_S
        while time.time() < deadline and any(t.alive() for t in tasks):
            time.sleep(0.1)
        for task in tasks:
            task.send(signal.SIGKILL)
    finally:
        for task in tasks:
            task.close()
