"""The local backend of a sweep: every point is its own submitit LocalExecutor job (its own process,
pid, log and result pickle, so `status`, `logs` and `cancel` work per point as for `submit --local`),
and at most `slots` of them train at once: each takes one of `slots` file locks before training and
holds it until it ends. The others wait, polling, lowest point first, with their logs saying so.

Chosen over one background process running the points in turn because it keeps the points
independent (one crash or cancel touches one point) and uses the machine's cores when asked to.
Waiting points are idle processes (~40 MB each), so the local backend suits sweeps of tens of
points, not thousands. Importing this module must stay cheap: the job process unpickles it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltajobs.injob.progress import ATTEMPTS_FILE

POLL_SECONDS = 0.5
SLOT_FILE = ".slot"  # in a point's run directory once it holds a slot


def take_slot(slots_dir: Path, slots: int, index: int = 0, poll: float = POLL_SECONDS) -> int:
    """Block until one of `slots` lock files is ours; returns its descriptor (closing it frees it).

    While waiting, point `index` holds `wait-<index>` and lets any lower-numbered waiter go first,
    so points start in order once they are all up. Locks die with their process: a crashed or
    killed point never blocks the others.
    """
    slots_dir.mkdir(parents=True, exist_ok=True)
    waiting = _lock(slots_dir / f"wait-{index}", blocking=True)
    said = False
    try:
        while True:
            if not _lower_waiting(slots_dir, index):
                for slot in range(slots):
                    fd = _lock(slots_dir / f"slot-{slot}")
                    if fd is not None:
                        return fd
            if not said:
                print(f"deltajobs: waiting for one of {slots} slots (--max-parallel {slots})", flush=True)
                said = True
            time.sleep(poll)
    finally:
        if waiting is not None:
            os.close(waiting)


def _lock(path: Path, blocking: bool = False) -> int | None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lower_waiting(slots_dir: Path, index: int) -> bool:
    """Whether a point numbered below `index` is waiting (holds its wait lock) right now."""
    for name in os.listdir(slots_dir):
        if name.startswith("wait-") and name[5:].isdigit() and int(name[5:]) < index:
            fd = _lock(slots_dir / name)
            if fd is None:
                return True
            os.close(fd)
    return False


class SlotJob:
    """A point's task that first waits for a free slot, so at most `slots` points of a sweep run at once."""

    def __init__(self, call: Callable[[], Any], run_dir: str, slots_dir: str, slots: int, index: int) -> None:
        self.call = call
        self.run_dir = run_dir
        self.slots_dir = slots_dir
        self.slots = slots
        self.index = index

    def __call__(self) -> Any:
        fd = take_slot(Path(self.slots_dir), self.slots, self.index)
        (Path(self.run_dir) / SLOT_FILE).touch()
        try:
            return self.call()
        finally:
            os.close(fd)


def started(run_dir: Path) -> bool:
    """Whether a point got past waiting: it took a slot, or its trainer recorded a start."""
    return (run_dir / SLOT_FILE).exists() or (run_dir / ATTEMPTS_FILE).exists()
