"""A job's starts and stops, inside the job: `record_attempt` counts each start in the run
directory's attempts.json (rank 0 writes it, every rank gets the same count), and `StopFlag` turns
a signal into a flag that a loop polls, so that it checkpoints at a clean step boundary. Used by
every payload's task (the packaged trainer's `deltajobs.payloads.trainer_job.TrainJob`, a command's
`CommandJob`, a Python function, sweep points and search workers). Imports neither submitit nor
torch.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from deltajobs.injob import diskspace, provenance, requeue

# What a run directory says of its starts lives in progress.py, which status imports without submitit.
from deltajobs.injob.progress import ATTEMPTS_FILE
from deltajobs.injob.ranks import global_rank


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


def record_attempt(
    run_dir: Path, command: list[str] | None = None, python: str | None = None, env: dict[str, str] | None = None
) -> int:
    """Count this start in the run directory's attempts.json (rank 0 writes it); returns the number
    of restarts before it: DELTAJOBS_RESTART_COUNT, the same on every rank. Rank 0 also records
    what the attempt runs with in RUN_DIR/env, in a thread (`provenance.start`: `command` is the
    program's argv, `python` the interpreter whose packages count, default this one, `env` the
    job's own environment.env). Rank 0 appends while
    the others read, in no order: each counts the starts of the other attempts, so its own attempt's
    entry, written yet or not, never counts (`attempt_key`)."""
    path = run_dir / ATTEMPTS_FILE
    key = attempt_key(run_dir)
    data = json.loads(path.read_text()) if path.exists() else {"starts": []}
    before = sum(1 for start in data["starts"] if start.get("attempt") != key)
    if global_rank() == 0:
        data["starts"].append(
            {
                "time": time.time(),
                "job_id": os.environ.get("SLURM_JOB_ID"),
                "host": os.uname().nodename,
                "nodes": os.environ.get("SLURM_JOB_NODELIST") or os.uname().nodename,
                "attempt": key,
            }
        )
        again = diskspace.resume_hint(run_dir) or "resubmit"
        diskspace.replace_text(path, json.dumps(data, indent=1), again=again)
        provenance.start(run_dir, command, python, env)
    return before


_STARTS_HERE: dict[str, int] = {}  # run directory: the starts this process recorded there


def attempt_key(run_dir: Path) -> str:
    """What every rank of one start of `run_dir` shares, and no other start: on SLURM the job and
    SLURM's own count of its restarts (SLURM_RESTART_COUNT, set in every task), elsewhere this job
    (submitit's local job id) or process; and how often this process started the run already (a
    program started again in the same process: exit 85 outside SLURM, a search trial run again)."""
    here = str(Path(run_dir).resolve())
    again = _STARTS_HERE.get(here, 0)
    _STARTS_HERE[here] = again + 1
    from deltajobs.slurm.submitit_private import running_on_slurm  # submitit is loaded in a job already

    if running_on_slurm() and os.environ.get("SLURM_JOB_ID"):
        job = f"slurm {os.environ['SLURM_JOB_ID']} restart {requeue.job_restarts()}"
    else:
        job = f"local {os.environ.get('SUBMITIT_LOCAL_JOB_ID') or os.getpid()}"
    return f"{job} start {again}"
