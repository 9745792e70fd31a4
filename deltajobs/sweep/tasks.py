"""What one array task runs when it holds several points of a sweep (`--per-task K`, `--pack K`).

`PointsTask` is the picklable call submitit runs for the task. It holds each point's own call (the
payload's `TrainJob` or `CommandJob`, exactly what a task of one point would run) and run directory,
and runs them one after another in this process (`--per-task`), or `pack` at a time as separate
processes on the same GPU (`--pack`, `python -m deltajobs.sweep.tasks POINT.pkl`).

A point's state lives in its own run directory, so a requeued task (walltime warning, preemption,
`scontrol requeue`) knows where it stopped:

    results.json with status "completed"   done: skipped on every later start
    failed.json                            failed: skipped too (as a failed single job is not rerun)
    attempts.json                          started: the point's own call resumes from its checkpoint

A point that ends on a full disk or quota (its payload's exit status 28, `deltajobs.injob.diskspace`)
is not failed: the task ends with status 28 too (the next points would meet the same disk), and
once space is freed the task's next start resumes the point.

The requeue contract is the payload's, decided in `deltajobs.injob.requeue`: a point that stops
for a requeue exits the whole task with status -1 and the task's next start resumes it. Each point
starts with a line `deltajobs: point N (lr=0.1) starts in DIR` in the task's log, which is how
`deltajobs sweep logs --point N` finds a point's part of it.

Importing this module must stay cheap: every task imports it to unpickle its call.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from deltajobs.injob import requeue, warning  # stdlib only: cheap to import
from deltajobs.injob.diskspace import EXIT_DISK_FULL
from deltajobs.injob.ranks import global_rank
from deltajobs.osutil import atomic_writer, write_atomic

RESULTS, FAILED, ATTEMPTS = "results.json", "failed.json", "attempts.json"
PACKED_CALL, PACKED_OUT, PACKED_ERR = "point.pkl", "point.out", "point.err"
REQUEUE_WANTED = requeue.WANTED_FILE  # a packed point asked for a requeue; its task does it, once
MARK = "deltajobs: point "  # how a point's part of the task log starts
STOPPED = 255  # a packed point's exit status when it stopped for a requeue (its sys.exit(-1))


class PointStopped(Exception):
    """The point stopped for a requeue, preemption or cancel: the task ends and SLURM decides."""


def point_state(run_dir: Path) -> str | None:
    """ "done", "failed", "started" or None (never started), from the point's own files."""
    try:
        if json.loads((run_dir / RESULTS).read_text()).get("status") == "completed":
            return "done"
    except (OSError, ValueError, AttributeError):
        pass
    if (run_dir / FAILED).exists():
        return "failed"
    return "started" if (run_dir / ATTEMPTS).exists() else None


def run_point(call: Callable[[], Any], run_dir: Path, index: int, label: str) -> str:
    """Run one point's call: "done" or "failed" (failed.json says why); PointStopped when the point
    stopped for a requeue or was killed (its payload's SystemExit(-1)). Its SystemExit(28), a full
    disk or quota, goes on up: the task ends with it and the point stays resumable, not failed."""
    where = f"{MARK}{index} ({label}) starts in {run_dir}"
    print(where, flush=True)
    print(where, file=sys.stderr, flush=True)
    try:
        result = call()
    except SystemExit as stop:
        if stop.code in (requeue.STOPPED, STOPPED):
            raise PointStopped from None
        if stop.code == EXIT_DISK_FULL:
            print(f"{MARK}{index} stopped: disk full or quota exceeded; the task ends", file=sys.stderr, flush=True)
            raise
        return _failed(run_dir, index, f"exited with status {stop.code}")
    except Exception as err:  # the point's own error: the next point still runs
        traceback.print_exc()
        return _failed(run_dir, index, f"{type(err).__name__}: {err}")
    if isinstance(result, dict) and result.get("status") not in (None, "completed"):
        return _failed(run_dir, index, f"ended {result.get('status')}")
    print(f"{MARK}{index} done", flush=True)
    return "done"


def _failed(run_dir: Path, index: int, why: str) -> str:
    if global_rank() == 0:
        try:
            write_atomic(run_dir / FAILED, json.dumps({"reason": why, "time": time.time()}) + "\n")
        except OSError as err:  # a full disk: no half-written failed.json (the next start reruns it)
            why += f" (not recorded: {err.strerror or err})"
    print(f"{MARK}{index} failed: {why}", file=sys.stderr, flush=True)
    return "failed"


