"""Live state of submitted jobs: refresh from squeue + sacct (one call each) or local processes,
cancel, and read logs and results. Final states are cached in the registry and never re-queried.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltajobs import slurm
from deltajobs.charge_advice import Advice, advise
from deltajobs.cluster import load_profile
from deltajobs.errors import DeltaJobsError, NotFoundError, SlurmError, SpecError
from deltajobs.registry import JobRow, Registry
from deltajobs.units import format_duration

# Pending reasons in words (squeue's %r).
REASONS = {
    "Priority": "waiting behind higher-priority jobs",
    "Resources": "waiting for GPUs/nodes to free up",
    "BeginTime": "held until its begin time (a requeued job waits about 2 minutes)",
    "Dependency": "waiting for a job it depends on",
    "DependencyNeverSatisfied": "its dependency can never be satisfied: cancel it",
    "QOSGrpBillingMinutes": "the account's balance is too low: see `deltajobs accounts`",
    "AssocGrpBillingMinutes": "the account's balance is too low: see `deltajobs accounts`",
    "MaxGRESPerAccount": "the per-user/project GPU limit of the partition is reached",
    "QOSMaxGRESPerUser": "your GPU limit on this partition is reached",
    "AssocGrpGRES": "the account's GPU limit is reached",
    "QOSMaxJobsPerUserLimit": "your limit of running jobs is reached",
    "PartitionTimeLimit": "the walltime exceeds the partition's limit",
    "ReqNodeNotAvail": "the requested nodes are down or reserved",
    "JobHeldUser": "held by you: `scontrol release JOBID`",
    "JobHeldAdmin": "held by an administrator",
    "launch failed requeued held": "launch failed and the job is held: cancel and resubmit",
    "None": "",
}

# Advice for final states that need it.
STATE_ADVICE = {
    "OUT_OF_MEMORY": "ran out of memory: raise --mem (sacct's MaxRSS shows the peak) or lower train.batch_size",
    "TIMEOUT": "hit its walltime: raise --time, or keep resources.max_requeues > 0 to checkpoint and requeue",
    "NODE_FAIL": "a node failed: the job is requeued when resources.max_requeues > 0, else resubmit it",
    "PREEMPTED": "was preempted: jobs on -preempt partitions resume from their checkpoint when requeued",
    "FAILED": "failed: `deltajobs logs JOBID --err` shows the traceback",
}


def reason_words(reason: str | None) -> str:
    if not reason or reason == "None":
        return ""
    return REASONS.get(reason, reason)


@dataclass
class Refresh:
    rows: list[JobRow]
    warning: str | None = None
    calls: list[str] = field(default_factory=list)  # which SLURM commands ran (for tests/benchmarks)


def refresh(registry: Registry, rows: list[JobRow]) -> Refresh:
    """Bring the non-final rows up to date; at most one squeue and one sacct call for all of them."""
    result = Refresh(rows=rows)
    changes: dict[str, dict[str, Any]] = {}
    active_slurm = [r for r in rows if r.backend == "slurm" and not r.final]
    if active_slurm:
        try:
            queue = {q.job_id: q for q in slurm.squeue()}
            result.calls.append("squeue")
            acct = {a.job_id: a for a in slurm.sacct([r.job_id for r in active_slurm])}
            result.calls.append("sacct")
        except SlurmError as err:
            result.warning = f"SLURM is not answering ({err}); showing cached states"
        else:
            for row in active_slurm:
                change = merge_slurm(row, queue.get(row.job_id), acct.get(row.job_id))
                if change:
                    changes[row.job_id] = change
    for row in rows:
        if row.backend == "local" and not row.final:
            change = local_state(row)
            if change:
                changes[row.job_id] = change
    registry.update_many(changes)
    for row in rows:
        for key, value in changes.get(row.job_id, {}).items():
            setattr(row, key, value)
    return result


def merge_slurm(row: JobRow, queued: slurm.QueueRecord | None, acct: slurm.AcctRecord | None) -> dict[str, Any]:
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
    if queued is not None:
        change.update(state=queued.state, reason=queued.reason)
        if queued.state == "RUNNING":
            change["reason"] = None
    elif acct is None:
        return {}  # left squeue, not yet in sacct: keep the last known state, look again next time
    if change.get("state") == row.state and all(getattr(row, k) == v for k, v in change.items()):
        return {}
    return change


# -- the local backend ---------------------------------------------------------------------------


def local_pid(job_id: str) -> int:
    return int(job_id.split("-")[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie or a recycled pid is not our job
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def local_state(row: JobRow) -> dict[str, Any]:
    pid = local_pid(row.job_id)
    result = Path(row.log_path).with_name(f"{pid}_0_result.pkl")
    cancelled = Path(row.run_dir) / "CANCELLED"
    now = time.time()
    if cancelled.exists():
        state = "CANCELLED"
    elif result.exists():
        state = "COMPLETED" if _result_tag(result) == "success" else "FAILED"
    elif _alive(pid):
        return {"elapsed_s": int(now - row.submitted_at)} if row.state == "RUNNING" else {"state": "RUNNING"}
    else:
        state = "FAILED"  # died without a result: killed, or crashed before submitit could write one
    end = result.stat().st_mtime if result.exists() else now
    return {
        "state": state,
        "elapsed_s": int(end - row.submitted_at),
        "exit_code": "0:0" if state == "COMPLETED" else "1:0",
    }


def _result_tag(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return str(pickle.load(f)[0])
    except Exception:  # noqa: BLE001 - a half-written or foreign pickle counts as failure
        return "error"


def _local_children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(entry.name))
    return children


def cancel_local(row: JobRow) -> None:
    pid = local_pid(row.job_id)
    (Path(row.run_dir) / "CANCELLED").touch()
    tasks = _local_children(pid)
    for target, sig in [(t, signal.SIGINT) for t in tasks] + [(pid, signal.SIGKILL)]:
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(t) for t in tasks):
        time.sleep(0.1)
    for task in tasks:
        try:
            os.kill(task, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cancel_backend(backend: str, job_ids: list[str]) -> None:
    if backend == "slurm":
        slurm.scancel(job_ids)
        return
    for job_id in job_ids:
        pid = local_pid(job_id)
        for target in [*_local_children(pid), pid]:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cancel(registry: Registry, rows: list[JobRow]) -> list[str]:
    """Cancel the rows that are not final; returns the ids cancelled (one scancel for all SLURM ones)."""
    active = [r for r in rows if not r.final]
    slurm_ids = [r.job_id for r in active if r.backend == "slurm"]
    if slurm_ids:
        slurm.scancel(slurm_ids)
    for row in active:
        if row.backend == "local":
            cancel_local(row)
    registry.update_many({r.job_id: {"state": "CANCELLED"} for r in active if r.backend == "local"})
    return [r.job_id for r in active]


# -- usage of finished jobs -----------------------------------------------------------------------


def usage(rows: list[JobRow]) -> dict[str, slurm.AcctRecord]:
    """sacct's record of every finished SLURM row (what it used, each attempt): one call for all."""
    ids = [r.job_id for r in rows if r.backend == "slurm" and r.final]
    return {a.job_id: a for a in slurm.sacct(ids)} if ids else {}


