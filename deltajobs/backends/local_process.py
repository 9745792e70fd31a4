"""A local job's processes, known by more than a pid: signals go to them and to nothing else.

A local job is its submitit controller (`python -m submitit.local._local FOLDER`) and the tasks it
starts. Its id, `local-<pid>-<start>`, names the controller by pid AND start time (clock ticks since
boot, field 22 of /proc/PID/stat): once a process ends, its pid goes to another (after a reboot, a
crash, pid_max wrapping), but no two processes of one boot share both. Before any signal the
process at that pid must have that start time and be submitit's controller of the job's submitit
folder (in its run directory); otherwise it is left alone and the job counts as ended. Signals go
through a pidfd where Linux gives one, so a process that ends between the check and the signal
cannot hand its pid to a stranger in time to receive it.

A row recorded before ids carried the start (`local-<pid>`) is the job's only when the process is
submitit's controller of the row's folder AND started before the row was recorded (a reused pid
starts after the job that had it ended, so after its row); else it is never signalled. Without
/proc (not Linux) no process can be told apart: none is signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

PROC = Path("/proc")
CONTROLLER = b"submitit.local._local"  # the module a local job's controller runs
CLOCK_SLACK_S = 2.0  # /proc/stat's btime may move by a second: how much earlier a row may seem


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when there is no such process."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (None: no such process, or no /proc)."""
    stat = _stat(pid)
    return int(stat[19]) if stat else None  # field 22 of proc(5)


def _started_at(ticks: int) -> float | None:
    """A start in ticks since boot as a Unix time (to compare with a row's `submitted_at`)."""
    try:
        lines = (PROC / "stat").read_text().splitlines()
    except OSError:
        return None
    boot = next((float(line.split()[1]) for line in lines if line.startswith("btime ")), None)
    return None if boot is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def is_controller(pid: int, start: int | None, folder: Path | None = None, recorded_at: float | None = None) -> bool:
    """Whether process `pid` is the live controller of the local job with that `start` (None: a row
    from before ids carried it, recorded at `recorded_at`) and submitit `folder` (None: any)."""
    stat = _stat(pid)
    if stat is None or stat[0] == "Z":
        return False
    if start is not None:
        if int(stat[19]) != start:
            return False
    else:
        began = _started_at(int(stat[19]))
        if recorded_at is None or began is None or began > recorded_at + CLOCK_SLACK_S:
            return False
    try:
        args = (PROC / str(pid) / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return False
    if CONTROLLER not in args[:-1]:  # python -m submitit.local._local FOLDER
        return False
    return folder is None or _same(os.fsdecode(args[-1]), folder)


def _same(path: str, folder: Path) -> bool:
    return os.path.realpath(path) == os.path.realpath(folder)


class Pinned:
    """One process, held so that a signal reaches it or nothing: a pidfd where Linux gives one,
    else its start time, checked again right before each signal."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfd_open (not Linux, old kernel, seccomp)
            self.fd = os.pidfd_open(pid)
        self.start = start_ticks(pid)  # read after pinning: the process checked is the one pinned

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.start

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif self.start is not None and self.alive():
                os.kill(self.pid, sig)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def children(parent: Pinned) -> list[Pinned]:
    """The live processes whose parent is `parent`, each pinned and checked after pinning."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is None or int(stat[1]) != parent.pid:
                continue
            child = Pinned(int(entry.name))
            stat = _stat(child.pid)
            if stat is not None and int(stat[1]) == parent.pid and parent.alive():
                found.append(child)
            else:
                child.close()
    return found
