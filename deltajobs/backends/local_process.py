"""A local job's processes, known by more than a pid: signals go to them and to nothing else.

A local job is its submitit controller (`python -m submitit.local._local FOLDER`) and the tasks it
starts. Its id, `local-<pid>-<start>`, names the controller by pid AND start time: once a process
ends, its pid goes to another (after a reboot, a crash, pid_max wrapping), but no two processes of
one boot share both. Before any signal the process at that pid must have that start time and be
submitit's controller of the job's submitit folder (in its run directory); otherwise it is left
alone and the job counts as ended. Signals go through a pidfd where Linux gives one, so a process
that ends between the check and the signal cannot hand its pid to a stranger in time to receive it;
elsewhere the start time is checked again right before each signal.

Two readers say what runs at a pid: /proc where the system has one (Linux: the start in clock ticks
since boot, field 22 of /proc/PID/stat, and the exact argv), else POSIX `ps` (macOS: the start as
`lstart`, whole seconds, kept in the id as `s<Unix seconds>`, and the command line). `procfs()` is
the one gate to /proc. Where neither can say (no /proc and no working `ps`, or an id whose start is
in /proc's ticks on a system without /proc), `CannotTell` is raised: nothing is signalled and the
caller says so.

A row recorded before ids carried the start (`local-<pid>`) is the job's only when the process is
submitit's controller of the row's folder AND started before the row was recorded (a reused pid
starts after the job that had it ended, so after its row); else it is never signalled.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
PS = "ps"  # POSIX ps: what is known of a process where there is no /proc (macOS)
PS_TIMEOUT_S = 30
CONTROLLER = "submitit.local._local"  # the module a local job's controller runs
CLOCK_SLACK_S = 2.0  # boot time (/proc/stat's btime, ps's lstart) may move by a second or so
SECONDS = "s"  # an id's start read from ps: `s<Unix seconds>`, where /proc gives clock ticks


class CannotTell(Exception):
    """No way to know whether a process is the job's: `str(err)` says why, in a few words."""


@dataclass(frozen=True)
class Seen:
    """One process as the system shows it: from /proc (`ticks`, `argv`) or from ps (`began`, `command`)."""

    pid: int
    parent: int
    zombie: bool
    ticks: int | None = None  # /proc: its start in clock ticks since boot
    began: float | None = None  # ps: its start as a Unix time, in whole seconds
    argv: tuple[str, ...] | None = None  # /proc: its exact arguments
    command: str = ""  # ps: its arguments joined by spaces

    def start(self) -> str | None:
        """Its start as a job id holds it: clock ticks from /proc, `s<Unix seconds>` from ps."""
        if self.ticks is not None:
            return str(self.ticks)
        return None if self.began is None else f"{SECONDS}{int(self.began)}"

    def started_at(self) -> float | None:
        """When it started, as a Unix time (None: cannot be known here)."""
        return self.began if self.ticks is None else _boot_time_plus(self.ticks)

    def runs_controller(self, folder: Path | None) -> bool:
        """Whether it runs submitit's local controller of `folder` (None: of any folder)."""
        if self.argv is not None:  # python -m submitit.local._local FOLDER
            if CONTROLLER not in self.argv[:-1]:
                return False
            target = self.argv[-1]
        else:  # ps joins the arguments with spaces: the folder is all that follows the module
            _, found, target = self.command.partition(f" {CONTROLLER} ")
            if not found:
                return False
        return folder is None or os.path.realpath(target) == os.path.realpath(folder)


def procfs() -> Path | None:
    """/proc where this system has one (Linux), else None, and `ps` is asked: every read of /proc
    starts here."""
    return PROC if (PROC / "self" / "stat").exists() else None


def look(pid: int) -> Seen | None:
    """Process `pid` as the system shows it (None: there is none); CannotTell when nothing can say."""
    root = procfs()
    return _from_proc(root, pid) if root is not None else _from_ps(pid)


def start_of(pid: int) -> str | None:
    """Process `pid`'s start as a job id holds it (None: no such process, or nothing can say)."""
    try:
        seen = look(pid)
    except CannotTell:
        return None
    return seen.start() if seen else None