def right_sizing(row: JobRow, record: slurm.AcctRecord | None) -> list[Advice]:
    """Advice comparing what a finished job reserved with what it used (none without its record)."""
    if record is None:
        return []
    try:
        partition = load_profile(row.cluster).partition(record.partition)
    except SpecError:  # a partition the profile does not know: nothing to price against
        return []
    return advise(record, partition, tasks_per_node=row.ntasks_per_node)


def attempts_text(record: slurm.AcctRecord) -> str:
    """`4 attempts (17s REQUEUED, 25s REQUEUED, 25s REQUEUED, 26s COMPLETED)`: each one is charged."""
    runs = ", ".join(f"{format_duration(a.elapsed_s)} {a.state}" for a in record.attempts)
    count = len(record.attempts)
    return f"{count} attempt{'s' if count != 1 else ''} ({runs})"


# -- logs and results ----------------------------------------------------------------------------


def log_file(row: JobRow, err: bool = False, task: int = 0) -> Path:
    path = Path(row.err_path if err else row.log_path)
    return path.with_name(path.name.replace("_0_log.", f"_{task}_log.")) if task else path


def results(row: JobRow) -> dict[str, Any]:
    path = Path(row.run_dir) / "results.json"
    if not path.exists():
        hint = "it has not finished" if not row.final else f"it ended {row.state} without results"
        raise NotFoundError(f"job {row.job_id} has no results.json yet ({hint}); see `deltajobs logs {row.job_id}`")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DeltaJobsError(f"{path} is not valid JSON") from None


class LogTail:
    """The lines a job's log gained since the last look, without submitit's bookkeeping lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position = 0
        self.partial = b""

    def new_lines(self, final: bool = False) -> list[str]:
        """Complete new lines (and, once the job is `final`, an unfinished last one)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.position)
                chunk = f.read()
                self.position = f.tell()
        except OSError:
            return []
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = b"" if final else lines.pop()
        text = [line.decode(errors="replace").rstrip("\r") for line in lines]
        return [line for line in text if line.strip() and not line.startswith("submitit ")]
