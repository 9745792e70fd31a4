"""What runs inside the job: a picklable call of the packaged trainer, run by submitit.

`TrainJob` is a `submitit.helpers.Checkpointable`. Its own signal handlers only raise a flag that
the training loop polls at every step; the loop then writes a checkpoint at a clean step boundary
and returns "interrupted". On a timeout warning (USR2) the job requeues itself through submitit's
job environment (`scontrol requeue`); on SIGTERM (preemption or scancel) it just exits and SLURM
decides (preempt partitions requeue jobs submitted with --requeue). The next start resumes from
the checkpoint with the same model, optimizer, scheduler, RNG and data order. A full disk or quota
ends the task with the trainer's one-line message and exit status 28 (`deltajobs.injob.diskspace`).

Importing this module must stay cheap: torch is imported inside `__call__` only. submitit pickles
a TrainJob by this module's path (it lived in deltajobs.injob.job before 0.2).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import submitit

from deltajobs.injob import requeue
from deltajobs.injob.job import StopFlag, record_attempt
from deltajobs.injob.ranks import global_rank
from deltajobs.slurm import submitit_private


class TrainJob(submitit.helpers.Checkpointable):
    """Train `spec["train"]` into `run_dir`, resuming from its checkpoint when one exists."""

    def __init__(self, spec: dict[str, Any], run_dir: str, max_requeues: int) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.max_requeues = max_requeues

    @classmethod
    def of(cls, resolved: Any, run_dir: Path) -> TrainJob:
        """The job that trains a resolved job spec into `run_dir`."""
        return cls(resolved.spec.to_dict(), str(run_dir), resolved.spec.resources.max_requeues)

    def __call__(self) -> dict[str, Any]:
        from deltajobs.injob.diskspace import DiskFullError
        from deltajobs.schema import from_dict
        from deltajobs.train.api import run_training
        from deltajobs.train.config import TrainConfig

        run_dir = Path(self.run_dir)
        try:
            restarted = record_attempt(run_dir)
            # SIGUSR2: SLURM's timeout warning (--signal=USR2@grace); SIGTERM: preemption or scancel.
            stop = StopFlag((signal.SIGUSR2, signal.SIGTERM)).install()  # for the rest of this process
            config = from_dict(TrainConfig, self.spec["train"], "train")
            resume = (run_dir / "checkpoint.pt").exists()
            if resume:
                print(f"deltajobs: resuming from {run_dir / 'checkpoint.pt'} (restart {restarted})", flush=True)
            results = run_training(config, run_dir, resume=resume, should_stop=stop)
        except DiskFullError as err:  # one line in the log (rank 0's), and an exit status that says it
            if global_rank() == 0:
                print(f"deltajobs: {err}", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)
        if results.get("status") != "interrupted":
            # SLURM may send the warning up to a minute early, even as the process exits: a late
            # USR2 must not turn a finished run into a job killed by a signal.
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            return results
        self._after_interrupt(stop.signal, restarted)
        return results

    def _after_interrupt(self, signum: int | None, restarted: int) -> None:
        """Stopped at a checkpoint: requeue (USR2 on SLURM) or end; `deltajobs.injob.requeue` decides."""
        requeue.after_stop_signal(
            signum,
            restarted,
            self.max_requeues,
            Path(self.run_dir),
            on_slurm=submitit_private.running_on_slurm(),
            requeue=submitit_private.requeue,  # scontrol requeue $SLURM_JOB_ID
        )
