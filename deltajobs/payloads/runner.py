"""What runs inside the job for a user's script or command: one `CommandJob` per task, unpickled
and called by submitit like the packaged trainer's `TrainJob`.

It sets the contract's environment (`deltajobs.injob.contract`), starts the program as an argv list in
the submit directory, passes the walltime warning on in the form the program listens for
(`deltajobs.injob.warning`: SIGUSR2, else SIGUSR1, else nothing), forwards SIGTERM (SIGINT here
becomes SIGTERM), samples the GPUs around it, and turns its exit status into the job's fate:
0 completes (results.json), 85 asks for a requeue, anything else fails the task with the status in
the log. The program dies with this process (PR_SET_PDEATHSIG).
A program that dies while the run directory's filesystem is full (statvfs), or whose last words in
the log (its last line: a traceback's last) are ENOSPC/EDQUOT, ends the task with exit status 28
and the disk-full message (`deltajobs.injob.diskspace`), also left in RUN_DIR/disk-full.txt.

Importing this module must stay cheap: every task imports it to unpickle its call.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from deltajobs.injob import contract, diskspace, requeue, warning
from deltajobs.injob.gpu_usage import GPU_FILE, GpuSampler, read_samples, summarize
from deltajobs.injob.job import record_attempt
from deltajobs.injob.ranks import global_rank, task_ranks
from deltajobs.payloads.launchers import with_rendezvous

RESULTS, METRICS_FILE = "results.json", "metrics.jsonl"  # the trainer's names
CHECKPOINTS = "checkpoints"
FORWARDED = (signal.SIGTERM, signal.SIGINT)  # passed on as SIGTERM; the warnings by `warning.pass_on`
_PR_SET_PDEATHSIG = 1
TRANSIENT = ("child", "signalled", "warning", "told", "marked", "child_env")  # not pickled: this process's
WARN_POLL_S = 1.0  # how often the waiting wrapper passes on a warning no process listened for yet
LOG_TAIL = 8192  # bytes of the task's stderr log read back for the program's last line
# Python's words for both errnos, and the file where it says which (`...: '/path'`)
FULL_WORDS = re.compile(r"\[Errno (?:28|122)\] (?:No space left on device|Disk quota exceeded)(?:: '([^']+)')?")


class CommandJob:
    """Run `argv` in `workdir` for the run directory `run_dir` (each task of each attempt)."""

    def __init__(
        self,
        argv: list[str],
        workdir: str,
        run_dir: str,
        max_requeues: int,
        kind: str = "command",
        env: dict[str, str] | None = None,
        gpus_per_node: int = 0,
        shown: str = "",
    ) -> None:
        self.argv = argv
        self.workdir = workdir
        self.run_dir = run_dir
        self.max_requeues = max_requeues
        self.kind = kind
        self.env = env or {}
        self.gpus_per_node = gpus_per_node
        self.shown = shown or " ".join(argv)  # the command as the user wrote it (results, logs)
        self.child: subprocess.Popen[bytes] | None = None
        self.signalled: int | None = None
        self.warning: float | None = None  # when the walltime warning came (the handler notes it)
        self.told = False  # ... and the program's listeners got it
        self.marked = False  # ... and the file should_stop() looks for was left
        self.child_env: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, child=None, signalled=None, warning=None, told=False, marked=False, child_env={})

    def __call__(self) -> dict[str, Any]:
        run_dir = Path(self.run_dir)
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        previous |= {sig: signal.signal(sig, self._warn) for sig in warning.WARNINGS}
        try:
            while True:
                python = self.argv[0] if self.kind == "script" else None
                restarted = record_attempt(run_dir, self.argv, python, self.env)
                contract.reset()  # an attempt started here again has not been told to stop
                requeue.last_attempt(restarted, self.max_requeues)  # the program's own requeue too
                code, seconds = self._run_once(run_dir, restarted)
                self.warning = None  # it was this program's; a next attempt here has had none
                if code == 0:
                    return self._finish(run_dir, seconds)
                if code != requeue.EXIT_REQUEUE:
                    self._fail(code, run_dir)
                self._ask_requeue(restarted)  # on SLURM this process exits; here the next attempt starts
        except diskspace.DiskFullError as err:  # attempts.json or results.json did not fit
            message = str(err)
            if global_rank() == 0:
                diskspace.write_marker(run_dir, message)
            print(f"deltajobs: {message}", file=sys.stderr, flush=True)
            sys.exit(diskspace.EXIT_DISK_FULL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_once(self, run_dir: Path, restarted: int) -> tuple[int, float]:
        env = task_env(run_dir, restarted, self.gpus_per_node, self.env)
        argv = with_rendezvous(self.argv, env, self.gpus_per_node)
        main = global_rank() == 0
        if main:
            diskspace.clear_marker(run_dir)  # the last attempt's note no longer describes the run
        sampler = GpuSampler(run_dir / GPU_FILE).start() if main else None
        self.told, self.marked, self.child_env = False, False, env  # a new program: told again
        start = time.time()
        print(f"deltajobs: running {' '.join(argv)} in {self.workdir} (attempt {restarted + 1})", flush=True)
        try:
            self.child = subprocess.Popen(argv, cwd=self.workdir, env=env, preexec_fn=_child_setup)
        except OSError as err:
            raise RuntimeError(f"cannot start {argv[0]!r}: {err.strerror}") from None
        try:
            code = self._wait(self.child)
        finally:
            if sampler is not None:
                sampler.stop()
        return code, time.time() - start

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        """Wait for the program, passing the walltime warning on once it came (`_pass_warning`)."""
        while True:
            try:
                return child.wait(timeout=WARN_POLL_S)
            except subprocess.TimeoutExpired:
                self._pass_warning(child)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        """Pass SIGTERM (SIGINT: a local cancel) on to the program once (SLURM may also signal it)."""
        if self.signalled == signum:
            return
        self.signalled = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def _warn(self, signum: int, frame: FrameType | None) -> None:
        """The walltime warning (SLURM's SIGURG; submitit's local SIGUSR2): noted here, passed on by
        the waiting loop (`_pass_warning`), also where it came before the program started."""
        if self.warning is None:
            self.warning = time.time()  # nothing slow in a handler; the loop acts within WARN_POLL_S

    def _pass_warning(self, child: subprocess.Popen[bytes]) -> None:
        """Once the warning came: to the processes of the program that listen for SIGUSR2 or SIGUSR1
        (`deltajobs.injob.warning`), said in the log, then the file `should_stop()` looks for. Where
        none listens yet (a framework sets its handler when training starts), it is tried again each
        WARN_POLL_S until one does or the program ends; the log says so once."""
        if self.warning is None or self.told or child.poll() is not None:
            return
        sent = warning.pass_on(child.pid)
        if sent or not self.marked:
            print(warning.describe(sent, self.shown), flush=True)
        self.told = bool(sent)
        if not self.marked:  # after the signal: a stalled filesystem must not delay it
            self.marked = True
            warning.leave_marker(self.child_env.get(warning.WARNED_FILE))

    def _finish(self, run_dir: Path, seconds: float) -> dict[str, Any]:
        return write_completed(run_dir, self.kind, self.shown, seconds)

    def _fail(self, code: int, run_dir: Path) -> None:
        full = disk_full_message(run_dir, log_tail()) if code > 0 else None
        if full is not None:
            message = f"{self.argv[0]} exited with status {code}; {full}"
            if global_rank() == 0:
                diskspace.write_marker(run_dir, message)
            print(f"deltajobs: {message}", file=sys.stderr, flush=True)
            sys.exit(diskspace.EXIT_DISK_FULL)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            print(f"deltajobs: {self.argv[0]} was killed by {name}", file=sys.stderr, flush=True)
            sys.exit(-1)  # preempted or cancelled: SLURM decides what happens next
        print(f"deltajobs: {self.argv[0]} exited with status {code}", file=sys.stderr, flush=True)
        sys.exit(code)  # the task fails with the program's own status (no traceback of ours)

    def _ask_requeue(self, restarted: int) -> None:
        requeue.ask(self.argv[0], "exit 85", "starting it again", restarted, self.max_requeues)


def disk_full_message(run_dir: Path, tail: str) -> str | None:
    """The disk-full message for a program that failed, if the run directory's filesystem is full
    (statvfs) or the program's last words (the last line of `tail`, its log: a traceback's last
    line) were ENOSPC or EDQUOT; else None. An ENOSPC the program handled earlier does not count."""
    said = FULL_WORDS.search(last_words(tail))
    if said is None and not diskspace.looks_full(run_dir):
        return None
    path = Path(said.group(1)) if said and said.group(1) else run_dir
    kept = f"what it saved in {run_dir / CHECKPOINTS} is kept"
    return str(diskspace.DiskFullError(path, kept, diskspace.resume_hint(run_dir) or "resubmit"))


def last_words(tail: str) -> str:
    """The last line of a log's `tail` that is not blank."""
    lines = [line for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def log_tail() -> str:
    """The end of this task's stderr where it is a file (SLURM's log): the program writes there too."""
    try:
        if not stat.S_ISREG(os.fstat(2).st_mode):  # a terminal or a pipe: nothing to read back
            return ""
        with open("/proc/self/fd/2", "rb") as handle:  # its own open file: even if deleted
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - LOG_TAIL))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def write_completed(run_dir: Path, kind: str, command: str, seconds: float) -> dict[str, Any]:
    """results.json of a user's program that completed (rank 0 writes it): what ran, how long, its
    reports and the GPUs' summary. The other ranks get the same dict back."""
    results: dict[str, Any] = {
        "payload": kind,
        "status": "completed",
        "exit_code": 0,
        "command": command,
        "elapsed_seconds": round(seconds, 3),
        "history": read_metrics(run_dir / METRICS_FILE),
    }
    gpu = summarize(read_samples(run_dir / GPU_FILE)) if (run_dir / GPU_FILE).exists() else None
    if gpu is not None:
        results["gpu_util"] = gpu
    if global_rank() == 0:
        kept = f"{command} completed; what it saved in {run_dir / CHECKPOINTS} is kept"
        again = diskspace.resume_hint(run_dir) or "resubmit"
        diskspace.replace_text(run_dir / RESULTS, json.dumps(results, indent=2) + "\n", kept, again)
    return results


def task_env(run_dir: Path, restarted: int, gpus_per_node: int, extra: dict[str, str]) -> dict[str, str]:
    """The environment of the program: this process's, the contract's variables, torchrun's."""
    env = {**os.environ, **extra}
    checkpoints = run_dir / CHECKPOINTS
    checkpoints.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            contract.RUN_DIR: str(run_dir),
            contract.CHECKPOINT_DIR: str(checkpoints),
            contract.RESTART_COUNT: str(restarted),
            contract.METRICS: str(run_dir / METRICS_FILE),
            warning.WARNED_FILE: str(warning.marker(run_dir, restarted)),
            **task_ranks().as_env(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    # Below the ephemeral ports (32768 and up), as the job script's (templates/job.sh.j2).
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", os.getpid())) % 12000))
    return env


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a metrics file (a torn or foreign line is skipped, not fatal)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _child_setup() -> None:
    """In the program's process before exec: the warning signals at their defaults (a framework
    installs its handler only where none is set; SLURM sends the job SIGURG, which does nothing
    unless caught), SIGINT at its default, and death with us."""
    warning.reset_in_child()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
