"""The local backend of a sweep: every point is its own submitit LocalExecutor job (its own process,
pid, log and result pickle, so `status`, `logs` and `cancel` work per point as for `submit --local`),
and at most `slots` of them train at once: each takes one of `slots` file locks before training and
holds it until its process exits. The others wait, polling, with their logs saying so.

Chosen over one background process running the points in turn because it keeps the points
independent (one crash or cancel touches one point) and uses the machine's cores when asked to.
Waiting points are idle processes (~40 MB each), so the local backend suits sweeps of tens of
points, not thousands. Importing this module must stay cheap: the job process unpickles it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from deltajobs.job import ATTEMPTS_FILE, TrainJob

POLL_SECONDS = 0.5


def take_slot(slots_dir: Path, slots: int, poll: float = POLL_SECONDS) -> int:
    """Block until one of `slots` lock files is ours; returns its descriptor (closing it frees it)."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        for slot in range(slots):
            fd = os.open(slots_dir / f"slot-{slot}", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        if not said:
            print(f"deltajobs: waiting for one of {slots} slots (--max-parallel {slots})", flush=True)
            said = True
        time.sleep(poll)


class SlotTrainJob(TrainJob):
    """A TrainJob that first waits for a free slot, so at most `slots` points of a sweep train at once."""

    def __init__(self, spec: dict[str, Any], run_dir: str, max_requeues: int, slots_dir: str, slots: int) -> None:
        super().__init__(spec, run_dir, max_requeues)
        self.slots_dir = slots_dir
        self.slots = slots

    def __call__(self) -> dict[str, Any]:
        fd = take_slot(Path(self.slots_dir), self.slots)
        try:
            return super().__call__()
        finally:
            os.close(fd)


def started(run_dir: Path) -> bool:
    """Whether a point's trainer has started (TrainJob records each start in attempts.json)."""
    return (run_dir / ATTEMPTS_FILE).exists()
