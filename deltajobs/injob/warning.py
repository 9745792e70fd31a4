"""The walltime warning, passed on to a user's program in the form it listens for (stdlib only).

A job that runs a user's program (a script or a command, and their sweeps and searches) asks SLURM
for SIGURG `resources.signal_grace` seconds before its walltime (`#SBATCH --signal=URG@N`). SLURM
sends it to every process of the job's steps; SIGURG's default action is to do nothing, so a program
that listens for no warning is left alone and runs to its time limit, as it would without deltajobs.

deltajobs' task wrapper catches it and passes it on (`pass_on`) to the outermost processes of the
program's tree that catch a warning signal, read from /proc/PID/status (SigCgt):

- SIGUSR2 where the process catches it: deltajobs' contract (`should_stop()`), Lightning with
  `SLURMEnvironment(requeue_signal=signal.SIGUSR2)`, a shell script's `trap ... USR2`;
- SIGUSR1 where it catches that: Lightning's default `requeue_signal` (both, SIGUSR2 first, where
  it catches both: Lightning's default handler and `should_stop()` in one program);
- neither where it catches neither, and the children of that process are looked at in its place
  (torchrun's and `accelerate launch`'s workers under their launcher, a script under `bash -c`).

A process that forwards signals to its child (`uv run`, apptainer's starter, srun, mpirun, tini:
they catch nearly every signal, or are known by name) is looked through the same way: sending it
both SIGUSR1 and SIGUSR2 would pass both on, and the one its program does not catch would kill it.

A process that got the signal is not looked into further: its own children (DataLoader workers,
which inherit their parent's handlers) are its business. On the local backend submitit's controller
sends the wrapper SIGUSR2 instead of SIGURG; it is passed on the same way.

The program starts with SIGUSR1 and SIGUSR2 at their defaults, so a framework that installs its
handler only where none is set (Lightning's `_has_already_handler`) installs it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

SLURM_WARNING = signal.SIGURG  # what SLURM sends a job that runs a user's program
SLURM_WARNING_NAME = "URG"  # ... as #SBATCH --signal spells it
WARNINGS = (signal.SIGURG, signal.SIGUSR2)  # what a deltajobs process takes for the warning
LISTENED = (signal.SIGUSR2, signal.SIGUSR1)  # what a program may listen for, preferred first
PROC = Path("/proc")
# Forwarders: known by name (comm), or by catching at least FORWARDER_CATCHES of signals 1-31 (a
# Python program catches a handful: SIGINT, SIGTERM, SIGCHLD, its warning signals).
FORWARDERS = frozenset("uv starter starter-suid apptainer singularity srun mpirun mpiexec tini dumb-init".split())
FORWARDER_CATCHES = 10
WARNED_FILE = "DELTAJOBS_WARNED_FILE"  # the program's env: the file the wrapper leaves at the warning
MARK_PREFIX = ".walltime-warning-"  # in the run directory, + the attempt's restart count


def is_warning(signum: int | None) -> bool:
    """Whether `signum` is the walltime warning: SIGURG (SLURM, for programs) or SIGUSR2."""
    return signum in WARNINGS


@dataclass(frozen=True)
class Sent:
    pid: int
    name: str  # the process's name (comm)
    signum: int


def caught(pid: int) -> set[int] | None:
    """The signals process `pid` catches (SigCgt of /proc/PID/status), or None where it is gone or
    there is no /proc."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask >> (n - 1) & 1}
    return None


def children(pid: int) -> list[int]:
    """The children of `pid`: /proc/PID/task/*/children (Linux 3.5+ with CONFIG_PROC_CHILDREN),
    else by every process's parent in /proc/*/stat."""
    found: list[int] = []
    tasks = PROC / str(pid) / "task"
    try:
        for task in tasks.iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
        return found
    except OSError:
        pass
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit() and _parent(entry) == pid:
            found.append(int(entry.name))
    return found


def _parent(entry: Path) -> int | None:
    try:
        stat = (entry / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state": ppid


def _name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return str(pid)


def listeners(root: int) -> list[tuple[int, list[int]]]:
    """(pid, the warning signals it catches: SIGUSR2 first) for the outermost processes of `root`'s
    tree that catch SIGUSR2 or SIGUSR1, `root` included; depth first, in pid order."""
    found: list[tuple[int, list[int]]] = []
    todo, seen = [root], set()
    while todo:
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        signals = caught(pid)
        if signals is None:
            continue
        wanted = [int(s) for s in LISTENED if s in signals]
        if wanted and not forwarder(pid, signals):
            found.append((pid, wanted))
        else:
            todo[:0] = sorted(children(pid))
    return found


def forwarder(pid: int, signals: set[int]) -> bool:
    """Whether process `pid` passes signals on to its child rather than listening itself."""
    return len({s for s in signals if s < 32}) >= FORWARDER_CATCHES or _name(pid) in FORWARDERS


def pass_on(root: int) -> list[Sent]:
    """Send the walltime warning to the processes of `root`'s tree that listen (`listeners`);
    what was sent. A process that ended meanwhile is skipped."""
    sent = []
    for pid, signums in listeners(root):
        name = _name(pid)
        for signum in signums:
            try:
                os.kill(pid, signum)
            except OSError:
                break
            sent.append(Sent(pid, name, signum))
    return sent


def describe(sent: list[Sent], program: str) -> str:
    """The log line of a warning passed on (or not)."""
    if not sent:
        return (
            f"deltajobs: the walltime is near; {program} catches neither SIGUSR2 nor SIGUSR1 (yet): "
            "it gets the warning if it starts to, else it runs until the time limit"
        )
    to = ", ".join(f"{signal.Signals(s.signum).name} to {s.name} (pid {s.pid})" for s in sent)
    return f"deltajobs: the walltime is near: {to}"


def marker(run_dir: Path, restarted: int) -> Path:
    """The file the wrapper leaves at the warning of attempt `restarted` of this job (`should_stop()`
    looks for it: a program that first asks after the warning still hears of it); one name per job
    and attempt, so an earlier attempt's or job's file (before a `deltajobs resume`) says nothing of
    this one. Outside SLURM the wrapper's pid stands for the job."""
    job = os.environ.get("SLURM_JOB_ID") or f"local{os.getpid()}"
    return run_dir / f"{MARK_PREFIX}{job}-{restarted}"


def leave_marker(path: str | None) -> None:
    if path:
        try:
            Path(path).touch()
        except OSError:  # a full disk: the signal itself still goes
            pass


def reset_in_child() -> None:
    """In a program's process before exec: the warning signals at their defaults (a framework
    installs its handler only where none is set) and SIGURG at its default, ignored."""
    for signum in (*LISTENED, signal.SIGURG):
        signal.signal(signum, signal.SIG_DFL)
