"""One trial of a search over a user's script or command: run the program with the trial's
parameters as arguments (`--lr 0.0012`, per `run.param_style`), in the trial's run directory, under
the contract of every deltajobs job (`deltajobs.injob.contract`: DELTAJOBS_* variables, signals, exit 85).

While it runs, the new lines of its metrics file (DELTAJOBS_METRICS, written by `deltajobs.report`)
are read every POLL_S seconds; each record that holds the objective is reported to the trial at its
step (`epoch`, else `step`, else the record's position, from 1), so that the pruner can judge it.
When the pruner says prune, the program is stopped through the same signal contract as a cancel:
SIGTERM (its `should_stop()` turns true), PRUNE_GRACE_S to end, then SIGKILL of its process group.
A finished trial's value is the objective of its last report, as for the packaged trainer.

The worker's own stop signals are passed on (the walltime warning as the program listens for it,
`deltajobs.injob.warning`; INT becomes TERM; TERM stays TERM): a program that then
ends, however (85, 0, killed), leaves the trial interrupted, to be run again (DELTAJOBS_RESTART_COUNT
one higher, the same run directory) by the worker after its requeue or by the worker that adopts it.
Exit 85 unasked starts the program again here, up to resources.max_requeues.

Importing this module must stay cheap (every search worker may import it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltajobs.injob import requeue, warning
from deltajobs.injob.job import record_attempt
from deltajobs.payloads.config import ParamStyle, param_args
from deltajobs.payloads.runner import METRICS_FILE, _child_setup, read_metrics, task_env
from deltajobs.sweep.search import check_searchable, heartbeat, tell

if TYPE_CHECKING:
    from deltajobs.spec.resolve import ResolvedJob
    from deltajobs.sweep.search import SearchSpec

PARAM_PREFIX = "run.params."
POLL_S = 0.25  # how often the metrics file is read while the program runs
PRUNE_GRACE_S = 10.0  # how long a pruned (or cancelled) program has to end after SIGTERM
REQUEUE_MARGIN_S = 15  # of the timeout warning's grace, what the worker keeps to requeue itself
OUTPUT_LOG = "output.log"  # the program's stdout and stderr, in the trial's run directory


@dataclass(frozen=True)
class TrialProgram:
    """What a search's workers run for each trial: the program with its fixed arguments (from the
    submit host: the script in the search's snapshot), to which a trial's parameters are appended."""

    argv: list[str]  # the program, its own words and run.args
    params: dict[str, Any]  # run.params the spec fixes; a trial's parameters come after them
    param_style: ParamStyle
    workdir: str
    gpus_per_node: int
    max_requeues: int
    signal_grace: int

    @classmethod
    def of(cls, resolved: ResolvedJob, code_dir: Path) -> TrialProgram | None:
        """The program of a resolved script or command job whose snapshot lies in `code_dir`; None
        for the packaged trainer (its worker trains in-process)."""
        from deltajobs.payloads.program import ProgramPayload

        check_searchable(resolved)
        payload = resolved.payload
        if not isinstance(payload, ProgramPayload):
            return None
        run, res = payload.run, resolved.spec.resources
        return cls(
            argv=[*payload.program(code_dir), *run.args],
            params=dict(run.params),
            param_style=run.param_style,
            workdir=str(payload.workdir),
            gpus_per_node=res.gpus_per_node,
            max_requeues=res.max_requeues,
            signal_grace=res.signal_grace,
        )

    def argv_for(self, params: dict[str, Any]) -> list[str]:
        """The program's argv for a trial: `{"run.params.lr": 0.0012}` appends `--lr 0.0012`."""
        values = {**self.params, **{key.removeprefix(PARAM_PREFIX): value for key, value in params.items()}}
        return [*self.argv, *param_args(values, self.param_style)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialProgram:
        return cls(**data)


@dataclass(frozen=True)
class ProgramEnd:
    """How a trial's program ended: completed, pruned, interrupted or failed (with why)."""

    outcome: str
    history: list[dict[str, Any]]
    message: str = ""


class MetricsTail:
    """The records appended to a metrics file since the last look (whole lines only), with each
    record's position in the file, from 1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0

    def skip_existing(self) -> list[tuple[int, dict[str, Any]]]:
        """Start after what is there (a resumed trial's records were reported by its first run)."""
        return self.new_records()

    def new_records(self) -> list[tuple[int, dict[str, Any]]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        self.offset += end
        records = []
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                self.count += 1
                records.append((self.count, record))
        return records


def step_of(record: dict[str, Any], position: int) -> int:
    """A record's step for the pruner: its `epoch`, else its `step`, else its position in the file."""
    for key in ("epoch", "step"):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
    return position


def objective_value(record: dict[str, Any], objective: str) -> float | None:
    value = record.get(objective)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class ProgramRun:
    """Run a trial's program in `run_dir` until it ends; `report(value, step)` gets each new value of
    the objective and returns True to prune; `stop_signal()` is the worker's stop signal, if any."""

    def __init__(
        self,
        program: TrialProgram,
        params: dict[str, Any],
        run_dir: Path,
        objective: str,
        report: Callable[[float, int], bool],
        stop_signal: Callable[[], int | None],
        prune_grace: float = PRUNE_GRACE_S,
    ) -> None:
        self.program, self.run_dir, self.objective = program, run_dir, objective
        self.argv = program.argv_for(params)
        self.report, self.stop_signal, self.prune_grace = report, stop_signal, prune_grace
        self.tail = MetricsTail(run_dir / METRICS_FILE)
        self.last_step = -1
        self.prune = False  # the pruner said so
        self.pruned = False  # ... and the program was told
        self.restarted = 0  # the attempt running now (its warning file)

    @property
    def name(self) -> str:
        """The program in messages: its script (train.py), else its first word."""
        words = [Path(word).name for word in self.argv]
        return next((word for word in words[:3] if word.endswith(".py")), words[0])

    def run(self) -> ProgramEnd:
        for position, record in self.tail.skip_existing():
            if objective_value(record, self.objective) is not None:
                self.last_step = max(self.last_step, step_of(record, position))
        while True:
            restarted = record_attempt(self.run_dir)
            code = self._run_once(restarted)
            stopping = self.stop_signal()
            if self.pruned:
                return self._end("pruned")
            if code == requeue.EXIT_REQUEUE and stopping is None:
                if requeue.within_limit(restarted, self.program.max_requeues):
                    print(f"deltajobs: {self.name} asked for a requeue (exit 85): starting it again", flush=True)
                    continue
                why = f"asked for a requeue (exit 85) after {restarted} requeue(s): resources.max_requeues reached"
                return self._end("failed", f"{self.name} {why}")
            break
        if stopping is not None:  # even on exit 0: a program told to stop may have ended early
            return self._end("interrupted")
        if code == 0:
            return self._end("completed")
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return self._end("failed", f"{self.name} was killed by {name}{self._last_output()}")
        return self._end("failed", f"{self.name} exited with status {code}{self._last_output()}")

    def _run_once(self, restarted: int) -> int:
        self.restarted = restarted
        env = task_env(self.run_dir, restarted, self.program.gpus_per_node, {})
        log = self.run_dir / OUTPUT_LOG
        with open(log, "ab") as out:
            out.write(f"deltajobs: running {shlex.join(self.argv)} (attempt {restarted + 1})\n".encode())
            out.flush()
            try:  # its own session: a kill after the grace takes its children too
                child = subprocess.Popen(
                    self.argv,
                    cwd=self.program.workdir,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_child_setup,
                    start_new_session=True,
                )
            except OSError as err:
                raise RuntimeError(f"cannot start {self.argv[0]!r}: {err.strerror}") from None
        try:
            return self._watch(child)
        finally:
            if child.poll() is None:
                _kill_group(child, signal.SIGKILL)
                child.wait()

    def _watch(self, child: subprocess.Popen[bytes]) -> int:
        """Wait for the program, reporting as it goes; pass on stop signals; stop it when pruned."""
        forwarded: set[int] = set()
        told = False  # the warning reached a process of the program that listens (`injob.warning`)
        deadline = math.inf  # when the program gets SIGKILL
        while True:
            try:
                code: int | None = child.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                code = None
            self._read_reports(ended=code is not None)
            if code is not None:
                return code
            now = time.monotonic()
            signum = self.stop_signal()
            if warning.is_warning(signum) and not told:  # as it listens for it; again until it does
                sent = warning.pass_on(child.pid)
                if sent or signum not in forwarded:
                    print(warning.describe(sent, self.name), flush=True)
                told = bool(sent)
            if signum is not None and signum not in forwarded:
                forwarded.add(signum)
                if warning.is_warning(signum):  # after the signal: a stalled filesystem must not delay it
                    warning.leave_marker(str(warning.marker(self.run_dir, self.restarted)))
                else:
                    _send(child, signal.SIGTERM if signum == signal.SIGINT else signum)
                deadline = min(deadline, now + self._stop_grace(signum))
            if self.prune and not self.pruned:
                self.pruned = True
                grace = f"SIGTERM, SIGKILL in {self.prune_grace:g}s"
                print(f"deltajobs: pruned at step {self.last_step}: stopping {self.name} ({grace})", flush=True)
                _send(child, signal.SIGTERM)
                deadline = min(deadline, now + self.prune_grace)
            if now > deadline:
                print(f"deltajobs: {self.name} did not end in time: SIGKILL", flush=True)
                _kill_group(child, signal.SIGKILL)
                deadline = math.inf

    def _read_reports(self, ended: bool) -> None:
        for position, record in self.tail.new_records():
            value = objective_value(record, self.objective)
            step = step_of(record, position)
            if value is None or step <= self.last_step:
                continue  # a step the trial has (a restarted program repeats its epochs)
            self.last_step = step
            if self.report(value, step) and not ended:  # a program that has ended is not pruned
                self.prune = True

    def _stop_grace(self, signum: int) -> float:
        """USR2 (the walltime is near): most of the warning, to save its state; else PRUNE_GRACE_S."""
        if warning.is_warning(signum):
            return max(self.prune_grace, self.program.signal_grace - REQUEUE_MARGIN_S)
        return self.prune_grace

    def _end(self, outcome: str, message: str = "") -> ProgramEnd:
        return ProgramEnd(outcome, read_metrics(self.run_dir / METRICS_FILE), message)

    def _last_output(self) -> str:
        try:
            lines = (self.run_dir / OUTPUT_LOG).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        return f" ({last[:200]}; see {self.run_dir / OUTPUT_LOG})" if last else ""


def final_value(history: list[dict[str, Any]], objective: str) -> tuple[float | None, str]:
    """A finished trial's value, the objective of its last report, or why there is none (one line)."""
    values = [record[objective] for record in history if objective in record]
    if not values:
        if not history:
            return None, f"the program reported nothing; call deltajobs.report({objective}=...) each epoch"
        keys = sorted({key for record in history for key in record} - {"time"})
        return None, f"the program reported no {objective!r}; it reported: {', '.join(keys)}"
    last = values[-1]
    if isinstance(last, bool) or not isinstance(last, int | float) or not math.isfinite(last):
        return None, f"the program's last {objective} is {last!r}, not a finite number"
    return float(last), ""


def run_program_trial(
    program: TrialProgram,
    study: Any,
    search: SearchSpec,
    trial: Any,
    params: dict[str, Any],
    run_dir: Path,
    stop_signal: Callable[[], int | None],
) -> str:
    """Run one trial's program; tell the study how it ended. "interrupted" leaves it RUNNING."""

    def report(value: float, step: int) -> bool:
        trial.report(value, step)
        trial.set_user_attr("heartbeat", time.time())
        return bool(trial.should_prune())

    print(f"deltajobs: trial {trial.number}: output in {run_dir / OUTPUT_LOG}", flush=True)
    with heartbeat(trial):
        end = ProgramRun(program, params, run_dir, search.objective, report, stop_signal).run()
    reported = {step_of(r, i) for i, r in enumerate(end.history, 1) if objective_value(r, search.objective) is not None}
    trial.set_user_attr("epochs", len(reported))
    trial.set_user_attr("run_dir", str(run_dir))
    tests = [r["test_acc"] for r in end.history if objective_value(r, "test_acc") is not None]
    trial.set_user_attr("test_acc", tests[-1] if tests else None)
    if end.outcome == "interrupted":
        return "interrupted"
    if end.outcome == "pruned":
        tell(study, trial, state="PRUNED")
        return "pruned"
    value, message = final_value(end.history, search.objective) if end.outcome == "completed" else (None, end.message)
    if value is None:
        print(f"deltajobs: trial {trial.number} failed: {message}", flush=True)
        trial.set_user_attr("error", message[:500])
        tell(study, trial, state="FAIL")
        return "failed"
    tell(study, trial, value)
    return "completed"


def _send(child: subprocess.Popen[bytes], signum: int) -> None:
    if child.poll() is None:
        child.send_signal(signum)


def _kill_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)  # its own session: the group is the program and its children
    except (ProcessLookupError, PermissionError):
        _send(child, signum)
