"""The contract between deltajobs and a user's own code, and its two helpers. Stdlib only: user
scripts import it (`from deltajobs import report, should_stop`) without torch or the CLI.

Inside a job deltajobs sets, on every task of every attempt:

    DELTAJOBS_RUN_DIR          the run directory (the same on every attempt)
    DELTAJOBS_CHECKPOINT_DIR   where to keep state across requeues: RUN_DIR/checkpoints, created
    DELTAJOBS_RESTART_COUNT    0 on the first attempt, 1 after the first requeue, ...
    DELTAJOBS_METRICS          RUN_DIR/metrics.jsonl: append one JSON object per line
    DELTAJOBS_PARENT_RUN_DIR   a job submitted with --after ID: ID's run directory (one parent)
    DELTAJOBS_PARENT_RUN_DIRS  ... every parent's, in --after's order, joined by ':' (one or more)
    RANK LOCAL_RANK WORLD_SIZE LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT   as torchrun sets them

Signals: the walltime warning arrives `resources.signal_grace` seconds before the walltime as
SIGUSR2 where the program catches SIGUSR2, else as SIGUSR1 where it catches that (Lightning's
default), else not at all (`deltajobs.injob.warning`); SIGTERM on preemption or cancel. Both turn
`should_stop()` true: the warning also through a file the task wrapper leaves (WARNED_FILE), so
that a program that first asks after the warning came still hears of it. A program that saves its
state and exits with status 85 (`EXIT_REQUEUE`) is requeued, up to `resources.max_requeues` times,
and started again with the same run directory. A program that listens for nothing times out as usual.
Under deltajobs' task wrapper (WARNED_FILE set: a script or command) importing this module catches
nothing: a framework's own handler (Lightning's) is installed as if deltajobs were not there, and
`should_stop()`, once called, runs it too (handlers are chained). Where SLURM itself sends SIGUSR2
to the process (an sbatch script's `--signal=USR2`, a function's subprocess: DELTAJOBS_RUN_DIR set,
no wrapper), SIGUSR2 is caught from import on, so that the warning never kills the program.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from deltajobs.injob import warning
from deltajobs.injob.diskspace import append_line
from deltajobs.injob.requeue import EXIT_REQUEUE as EXIT_REQUEUE  # the decision's home: injob/requeue.py

RUN_DIR = "DELTAJOBS_RUN_DIR"
CHECKPOINT_DIR = "DELTAJOBS_CHECKPOINT_DIR"
RESTART_COUNT = "DELTAJOBS_RESTART_COUNT"
METRICS = "DELTAJOBS_METRICS"
PARENT_RUN_DIR, PARENT_RUN_DIRS = "DELTAJOBS_PARENT_RUN_DIR", "DELTAJOBS_PARENT_RUN_DIRS"  # set at submit
WARNED_FILE = warning.WARNED_FILE  # set by the task wrapper: the file it leaves at the warning
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
CHECK_EVERY_S = 1.0  # should_stop() looks for the wrapper's file at most this often (Lustre: a stat)

_stop_signal: int | None = None
_installed: dict[int, Any] = {}  # signal -> the handler it had before ours (chained)
_looked = 0.0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _stop_signal
    if _stop_signal is None:
        _stop_signal = signum
        name = signal.Signals(signum).name
        print(f"deltajobs: caught {name}: should_stop() is now true", file=sys.stderr, flush=True)
    before = _installed.get(signum)
    if callable(before):
        before(signum, frame)


def install(signals: tuple[signal.Signals, ...] = STOP_SIGNALS, *, chain: bool = True) -> None:
    """Catch `signals` from now on (from the first `should_stop()`), running the handler each had
    before ours too (`chain`; not where deltajobs' own code replaces submitit's). Only the main
    thread can do this (Python's rule): elsewhere the program's own handlers stay, and the wrapper's
    file still tells `should_stop()` of the warning."""
    for sig in signals:
        if sig in _installed:
            continue
        try:
            before = signal.signal(sig, _on_signal)
        except ValueError:
            return
        _installed[sig] = before if chain and before is not _on_signal else None  # never itself: a loop


def should_stop() -> bool:
    """True once the job was told to stop: its walltime is near (SIGUSR2, or the wrapper's file) or
    it is preempted or cancelled (SIGTERM). Save your state to DELTAJOBS_CHECKPOINT_DIR, then
    `sys.exit(85)` to be requeued (or just return, to end)."""
    global _stop_signal, _looked
    install()
    if _stop_signal is None and time.monotonic() - _looked >= CHECK_EVERY_S:
        _looked = time.monotonic()
        marker = os.environ.get(WARNED_FILE)
        if marker and os.path.exists(marker):
            _stop_signal = signal.SIGUSR2
            print("deltajobs: the walltime is near: should_stop() is now true", file=sys.stderr, flush=True)
    return _stop_signal is not None


def reset() -> None:
    """Forget a stop signal: a new attempt started in this same process (`--local`) has had none."""
    global _stop_signal, _looked
    _stop_signal, _looked = None, 0.0


def report(step: int | None = None, **metrics: Any) -> dict[str, Any]:
    """Record one set of metrics: `report(epoch=3, val_acc=0.981, train_loss=0.05)`.

    In a job (rank 0 only) it appends one JSON line to DELTAJOBS_METRICS, the file `results`,
    `--plot`, `sweep results`, TensorBoard and searches read; outside a job it prints the line.
    `epoch` (or `step`) orders the records; a search's objective is one of the keys. A write that
    fails (a full disk: ENOSPC, a quota: EDQUOT) leaves the file as it was and raises OSError
    naming it; the job then ends with the disk-full message and exit status 28.
    """
    record: dict[str, Any] = {}
    if step is not None:
        record["step"] = step
    for key, value in metrics.items():
        record[key] = _plain(key, value)
    record.setdefault("time", round(time.time(), 3))
    line = json.dumps(record, allow_nan=True)
    path = os.environ.get(METRICS)
    if not path:
        print(f"report: {line}", flush=True)
        return record
    if os.environ.get("RANK", "0") != "0":
        return record
    append_line(path, line)  # whole lines even if a reader looks now, or the disk is full
    return record


def _plain(key: str, value: Any) -> Any:
    """A JSON value: numbers (tensors and numpy scalars via .item()), strings, booleans."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value  # NaN and inf too: json writes them as NaN/Infinity, which results shows as nan
    raise TypeError(f"report({key}=...): {type(value).__name__} is not a number or a string")


if os.environ.get(RUN_DIR) and not os.environ.get(WARNED_FILE):  # SLURM's SIGUSR2 comes to us directly
    install((signal.SIGUSR2,))
