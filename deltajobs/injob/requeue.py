"""The requeue decision, in one place (stdlib only): when a stopped task asks SLURM to start its job
again, which task asks, how, and when it may not.

Two ways in, one limit (`resources.max_requeues`, counted by RUN_DIR/attempts.json):

- the packaged trainer (TrainJob, a search worker): on SLURM's timeout warning (SIGUSR2) it
  checkpoints and rank 0 requeues the job itself (`scontrol requeue` through submitit);
  SIGTERM (preemption, scancel) just ends the task and SLURM decides (`--requeue` jobs come back);
- a user's program (script, command, function) exits 85 (`EXIT_REQUEUE`): rank 0 leaves a request
  file (`$DELTAJOBS_REQUEUE_FILE`) and the batch script requeues the job once srun returns
  (templates/job.sh.j2, rendered from `batch_script` below). Outside SLURM the wrapper starts the
  program again in the same process.

A task that holds several points (`sweep.tasks.PointsTask`) requeues once for all of them:
`task_requeues` says when, `batch_script_requeues` whether the batch script already will.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from deltajobs.injob.ranks import global_rank

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


def ask(who: str, how: str, again: str, restarted: int, max_requeues: int) -> None:
    """The program asked for a requeue (`how`: exit 85, sys.exit(85)). On SLURM rank 0 writes the
    request the batch script acts on and this process exits; on this machine it returns, and the
    caller starts the next attempt (`again` says so). Past `max_requeues` it raises."""
    if not within_limit(restarted, max_requeues):
        raise RuntimeError(
            f"{who} asked for a requeue ({how}) after {restarted} requeue(s): "
            f"resources.max_requeues={max_requeues} reached"
        )
    request = os.environ.get(REQUEST_ENV)
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
    and SLURM decides. SIGUSR2 on rank 0: `requeue(requeues left)` (scontrol requeue), then end;
    on the local backend, or past `max_requeues`, a RuntimeError that says how to go on."""
    if global_rank() != 0 or signum != signal.SIGUSR2:
        sys.exit(STOPPED)  # SIGTERM: preempted (SLURM requeues --requeue jobs) or cancelled
    if not on_slurm:
        from deltajobs.injob.diskspace import resume_hint

        again = resume_hint(run_dir) or "continue with `deltajobs train JOB --resume --run-dir ...`"
        raise RuntimeError(f"timed out on the local backend; {again}")
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
    return (point_asked or signum == signal.SIGUSR2) and on_slurm and not batch_script_requeues()
