"""The Python API: submit a function or a script from Python, as `deltajobs submit` does.

    from deltajobs import Executor
    ex = Executor(cluster="delta", partition="gpuA100x4", gpus=1, time="00:30:00", account="bbka-delta-gpu")
    job = ex.submit(train, lr=1e-3)   # validated, priced and recorded like the command line's jobs
    job.result()                      # waits; the function's return value, or a DeltaJobsError

Every submission takes the command line's path: `spec.resolve_job` (the same SpecErrors, naming the
field and the valid choices), the budget guard, then `lifecycle.submit_job` (run directory, sbatch
or the local backend, a registry row: `deltajobs status` lists the job). The function and its
arguments are pickled first: what cannot be pickled is refused before anything exists.
What the function may do inside the job (metrics, requeue) is `deltajobs.payloads.function`'s
contract. Importing this module is cheap (no torch, typer or submitit): the rest loads on submit.
"""

from __future__ import annotations

import copy
import os
import pickle
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltajobs.errors import DeltaJobsError, SpecError

if TYPE_CHECKING:
    from deltajobs.registry.schema import JobRow
    from deltajobs.spec.resolve import Overrides
    from deltajobs.spec.settings import Settings

RESULT_WAIT_S = 30.0  # how long a finished job's result pickle may take to appear (shared filesystems)