class PointsTask:
    """Run the points of one array task: `calls[i]` into `run_dirs[i]`, `pack` at a time."""

    def __init__(
        self,
        calls: list[Callable[[], Any]],
        run_dirs: list[str],
        indexes: list[int],
        labels: list[str],
        pack: int = 1,
        stagger_s: float = 0.0,
        max_requeues: int = 0,
    ) -> None:
        self.calls = calls
        self.run_dirs = run_dirs
        self.indexes = indexes
        self.labels = labels
        self.pack = pack
        self.stagger_s = stagger_s  # wait before the first point's first start (0: none)
        self.max_requeues = max_requeues
        self.stop_signal: int | None = None
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("stop_signal", "children")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, stop_signal=None, children={})

    def __call__(self) -> dict[str, str]:
        dirs = [Path(d) for d in self.run_dirs]
        states = {i: point_state(d) for i, d in zip(self.indexes, dirs, strict=True)}
        finished = [i for i, s in states.items() if s in ("done", "failed")]
        if finished:
            print(f"deltajobs: points {_span(finished)} finished before this start: skipped", flush=True)
        elif self.stagger_s > 0 and not any(states.values()):
            print(f"deltajobs: staggered start: waiting {self.stagger_s:g} s (--stagger)", flush=True)
            time.sleep(self.stagger_s)
        todo = [n for n, i in enumerate(self.indexes) if states[i] not in ("done", "failed")]
        try:
            if self.pack > 1:
                self._run_packed(todo)
            else:
                self._run_in_turn(todo, dirs)
        except PointStopped:
            sys.exit(requeue.STOPPED)  # requeued or killed: the next start of this task resumes here
        return {str(i): point_state(d) or "not started" for i, d in zip(self.indexes, dirs, strict=True)}

    def _run_in_turn(self, todo: list[int], dirs: list[Path]) -> None:
        """The points one after another in this process. Each point's call installs its own signal
        handlers while it runs; between points ours note a time-limit warning (USR2; URG for
        programs) or SIGTERM, and no further point starts: the task requeues itself (the warning)
        or ends (SIGTERM)."""
        stops = (*warning.WARNINGS, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in stops}
        try:
            for n in todo:
                if self.stop_signal is not None:
                    self._requeue_once()
                run_point(self.calls[n], dirs[n], self.indexes[n], self.labels[n])
                for sig in stops:
                    signal.signal(sig, self._on_signal)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- --pack: separate processes on the same GPU ------------------------------------------------

    def _run_packed(self, todo: list[int]) -> None:
        """Start up to `pack` points at once, each `python -m deltajobs.sweep.tasks ITS.pkl` with its
        own log in its run directory; on SLURM's time-limit warning (USR2; URG for programs) or
        SIGTERM every running point gets SIGTERM (each checkpoints and stops), then this task
        requeues itself once. A point
        that ends with status 28 (a full disk or quota) stops the others the same way, and the task
        ends with status 28, without a requeue."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (*warning.WARNINGS, signal.SIGTERM)}
        running = self.children
        waiting, stopped, full = list(todo), False, False
        try:
            while waiting or running:
                while waiting and len(running) < self.pack and self.stop_signal is None and not full:
                    n = waiting.pop(0)
                    running[n] = self._start(n)
                for n, child in list(running.items()):
                    code = child.poll()
                    if code is None:
                        continue
                    del running[n]
                    stopped |= code == STOPPED
                    print(f"{MARK}{self.indexes[n]} ended ({point_state(Path(self.run_dirs[n])) or code})", flush=True)
                    if code == EXIT_DISK_FULL and not full:
                        full = True
                        print(
                            f"deltajobs: point {self.indexes[n]} met a full disk or quota (its log: "
                            f"{Path(self.run_dirs[n]) / PACKED_ERR}): no further point starts",
                            flush=True,
                        )
                        self._stop_children()
                if (self.stop_signal is not None or full) and not running:
                    break
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if full:
            sys.exit(EXIT_DISK_FULL)  # the points resume at the task's next start, once space is freed
        if stopped or self.stop_signal is not None:
            self._requeue_once()

    def _start(self, n: int) -> subprocess.Popen[bytes]:
        run_dir = Path(self.run_dirs[n])
        with atomic_writer(run_dir / PACKED_CALL, binary=True) as handle:
            pickle.dump((self.calls[n], self.indexes[n], self.labels[n]), handle)
        print(f"{MARK}{self.indexes[n]} ({self.labels[n]}) starts in {run_dir}, packed: its log is {PACKED_OUT}")
        sys.stdout.flush()
        out, err = (run_dir / PACKED_OUT).open("ab"), (run_dir / PACKED_ERR).open("ab")
        with out, err:
            argv = [sys.executable, "-m", "deltajobs.sweep.tasks", str(run_dir / PACKED_CALL)]
            return subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The time-limit warning (USR2; URG for programs) or SIGTERM: no further point starts, and
        every running packed point gets SIGTERM, which makes it checkpoint and stop without
        requeueing the task."""
        if self.stop_signal is not None:
            return
        self.stop_signal = signum
        print(f"deltajobs: caught {signal.Signals(signum).name}: no further point starts", flush=True)
        self._stop_children()

    def _stop_children(self) -> None:
        """SIGTERM to every running packed point: each checkpoints and stops."""
        for child in self.children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)

    def _requeue_once(self) -> None:
        """Once the running points stopped: requeue the task once (not once per point), within
        `max_requeues` (SLURM's count of the task's restarts), then stop."""
        wanted = [Path(d) for d in self.run_dirs if (Path(d) / REQUEUE_WANTED).exists()]
        for run_dir in wanted:
            (run_dir / REQUEUE_WANTED).unlink(missing_ok=True)
        if requeue.batch_script_requeues():
            raise PointStopped  # a script's request: the batch script requeues when we exit
        from deltajobs.slurm import submitit_private

        on_slurm = submitit_private.running_on_slurm()
        if requeue.task_requeues(bool(wanted), self.stop_signal, on_slurm) and requeue.task_may_requeue(
            self.max_requeues
        ):
            if global_rank() == 0:
                submitit_private.requeue(self.max_requeues - requeue.job_restarts())
                print("deltajobs: requeued the task for its unfinished points", flush=True)
        raise PointStopped


def _span(indexes: list[int]) -> str:
    return ", ".join(str(i) for i in indexes)


def _packed_main(path: str) -> int:
    """One packed point in its own process: run it; a requeue it asks for is left to its task."""
    from deltajobs.slurm import submitit_private

    run_dir = Path(path).parent

    def leave_it_to_the_task(countdown: int) -> None:
        (run_dir / REQUEUE_WANTED).touch()

    submitit_private.requeue = leave_it_to_the_task  # one scontrol requeue per task, not per point
    with open(path, "rb") as handle:
        call, index, label = pickle.load(handle)
    try:
        run_point(call, run_dir, index, label)
    except PointStopped:
        return STOPPED
    return 0


if __name__ == "__main__":
    sys.exit(_packed_main(sys.argv[1]))