def is_controller(pid: int, start: str | None, folder: Path | None = None, recorded_at: float | None = None) -> bool:
    """Whether process `pid` is the live controller of the local job with that `start` (None: a row
    from before ids carried it, recorded at `recorded_at`) and submitit `folder` (None: any).
    Raises CannotTell when the process runs such a controller but its start cannot be compared."""
    seen = look(pid)
    if seen is None or seen.zombie or not seen.runs_controller(folder):
        return False
    if start is None:
        began = seen.started_at()
        return recorded_at is not None and began is not None and began <= recorded_at + CLOCK_SLACK_S
    if start.startswith(SECONDS):
        began = seen.started_at()
        if began is None:
            raise CannotTell("its start time cannot be read here")
        return abs(began - int(start.removeprefix(SECONDS))) <= CLOCK_SLACK_S
    if seen.ticks is None:
        raise CannotTell("its id holds its start in /proc's clock ticks, and this system has no /proc")
    return seen.ticks == int(start)


class Pinned:
    """One process, held so that a signal reaches it or nothing: a pidfd where Linux gives one,
    else its start time, checked again right before each signal."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfd_open (not Linux, old kernel, seccomp)
            self.fd = os.pidfd_open(pid)
        try:
            self.seen = look(pid)  # read after pinning: the process checked is the one pinned
        except CannotTell:
            self.seen = None

    def alive(self) -> bool:
        if self.seen is None:
            return False
        try:
            now = look(self.pid)
        except CannotTell:
            return False
        return now is not None and not now.zombie and (now.ticks, now.began) == (self.seen.ticks, self.seen.began)

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif self.alive():
                os.kill(self.pid, sig)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def children(parent: Pinned) -> list[Pinned]:
    """The live processes whose parent is `parent`, each pinned and checked after pinning."""
    try:
        parents = _parents()
    except CannotTell:
        return []
    found = []
    for pid, ppid in parents.items():
        if ppid != parent.pid:
            continue
        child = Pinned(pid)
        if child.seen is not None and child.seen.parent == parent.pid and parent.alive():
            found.append(child)
        else:
            child.close()
    return found


# -- the two readers -------------------------------------------------------------------------------


def _stat(root: Path, pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when there is no such process."""
    try:
        return (root / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _from_proc(root: Path, pid: int) -> Seen | None:
    stat = _stat(root, pid)
    if stat is None:
        return None
    try:
        raw = (root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    argv = tuple(os.fsdecode(arg) for arg in raw.rstrip(b"\0").split(b"\0"))  # a zombie's is empty
    return Seen(pid, int(stat[1]), stat[0] == "Z", ticks=int(stat[19]), argv=argv)  # field 22 of proc(5)


def _boot_time_plus(ticks: int) -> float | None:
    """A start in ticks since boot as a Unix time (to compare with a row's `submitted_at`)."""
    root = procfs()
    try:
        lines = (root / "stat").read_text().splitlines() if root else []
    except OSError:
        return None
    boot = next((float(line.split()[1]) for line in lines if line.startswith("btime ")), None)
    return None if boot is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def _ps(*args: str) -> str:
    """`ps ARGS`' output, in the C locale with times in UTC; CannotTell when ps cannot answer."""
    argv = [PS, *args]
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=PS_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as err:
        raise CannotTell(f"there is no /proc and `{PS}` cannot run: {getattr(err, 'strerror', None) or err}") from None
    if proc.returncode != 0 and proc.stderr.strip():  # ps -p of no process exits 1 and says nothing
        raise CannotTell(f"there is no /proc and `{' '.join(argv)}` failed: {proc.stderr.strip().splitlines()[-1]}")
    return proc.stdout


def _from_ps(pid: int) -> Seen | None:
    line = _ps("-ww", "-o", "ppid=", "-o", "stat=", "-o", "lstart=", "-o", "command=", "-p", str(pid)).strip()
    if not line:
        return None
    fields = line.split(None, 7)  # PPID STAT Mon Dec  7 11:03:10 2026 COMMAND...
    try:
        began = calendar.timegm(time.strptime(" ".join(fields[2:7]), "%a %b %d %H:%M:%S %Y"))
        parent = int(fields[0])
    except (ValueError, IndexError):
        raise CannotTell(f"`{PS}` printed {line!r}, not ppid, stat, lstart and command") from None
    command = fields[7] if len(fields) > 7 else ""
    return Seen(pid, parent, fields[1].startswith("Z"), began=float(began), command=command)


def _parents() -> dict[int, int]:
    """Every process's parent, by pid."""
    root = procfs()
    table: dict[int, int] = {}
    if root is None:
        for line in _ps("-A", "-o", "pid=", "-o", "ppid=").splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                table[int(fields[0])] = int(fields[1])
        return table
    for entry in root.iterdir():
        if entry.name.isdigit():
            stat = _stat(root, int(entry.name))
            if stat is not None:
                table[int(entry.name)] = int(stat[1])
    return table
