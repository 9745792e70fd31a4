"""The requeue decision, in one place (stdlib only): when a stopped task asks SLURM to start its job
again, which task asks, how, and when it may not.

Two ways in, one limit (`resources.max_requeues`, counted below):

- the packaged trainer (TrainJob, a search worker): on SLURM's timeout warning (SIGUSR2) it
  checkpoints and rank 0 requeues the job itself (`scontrol requeue` through submitit);
  SIGTERM (preemption, scancel) just ends the task and SLURM decides (`--requeue` jobs come back);
- a user's program (script, command, function) exits 85 (`EXIT_REQUEUE`): rank 0 leaves a request
  file (`$DELTAJOBS_REQUEUE_FILE`) and the batch script requeues the job once srun returns
  (templates/job.sh.j2, rendered from `batch_script` below). Outside SLURM the wrapper starts the
  program again in the same process.

A task that holds several points (`sweep.tasks.PointsTask`) requeues once for all of them:
`task_requeues` says when, `task_may_requeue` whether the limit allows it, `batch_script_requeues`
whether the batch script already will.

The limit holds for every way of requeueing a SLURM job: a run's own count (`restarted`, its starts
in attempts.json) and SLURM's count of the job's restarts (`job_restarts`: SLURM_RESTART_COUNT, the
same in every task) are both below `max_requeues`, or the job is not requeued. The two differ where a
task holds several points: a point first started after its task was requeued has 0 starts of its own.
A program may also requeue its job itself (Lightning's SLURMEnvironment runs `scontrol requeue` on
the walltime warning): such a requeue is an attempt like ours (the wrapper records every start), and
the attempt the limit makes the last tells SLURM so (`last_attempt`: `Requeue=0`), which then
refuses the program's own request; the program goes on, to its end or to the time limit.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from deltajobs.injob.ranks import global_rank
from deltajobs.injob.warning import is_warning

EXIT_REQUEUE = 85  # the exit status of a program that asks for a requeue
REQUEST_ENV = "DELTAJOBS_REQUEUE_FILE"  # set by the batch script: the file that asks it to requeue
REQUEST_FILE = "requeue"  # ... in the job's submitit folder, with -$SLURM_JOB_ID appended
WANTED_FILE = "requeue-wanted"  # a packed point asked for a requeue; its task does it, once
STOPPED = -1  # a task's sys.exit status when it stops for a requeue, preemption or cancel


def sbatch_requeue(max_requeues: int) -> bool:
    """`#SBATCH --requeue` (SLURM may requeue a preempted job) where any requeue is allowed."""
    return max_requeues > 0


def batch_script(requeue_file: Path | None, max_requeues: int) -> dict[str, Any]:
    """What templates/job.sh.j2 needs to requeue: `requeue_file` None where the payload requeues
    itself (the trainer through submitit; an sbatch file is the user's own script)."""
    return {
        "requeue": sbatch_requeue(max_requeues),
        "requeue_file": requeue_file,
        "requeue_env": REQUEST_ENV,
        "exit_requeue": EXIT_REQUEUE,
    }


def within_limit(restarted: int, max_requeues: int) -> bool:
    """Whether a run started `restarted` times before may be requeued once more."""
    return restarted < max_requeues


def job_restarts() -> int:
    """How often SLURM started this job again: SLURM_RESTART_COUNT, which SLURM sets in every task
    of a requeued job (unset on the first start, and outside SLURM: 0)."""
    value = os.environ.get("SLURM_RESTART_COUNT", "")
    return int(value) if value.isdigit() else 0


def requeues_so_far(restarted: int) -> int:
    """What counts against `max_requeues` when this SLURM job asks to be requeued: the run's own
    restarts or the job's, whichever is more."""
    return max(restarted, job_restarts())


def last_attempt(restarted: int, max_requeues: int) -> bool:
    """At the start of an attempt of a SLURM job that the limit makes the last one (and that could
    be requeued: `max_requeues` > 0), rank 0 tells SLURM not to requeue the job again
    (`scontrol update JobId=ID Requeue=0`, what `sbatch --no-requeue` sets); True where it did.
    Best effort: where scontrol fails the log says so, and the job's own requests stay possible."""
    job = os.environ.get("SLURM_JOB_ID")
    if not os.environ.get(REQUEST_ENV):  # not a program's batch job (`--local`, even inside salloc)
        return False
    if not job or max_requeues <= 0 or within_limit(requeues_so_far(restarted), max_requeues) or global_rank() != 0:
        return False
    if os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    from deltajobs.errors import SlurmError
    from deltajobs.slurm.commands import run

    try:
        run(["scontrol", "update", f"JobId={job}", "Requeue=0"])
    except SlurmError as err:
        print(f"deltajobs: could not turn requeueing off at resources.max_requeues={max_requeues}: {err}", flush=True)
        return False
    print(
        f"deltajobs: this is the last attempt resources.max_requeues={max_requeues} allows: "
        "SLURM will not requeue the job again (Requeue=0)",
        flush=True,
    )
    return True


def task_may_requeue(max_requeues: int) -> bool:
    """Whether a task of several points may requeue its job once more (SLURM's count of the job's
    restarts below `max_requeues`); past it, it says so in the log."""
    restarted = job_restarts()
    if within_limit(restarted, max_requeues):
        return True
    print(
        f"deltajobs: not requeued: resources.max_requeues={max_requeues} reached after {restarted} requeue(s); "
        "the unfinished points keep their checkpoints",
        flush=True,
    )
    return False


def ask(who: str, how: str, again: str, restarted: int, max_requeues: int) -> None:
    """The program asked for a requeue (`how`: exit 85, sys.exit(85)). On SLURM rank 0 writes the
    request the batch script acts on and this process exits; on this machine it returns, and the
    caller starts the next attempt (`again` says so). Past `max_requeues` it raises."""
    request = os.environ.get(REQUEST_ENV)
    if request is not None:  # SLURM requeues the job: its own restarts count too
        restarted = requeues_so_far(restarted)
    if not within_limit(restarted, max_requeues):
        raise RuntimeError(
            f"{who} asked for a requeue ({how}) after {restarted} requeue(s): "
            f"resources.max_requeues={max_requeues} reached"
        )
    if request is None:
        print(f"deltajobs: {who} asked for a requeue ({how}): {again}", flush=True)
        return
    if global_rank() == 0:
        Path(request).write_text(f"{time.time()}\n")
        print(f"deltajobs: {who} asked for a requeue ({how}): requeueing the job", flush=True)
    sys.exit(STOPPED)


def after_stop_signal(
    signum: int | None,
    restarted: int,
    max_requeues: int,
    run_dir: Path,
    *,
    on_slurm: bool,
    requeue: Callable[[int], None],
) -> NoReturn:
    """The trainer stopped at a checkpoint on `signum`. SIGTERM (or any rank but 0): the task ends
    and SLURM decides. The warning (SIGUSR2; SIGURG where SLURM sends that) on rank 0:
    `requeue(requeues left)` (scontrol requeue), then end; on the local backend, or past
    `max_requeues`, a RuntimeError that says how to go on."""
    if global_rank() != 0 or not is_warning(signum):
        sys.exit(STOPPED)  # SIGTERM: preempted (SLURM requeues --requeue jobs) or cancelled
    if not on_slurm:
        from deltajobs.injob.diskspace import resume_hint

        again = resume_hint(run_dir) or "continue with `deltajobs train JOB --resume --run-dir ...`"
        raise RuntimeError(f"timed out on the local backend; {again}")
    restarted = requeues_so_far(restarted)
    if not within_limit(restarted, max_requeues):
        raise RuntimeError(f"timed out after {restarted} requeue(s): resources.max_requeues={max_requeues} reached")
    requeue(max_requeues - restarted)
    sys.exit(STOPPED)


def batch_script_requeues() -> bool:
    """A program of this job asked the batch script to requeue it (the request file exists)."""
    request = os.environ.get(REQUEST_ENV)
    return bool(request) and Path(request or "").exists()


def task_requeues(point_asked: bool, signum: int | None, on_slurm: bool) -> bool:
    """Whether a task of several points requeues itself once its points stopped: one of them asked
    (a trainer's timeout warning, packed), or the task got the timeout warning (SIGUSR2) itself.
    Only on SLURM; never where the batch script requeues already (`batch_script_requeues`)."""
    return (point_asked or is_warning(signum)) and on_slurm and not batch_script_requeues()