class JobFailedError(DeltaJobsError):
    """The function raised in the job: the last line of its traceback, and where the whole one is."""

    def __init__(self, job_id: str, traceback: str, log: Path) -> None:
        self.job_id = job_id
        self.traceback = traceback
        lines = [line for line in traceback.strip().splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "no traceback"
        super().__init__(f"job {job_id} failed: {last} (the traceback is in {log})")


@dataclass(kw_only=True)
class Executor:
    """Where and with what resources jobs run; `None` takes the cluster profile's default (the
    same layering as the command line: defaults < config < DELTAJOBS_* < these arguments)."""

    cluster: str | None = None  # a profile: delta, minidelta, ... (None: DELTAJOBS_CLUSTER or detected)
    partition: str | None = None  # "gpuA100x4", or "a,b" for whichever starts first
    gpus: int | None = None  # per node
    cpus: int | None = None  # per task
    mem: str | None = None  # per node: "32G"
    time: str | None = None  # walltime: "00:30:00"
    nodes: int | None = None
    account: str | None = None  # None: DELTAJOBS_ACCOUNT or the config's
    local: bool = False  # run on this machine (the local backend), as `--local`
    name: str | None = None  # the job name (None: the function's or the script's name)
    max_requeues: int | None = None  # resources.max_requeues (0: never requeue)
    env: Mapping[str, str] = field(default_factory=dict)  # environment.env of the job
    sets: Mapping[str, Any] = field(default_factory=dict)  # any other spec key: {"resources.constraint": "..."}
    yes: bool = False  # submit even over the budget guard's cap or balance, as `--yes`

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Run `fn(*args, **kwargs)` as a job; `Job.result()` returns its value."""
        from deltajobs.payloads import function

        call = function.pack(fn, args, kwargs)  # refused here, before anything exists
        run = {"function": call.name, "workdir": str(Path.cwd().absolute()), "snapshot": False}
        with function.submitting(call):
            return self._submit({"name": self.name or call.job_name, "run": run})

    def submit_script(self, script: str | os.PathLike[str], *args: Any, snapshot: bool = True) -> Job:
        """Run a Python script with its arguments as a job, as `deltajobs submit train.py -- ARGS`
        (a snapshot of its code unless `snapshot=False`); `Job.result()` returns its results.json."""
        from deltajobs.payloads.choose import command_line_spec

        path = Path(script).expanduser()
        if path.suffix != ".py":
            raise SpecError(
                "script", f"{str(script)!r} is not a Python script (.py); sbatch files go to `deltajobs submit`"
            )
        if not path.is_file():
            raise SpecError("script", f"no such file: {script}")
        raw = command_line_spec(str(path), [str(arg) for arg in args], None, snapshot=snapshot)
        assert isinstance(raw, dict)
        if self.name:
            raw["name"] = self.name
        return self._submit(raw)

    def _overrides(self) -> Overrides:
        """These arguments as the command line's flags (above the spec, as `--partition` is)."""
        from deltajobs.spec.resolve import Overrides

        return Overrides(
            account=self.account,
            partition=self.partition,
            nodes=self.nodes,
            gpus=self.gpus,
            cpus=self.cpus,
            mem=self.mem,
            time=self.time,
        )

    def _layered(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The raw spec with `env`, `max_requeues` and `sets` laid in."""
        from deltajobs.schema import apply_override, parse_override

        raw = copy.deepcopy(raw)
        for key, value in self.sets.items():
            parts, _ = parse_override(f"{key}=")  # the key as `--set` checks it
            apply_override(raw, parts, value)
        if self.max_requeues is not None:
            apply_override(raw, ["resources", "max_requeues"], self.max_requeues)
        for key, value in self.env.items():
            apply_override(raw, ["environment", "env", key], value)
        return raw

    def _submit(self, raw: dict[str, Any]) -> Job:
        from deltajobs import backends
        from deltajobs.charge.budget import check_budget
        from deltajobs.jobs.lifecycle import submit_job
        from deltajobs.spec.context import active_cluster, new_run_dir
        from deltajobs.spec.resolve import resolve_job
        from deltajobs.spec.settings import load_settings

        settings = load_settings()
        backend, note = backends.choose(self.local, settings)
        if note:
            warnings.warn(note, stacklevel=3)
        cluster = active_cluster(settings, self.cluster)
        resolved = resolve_job(
            self._layered(raw), self._overrides(), settings, cluster, require_account=backend.needs_account
        )
        estimate = check_budget(resolved, settings, self.yes) if backend.charges else 0.0  # nothing charged
        sub = submit_job(resolved, settings, new_run_dir(settings, resolved.spec.name), backend)
        return Job(sub.job_id, sub.run_dir, sub.log_path, sub.err_path, settings=settings, estimate_su=estimate)


def submit_script(script: str | os.PathLike[str], *args: Any, snapshot: bool = True, **executor: Any) -> Job:
    """`Executor(**executor).submit_script(script, *args)`: a Python script with its arguments as a job."""
    return Executor(**executor).submit_script(script, *args, snapshot=snapshot)


class Job:
    """A submitted job: its id, run directory and log, its state from the registry (as `deltajobs
    status` sees it), and what it returned."""

    def __init__(
        self,
        job_id: str,
        run_dir: Path,
        log_path: Path,
        err_path: Path,
        *,
        settings: Settings | None = None,
        estimate_su: float | None = None,
    ) -> None:
        from deltajobs.spec.settings import load_settings

        self.job_id = job_id
        self.run_dir = Path(run_dir)
        self.log_path = Path(log_path)
        self.err_path = Path(err_path)
        self.estimate_su = estimate_su  # the budget guard's worst case (0.0 on the local backend; None: attached)
        self.settings = settings or load_settings()

    @classmethod
    def attach(cls, job_id: str) -> Job:
        """A job submitted earlier, from the registry (NotFoundError if it holds no such id)."""
        row = _row(job_id, None)
        return cls(row.job_id, Path(row.run_dir), Path(row.log_path), Path(row.err_path))

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, run_dir={str(self.run_dir)!r})"

    @property
    def result_path(self) -> Path:
        """submitit's pickle of what task 0 returned, beside its log: ("success", value) or ("error", traceback)."""
        return self.log_path.with_name(self.log_path.name.replace("_log.out", "_result.pkl"))

    def state(self) -> str:
        """PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, ... (the registry, refreshed)."""
        return _row(self.job_id, self.settings).state

    def done(self) -> bool:
        return _row(self.job_id, self.settings).final

    def wait(self, poll: float = 2.0, timeout: float | None = None) -> str:
        """Block until the job is final; its final state. TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = _row(self.job_id, self.settings)
            if row.final:
                return row.state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job_id} is still {row.state} after {timeout:g} s")
            time.sleep(poll)

    def result(self, poll: float = 2.0, timeout: float | None = None) -> Any:
        """Wait, then what the function returned (a script: its results.json); JobFailedError with
        the last line of the traceback when it raised, DeltaJobsError when the job left no result."""
        state = self.wait(poll, timeout)
        path = self.result_path
        deadline = time.monotonic() + (RESULT_WAIT_S if state == "COMPLETED" else 0.0)
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not path.exists():
            from deltajobs.jobs.lifecycle import STATE_ADVICE

            advice = STATE_ADVICE.get(state, "see its log")
            raise DeltaJobsError(f"job {self.job_id} ended {state} without a result: {advice} ({self.err_path})")
        try:
            with path.open("rb") as handle:
                tag, value = pickle.load(handle)
        except Exception as err:  # noqa: BLE001 - unpickling raises anything (a class this process cannot import)
            raise DeltaJobsError(f"the result of job {self.job_id} cannot be loaded here: {err} ({path})") from None
        if tag != "success":
            raise JobFailedError(self.job_id, str(value), self.err_path)
        return value

    def cancel(self) -> bool:
        """Cancel the job if it is not final (as `deltajobs cancel`): True when it was stopped, False
        when it had ended already; DeltaJobsError when it was left alone (a local job whose process
        cannot be told apart from another's), saying why and what to do."""
        from deltajobs.jobs.lifecycle import cancel_jobs

        done = cancel_jobs(self.settings, [self.job_id])
        for job_id, why in done.refused.items():
            raise DeltaJobsError(f"{job_id}: not cancelled: {why}")
        return bool(done.cancelled)


def _row(job_id: str, settings: Settings | None) -> JobRow:
    """The job's registry row, brought up to date (one squeue and one sacct on SLURM)."""
    from deltajobs.jobs.lifecycle import status
    from deltajobs.spec.settings import load_settings

    return status(settings or load_settings(), [job_id]).rows[0]
