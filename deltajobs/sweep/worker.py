"""A search worker: what each task of a search's job array runs. It asks the shared study for a
trial, trains it (reporting the objective every epoch, so the pruner can stop it), tells the
result, and asks again until the study has its trials, the walltime is nearly used, or the SU
budget would be crossed. Workers never wait for each other. A search of a user's script or command
runs its program for each trial instead of training (`program_trial.py`), with the same faults.

Faults:
- SLURM's timeout warning (USR2): the trial checkpoints, the worker requeues itself and, restarted,
  resumes that trial from its checkpoint (its state file `workers/task-K.json` names the trial);
- preemption or `sweep cancel` (TERM; INT locally): the trial checkpoints and is *released*: the next worker
  that starts, in this sweep or after `sweep resume`, adopts it and resumes it;
- a worker that dies without a word: it stops stamping its trial's heartbeat; after STALE_S any
  worker marks the trial failed and enqueues it again, once.

Importing this module must stay cheap (the job unpickles it): optuna and torch load in `__call__`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from deltajobs.clusters.units import parse_walltime
from deltajobs.injob import warning
from deltajobs.injob.diskspace import DiskFullError
from deltajobs.injob.job import StopFlag, record_attempt
from deltajobs.injob.ranks import global_rank
from deltajobs.osutil import write_atomic
from deltajobs.payloads.trainer_job import TrainJob
from deltajobs.sweep.optuna_private import trial_by_number
from deltajobs.sweep.search import STALE_S, WORKERS_DIR, SearchSpec, heartbeat, tell

SWEEP_RECORD = "sweep-row.json"  # the sweep's row in its directory (registry.records.SWEEP_RECORD)
RETRY_OF = "retry_of"  # user attr of a trial enqueued again after its worker vanished: the lost one
RELEASED = "released-"  # workers/released-task-K.json: a trial task K let go, for any worker to adopt


class SearchWorker(TrainJob):
    """Array task `task` of a search over `search` in `sweep_dir`; `spec` is the job without params;
    `program` (a `program_trial.TrialProgram` as a dict) the user's program each trial runs, if any."""

    program: dict[str, Any] | None = None  # also for a worker pickled before searches ran scripts

    def __init__(
        self,
        spec: dict[str, Any],
        sweep_dir: str,
        search: dict[str, Any],
        task: int,
        workers: int,
        program: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(spec, str(Path(sweep_dir) / WORKERS_DIR / f"task-{task}"), spec["resources"]["max_requeues"])
        self.sweep_dir, self.search, self.task, self.workers = sweep_dir, search, task, workers
        self.program = program

    @property
    def state_path(self) -> Path:
        return Path(self.sweep_dir) / WORKERS_DIR / f"task-{self.task}.json"

    def __call__(self) -> dict[str, Any]:
        from deltajobs.sweep.search import load_study

        started = time.time()
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        restarted = record_attempt(Path(self.run_dir))
        # USR2 (URG for a script's trials): SLURM's timeout warning; TERM: preemption or scancel; INT: a local cancel.
        stop = StopFlag((*warning.WARNINGS, signal.SIGTERM, signal.SIGINT)).install()
        search = SearchSpec.from_dict(self.search)
        study = load_study(Path(self.sweep_dir), search, self.task)
        done: list[int] = []
        while not stop():
            reap_stale(study)
            number = self.resume_own()
            number = self.adopt(study) if number is None else number
            trial = trial_by_number(study, number) if number is not None else None
            if trial is None:
                with ask_lock(Path(self.sweep_dir)):  # one worker at a time decides and asks: never N + 1
                    trial = study.ask() if self.may_start(study, search, started) else None
                if trial is None:
                    break
            self.claim(trial.number)
            try:
                outcome = self.run_trial(study, search, trial, stop)
            except DiskFullError as err:
                self.stop_on_full_disk(trial.number, err)
            if outcome == "interrupted":
                self.claim(trial.number, released=not warning.is_warning(stop.signal))  # requeued: keep it
                self._after_interrupt(stop.signal, restarted)
                return {"status": "interrupted", "trials": done}
            self.release()
            done.append(trial.number)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # a late warning must not fail a finished worker
        return {"status": "completed", "trials": done}

    def stop_on_full_disk(self, number: int, err: DiskFullError) -> NoReturn:
        """A full disk or quota (as TrainJob ends): the trial is released, so that a worker of
        `sweep resume` adopts it from its checkpoint once space is freed; one line, exit 28."""
        with contextlib.suppress(OSError):  # the disk is full: the state file may not change
            self.claim(number, released=True)
        sweep_id = (_read_json(Path(self.sweep_dir) / SWEEP_RECORD) or {}).get("sweep_id", Path(self.sweep_dir).name)
        err.again = f"`deltajobs sweep resume {sweep_id}` continues trial {number} from its checkpoint"
        if global_rank() == 0:
            print(f"deltajobs: worker {self.task}: trial {number}: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)

    # -- which trial ----------------------------------------------------------------------------------

    @property
    def released_path(self) -> Path:
        return self.state_path.with_name(f"{RELEASED}{self.state_path.name}")

    def resume_own(self) -> int | None:
        """The trial this task ran before it was requeued (its claim) or preempted (its released
        claim, unless another worker adopted it first), taken by the same atomic rename as `adopt`."""
        number = self._take(self.state_path)
        return self._take(self.released_path) if number is None else number

    def adopt(self, study: Any) -> int | None:
        """A trial another worker released (preempted, cancelled): the first to rename its released
        claim wins. A worker's live claim (`task-K.json`) is never taken: an owner that took its
        trial back and runs it again keeps it. (`task-K.json` saying released: from before.)"""
        folder = self.state_path.parent
        legacy = [p for p in sorted(folder.glob("task-*.json")) if p != self.state_path]
        for path in [*sorted(folder.glob(f"{RELEASED}task-*.json")), *legacy]:
            if path in legacy and not (_read_json(path) or {}).get("released"):
                continue
            number = self._take(path, released=path in legacy)
            if number is not None and _is_running(study, number):
                return number
        return None

    def _take(self, path: Path, released: bool = False) -> int | None:
        """The trial a state file names, if this process is the one that renames it away;
        `released`: only if the file it took says so (else it is put back, never over a newer one)."""
        taken = path.with_name(f"taken-{path.stem}-{os.getpid()}.json")
        try:
            path.rename(taken)  # atomic: exactly one process takes it
        except FileNotFoundError:
            return None
        state = _read_json(taken)
        if released and not (state or {}).get("released"):
            with contextlib.suppress(FileExistsError):
                os.link(taken, path)
            taken.unlink(missing_ok=True)
            return None
        taken.unlink(missing_ok=True)
        return int(state["trial"]) if state and state.get("trial") is not None else None

    def claim(self, number: int, released: bool = False) -> None:
        """Claim trial `number` in `task-K.json`; `released`: let it go, in one atomic rename to
        `released-task-K.json`, the only state file other workers take."""
        state = {"trial": number, "released": released, "job_id": os.environ.get("SLURM_JOB_ID")}
        _write_json(self.state_path, state)
        if released:
            with contextlib.suppress(FileNotFoundError):  # a worker of a version before took it already
                self.state_path.replace(self.released_path)

    def release(self) -> None:
        self.state_path.unlink(missing_ok=True)

    def may_start(self, study: Any, search: SearchSpec, started: float) -> bool:
        """Whether a new trial may start: trials left, walltime left, budget left at its worst case."""
        trials = study.get_trials(deepcopy=False)
        if counted_trials(trials) >= search.trials and not any(t.state.name == "WAITING" for t in trials):
            return False
        walltime = parse_walltime(self.spec["resources"]["time"])
        seen = worst_trial_seconds(trials)  # None until a trial finished: then a trial may run out of
        limit = walltime - self.spec["resources"]["signal_grace"]  # time, checkpoint and requeue
        if seen is not None and time.time() - started + seen > limit:
            print(f"deltajobs: worker {self.task}: no time left for another trial (~{seen:.0f}s)", flush=True)
            return False
        worst = seen if seen is not None else float(walltime)
        if search.budget_su is not None:
            tasks = spent_by_task()
            spent = sum(tasks)
            tasks += [0.0] * max(0, self.workers - len(tasks))  # workers sacct has not seen start yet
            trial_su = worst * search.su_per_hour / 3600  # every worker may start one more trial
            worst_su = sum(max(task + trial_su, search.min_su_per_task) for task in tasks)  # each billed the minimum
            if worst_su > search.budget_su:
                print(
                    f"deltajobs: worker {self.task}: {spent:.3f} SU spent; another trial could reach "
                    f"{worst_su:.3f} SU, over the budget of {search.budget_su:g} SU",
                    flush=True,
                )
                return False
        return True

    # -- one trial ------------------------------------------------------------------------------------

    def run_trial(self, study: Any, search: SearchSpec, trial: Any, stop: StopFlag) -> str:
        """Run one trial into trial-NNNN/; tell the study how it ended. "interrupted" leaves it RUNNING."""
        from deltajobs.sweep.search import suggest

        params = suggest(trial, search)
        run_dir = Path(self.sweep_dir) / f"trial-{trial.number:04d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "params.json").write_text(json.dumps(params, indent=1) + "\n")
        print(f"deltajobs: worker {self.task}: trial {trial.number} {params}", flush=True)
        if self.program is not None:
            from deltajobs.sweep.program_trial import TrialProgram, run_program_trial

            program = TrialProgram.from_dict(self.program)
            return run_program_trial(program, study, search, trial, params, run_dir, lambda: stop.signal)
        return self.train_trial(study, search, trial, params, run_dir, stop)

    def train_trial(
        self, study: Any, search: SearchSpec, trial: Any, params: dict[str, Any], run_dir: Path, stop: StopFlag
    ) -> str:
        """Train one trial with the packaged trainer, reporting the objective every epoch."""
        from deltajobs.schema import from_dict
        from deltajobs.sweep.plan import with_params
        from deltajobs.train.api import run_training
        from deltajobs.train.config import TrainConfig

        pruned = threading.Event()

        def report(record: dict[str, Any]) -> None:
            value = record.get(search.objective)
            if value is None or not math.isfinite(value):
                return
            trial.report(value, record["epoch"])
            trial.set_user_attr("heartbeat", time.time())
            if trial.should_prune():
                pruned.set()

        with heartbeat(trial):
            try:
                config = from_dict(TrainConfig, with_params({"train": self.spec["train"]}, params)["train"], "train")
                results = run_training(
                    config,
                    run_dir,
                    resume=(run_dir / "checkpoint.pt").exists(),
                    should_stop=lambda: stop() or pruned.is_set(),
                    on_epoch=report,
                )
            except DiskFullError:
                raise  # not the trial's fault: the worker ends with exit 28 and the trial waits (`__call__`)
            except Exception as err:  # noqa: BLE001 - a bad trial fails alone; the search goes on
                print(f"deltajobs: trial {trial.number} failed: {err}", flush=True)
                trial.set_user_attr("error", str(err)[:500])
                tell(study, trial, state="FAIL")
                return "failed"
        history = results.get("history") or []
        trial.set_user_attr("epochs", len(history))
        trial.set_user_attr("test_acc", results.get("test_acc"))
        trial.set_user_attr("run_dir", str(run_dir))
        if results.get("status") == "interrupted" and not pruned.is_set():
            return "interrupted"
        if pruned.is_set() and results.get("status") == "interrupted":
            tell(study, trial, state="PRUNED")
            return "pruned"
        values = [h.get(search.objective) for h in history if h.get(search.objective) is not None]
        tell(study, trial, values[-1] if values else math.nan)  # NaN: Optuna records a failure
        return "completed"


# -- the study's housekeeping -----------------------------------------------------------------------


def counted_trials(trials: list[Any]) -> int:
    """Trials that count towards --trials: started or finished, not a lost one that was retried."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return sum(1 for t in trials if t.state.name != "WAITING" and t.number not in retried)


def reap_stale(study: Any, now: float | None = None, stale_s: float = STALE_S) -> list[int]:
    """Fail the RUNNING trials whose worker stopped stamping them, and enqueue each again, once."""
    now = now or time.time()
    reaped = []
    for frozen in study.get_trials(deepcopy=False):
        if frozen.state.name != "RUNNING":
            continue
        stamp = frozen.user_attrs.get("heartbeat") or frozen.datetime_start.timestamp()
        if now - stamp < stale_s:
            continue
        try:
            tell(study, frozen.number, state="FAIL")
        except (RuntimeError, ValueError):
            continue  # another worker reaped it first
        reaped.append(frozen.number)
        if frozen.user_attrs.get(RETRY_OF) is None:  # a retry that is lost too stays failed
            study.enqueue_trial(frozen.params, user_attrs={RETRY_OF: frozen.number})
    return reaped


@contextlib.contextmanager
def ask_lock(sweep_dir: Path) -> Any:
    """Held while a worker counts the trials and asks for one, so that workers asking at the same
    moment cannot both take the last trial. Optuna's JournalFileOpenLock: an exclusive create of a
    lock file, which works on NFS and Lustre; a lock left by a killed worker goes after 30 s."""
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(str(sweep_dir / "ask"))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def worst_trial_seconds(trials: list[Any]) -> float | None:
    """The longest a trial that ran to its last epoch took, or None before one did (pruned and
    failed trials end early: they say nothing about the worst case)."""
    spans = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state.name == "COMPLETE" and t.datetime_complete is not None and t.datetime_start is not None
    ]
    return max(spans) if spans else None


def spent_su() -> float:
    """SU the array has spent so far: sacct's charge of its tasks (each attempt)."""
    return sum(spent_by_task())


def spent_by_task() -> list[float]:
    """SU each task of the array has spent so far: sacct's charge (each attempt). slurmdbd learns of a
    task's start a little after it, so a task just started may be missing: the budget check counts
    every worker's worst case, which covers it."""
    from deltajobs.slurm import commands as slurm

    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return [r.su for r in slurm.sacct([array])] if array else []


def _is_running(study: Any, number: int) -> bool:
    return any(t.number == number and t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data))
