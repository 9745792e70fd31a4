"""What runs inside the job: a picklable call of the packaged trainer, run by submitit.

`TrainJob` is a `submitit.helpers.Checkpointable`. Its own signal handlers only raise a flag that
the training loop polls at every step; the loop then writes a checkpoint at a clean step boundary
and returns "interrupted". On a timeout warning (USR2) the job requeues itself through submitit's
job environment (`scontrol requeue`); on SIGTERM (preemption or scancel) it just exits and SLURM
decides (preempt partitions requeue jobs submitted with --requeue). The next start resumes from
the checkpoint with the same model, optimizer, scheduler, RNG and data order. A full disk or quota
ends the task with the trainer's one-line message and exit status 28 (`deltajobs.injob.diskspace`).

Importing this module must stay cheap: torch is imported inside `__call__` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import submitit

from deltajobs.backends import submitit_private
from deltajobs.injob import diskspace

# What a run directory says of its starts lives in progress.py, which status imports without submitit.
from deltajobs.injob.progress import ATTEMPTS_FILE as ATTEMPTS_FILE
from deltajobs.injob.progress import attempt_nodes as attempt_nodes
from deltajobs.injob.progress import nodes_text as nodes_text
from deltajobs.injob.progress import restarts as restarts


class StopFlag:
    """A `should_stop` for the training loop: turns True on one of `signals`, and the loop then
    checkpoints at its next step. Used as a context manager, it installs its handlers and puts the
    previous ones back on exit. A second Ctrl-C (SIGINT) aborts at once."""

    def __init__(self, signals: tuple[signal.Signals, ...], stream: Any = None) -> None:
        self.signals = signals
        self.stream = stream  # where to say it (default: stdout, which is the job's log)
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signal is not None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signal = signum
        again = " (Ctrl-C again to abort)" if signal.SIGINT in self.signals else ""
        name = signal.Signals(signum).name
        print(f"deltajobs: caught {name}: checkpointing at the next step{again}", file=self.stream, flush=True)

    def install(self) -> StopFlag:
        self.previous = {sig: signal.signal(sig, self.handler) for sig in self.signals}
        return self

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def record_attempt(run_dir: Path) -> int:
    """Count this start in the run directory (rank 0 only); returns the number of restarts so far."""
    path = run_dir / ATTEMPTS_FILE
    data = json.loads(path.read_text()) if path.exists() else {"starts": []}
    if global_rank() == 0:
        data["starts"].append(
            {
                "time": time.time(),
                "job_id": os.environ.get("SLURM_JOB_ID"),
                "host": os.uname().nodename,
                "nodes": os.environ.get("SLURM_JOB_NODELIST") or os.uname().nodename,
            }
        )
        replace_text(path, json.dumps(data, indent=1), again=diskspace.resume_hint(run_dir) or "resubmit")
    return len(data["starts"]) - 1


def replace_text(path: Path, text: str, kept: str = "", again: str = "resubmit") -> None:
    """Write `path` whole through PATH.tmp, or not at all: on any failure the tmp file is removed
    and the old `path` stays; a full disk or quota raises DiskFullError naming `path`."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, Exception) and diskspace.is_disk_full(err):
            raise diskspace.DiskFullError(path, kept, again) from err
        raise


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
        if global_rank() != 0 or signum != signal.SIGUSR2:
            sys.exit(-1)  # SIGTERM: preempted (SLURM requeues --requeue jobs) or cancelled
        if not submitit_private.running_on_slurm():
            from deltajobs.injob.diskspace import resume_hint

            again = resume_hint(Path(self.run_dir)) or "continue with `deltajobs train JOB --resume --run-dir ...`"
            raise RuntimeError(f"timed out on the local backend; {again}")
        if restarted >= self.max_requeues:
            raise RuntimeError(
                f"timed out after {restarted} requeue(s): resources.max_requeues={self.max_requeues} reached"
            )
        submitit_private.requeue(self.max_requeues - restarted)  # scontrol requeue $SLURM_JOB_ID
        sys.exit(-1)
