"""A job's starts and stops, inside the job: `record_attempt` counts each start in the run
directory's attempts.json (rank 0 only), and `StopFlag` turns a signal into a flag that a loop
polls, so that it checkpoints at a clean step boundary. Used by every payload's task (the packaged
trainer's `deltajobs.payloads.trainer_job.TrainJob`, a command's `CommandJob`, a Python function,
sweep points and search workers). Imports neither submitit nor torch.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from deltajobs.injob import diskspace

# What a run directory says of its starts lives in progress.py, which status imports without submitit.
from deltajobs.injob.progress import ATTEMPTS_FILE as ATTEMPTS_FILE
from deltajobs.injob.progress import attempt_nodes as attempt_nodes
from deltajobs.injob.progress import nodes_text as nodes_text
from deltajobs.injob.progress import restarts as restarts
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
        again = diskspace.resume_hint(run_dir) or "resubmit"
        diskspace.replace_text(path, json.dumps(data, indent=1), again=again)
    return len(data["starts"]) - 1
