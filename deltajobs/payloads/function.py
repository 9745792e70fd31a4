"""A Python function as a payload: what `deltajobs.Executor.submit(fn, *args, **kwargs)` runs.

How the call reaches the job. `pack` pickles the function and its arguments once, with cloudpickle,
before anything exists (what cannot be pickled is refused there, naming the culprit). The spec
keeps only the function's name (`run.function: mymod.train`, display only), so the bytes travel
beside it: the Executor holds them in `submitting(call)` while it resolves and submits, and
`FunctionPayload.task` wraps them in a `FunctionJob`, the picklable call submitit runs in every task.
The job unpickles them only after putting the submitter's own import directories (its script's
directory, PYTHONPATH) on sys.path: a function from the user's module imports on the node as it
did at submit. Functions of `__main__` (a script, a notebook) travel by value, as cloudpickle does.

The contract inside the job is the one scripts have (`deltajobs.injob.contract`): DELTAJOBS_RUN_DIR,
DELTAJOBS_CHECKPOINT_DIR, DELTAJOBS_RESTART_COUNT, DELTAJOBS_METRICS and torchrun's ranks are set
in os.environ before the call, in the submit directory; `report()` feeds results.json. Requeue:
SIGUSR2 (the walltime is `signal_grace` seconds away) turns `should_stop()` true; a function that
saves its state and calls `sys.exit(85)` (`EXIT_REQUEUE`) is requeued, up to max_requeues times,
and called again with the same arguments and DELTAJOBS_RESTART_COUNT one higher (on SLURM the batch
script runs `scontrol requeue`; on this machine the next attempt starts at once in the same task).
A function that ignores the signal times out as usual. Any other `sys.exit(N)` fails the job.

Importing this module must stay cheap: every task imports it to unpickle its call.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltajobs.errors import SpecError
from deltajobs.injob import contract, requeue, warning
from deltajobs.payloads.base import UserPayload

REASON_CHARS = 200  # how much of a pickling error a SpecError quotes


@dataclass(frozen=True)
class PackedCall:
    """A function call as the job will receive it."""

    name: str  # module.qualname: run.function, the rendered script's comment, results.json
    data: bytes  # cloudpickle of (fn, args, kwargs)
    paths: tuple[str, ...]  # the submitter's own import directories, put first on the job's sys.path
    python: str  # the submitter's Python, major.minor: cloudpickle's bytes need the same in the job

    @property
    def job_name(self) -> str:
        """A default job name: the function's own name (`<lambda>` becomes `lambda`)."""
        from deltajobs.payloads.config import safe_name

        return safe_name(self.name.rsplit(".", 1)[-1])


_PENDING: ContextVar[PackedCall | None] = ContextVar("deltajobs_pending_call", default=None)


@contextmanager
def submitting(call: PackedCall) -> Iterator[None]:
    """While the Executor resolves and submits a job of `run.function: call.name`, its payload
    finds the call here (this thread or task only)."""
    token = _PENDING.set(call)
    try:
        yield
    finally:
        _PENDING.reset(token)


def pack(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> PackedCall:
    """The call `fn(*args, **kwargs)` as bytes; SpecError naming the part that cannot be pickled."""
    if not callable(fn):
        raise SpecError("function", f"{fn!r} is not callable; pass the function itself: ex.submit(train, ...)")
    name = qualified_name(fn)
    from submitit.helpers import Checkpointable

    if isinstance(fn, Checkpointable):
        raise SpecError(
            "function",
            f"{name} is a submitit Checkpointable, whose checkpoint() deltajobs never calls; deltajobs requeues "
            "a function that saves its state when should_stop() turns true and calls sys.exit(85)",
        )
    import cloudpickle

    try:
        data = cloudpickle.dumps((fn, tuple(args), dict(kwargs)))
    except Exception:  # noqa: BLE001 - pickling raises anything (TypeError, PicklingError, RecursionError, ...)
        raise unpicklable(fn, args, kwargs) from None
    return PackedCall(name, data, tuple(import_paths()), python_version())


def unpicklable(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> SpecError:
    """The SpecError for the first of fn, args, kwargs that cannot be pickled."""
    name = qualified_name(fn)
    parts: list[tuple[str, Any]] = [("function", fn)]
    parts += [(f"args[{i}]", value) for i, value in enumerate(args)]
    parts += [(f"kwargs.{key}", value) for key, value in kwargs.items()]
    for field, value in parts:
        reason = pickling_error(value)
        if reason is None:
            continue
        if field == "function":
            return SpecError(
                field,
                f"{name} cannot be pickled ({reason}); define it at module level and keep locks, open files, "
                "sockets and other live resources out of what it uses (create them inside the function)",
            )
        return SpecError(
            field,
            f"a {type(value).__name__} cannot be pickled ({reason}); pass plain data (numbers, strings, paths, "
            f"arrays) and open files or connections inside {name}",
        )
    return SpecError("function", f"the call of {name} cannot be pickled as a whole")


def pickling_error(value: Any) -> str | None:
    import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception as err:  # noqa: BLE001 - see pack
        text = f"{type(err).__name__}: {err}"
        return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."
    return None


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def qualified_name(fn: Callable[..., Any]) -> str:
    """`mymod.train`, `__main__.main.<locals>.<lambda>`; a callable object by its class."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


def import_paths() -> list[str]:
    """The submitter's own import directories: sys.path without the interpreter's library
    directories and installed packages ('' is the working directory)."""
    system = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    found: list[str] = []
    for entry in sys.path:
        path = Path(entry or os.getcwd()).absolute()
        if not path.is_dir() or str(path) in found:
            continue
        if "site-packages" in path.parts or "dist-packages" in path.parts:
            continue
        if any(path.resolve().is_relative_to(root) for root in system):
            continue
        found.append(str(path))
    return found


class FunctionPayload(UserPayload):
    kind = "function"
    requeue_from_batch = True  # the task writes the request, the batch script requeues (as for scripts)

    @property
    def call(self) -> PackedCall:
        call = _PENDING.get()
        if call is None or call.name != self.run.function:
            raise SpecError(
                "run.function",
                "a Python function is submitted from Python (from deltajobs import Executor); "
                "a spec names a script, command or sbatch file",
            )
        return call

    def describe(self) -> str:
        return f"{self.run.function}(...)"

    def check(self) -> None:
        if not self.workdir.is_dir():
            raise SpecError("run.workdir", f"{str(self.workdir)!r} is not a directory")
        self.call  # noqa: B018 - refuses a function that no Executor is submitting

    def task(self, run_dir: Path) -> Callable[[], Any]:
        res = self.job.spec.resources
        call = self.call
        env = dict(self.job.spec.environment.env)  # the batch script exports it too; the local backend does not
        return FunctionJob(
            call.data,
            call.name,
            call.paths,
            str(self.workdir),
            str(run_dir),
            res.max_requeues,
            res.gpus_per_node,
            env,
            call.python,
        )

    def bind_paths(self, run_dir: Path) -> list[str]:
        call = _PENDING.get()
        return [str(self.workdir), *(call.paths if call else ())]

    def sweep_key(self, key: str) -> str:
        raise SpecError(key, "a function is not swept from the command line; call Executor.submit once per point")


class FunctionJob:
    """Call the packed function in `workdir` for the run directory `run_dir` (each task of each attempt)."""

    def __init__(
        self,
        call: bytes,
        name: str,
        paths: tuple[str, ...],
        workdir: str,
        run_dir: str,
        max_requeues: int,
        gpus_per_node: int = 0,
        env: dict[str, str] | None = None,
        python: str = "",
    ) -> None:
        self.call = call
        self.name = name
        self.paths = paths
        self.workdir = workdir
        self.run_dir = run_dir
        self.max_requeues = max_requeues
        self.gpus_per_node = gpus_per_node
        self.env = env or {}
        self.python = python or python_version()

    def __call__(self) -> Any:
        from deltajobs.injob.job import record_attempt
        from deltajobs.injob.ranks import global_rank
        from deltajobs.payloads.runner import task_env

        run_dir = Path(self.run_dir)
        os.chdir(self.workdir)
        # the walltime warning turns should_stop() true, and no more (submitit's requeue is not chained)
        contract.install((signal.SIGUSR2,), chain=False)
        while True:
            restarted = record_attempt(run_dir)
            os.environ.update(task_env(run_dir, restarted, self.gpus_per_node, self.env))
            os.environ.pop(warning.WARNED_FILE, None)  # no wrapper passes the warning on: SLURM's USR2 comes
            contract.reset()  # a new attempt in this process has not been told to stop
            print(f"deltajobs: calling {self.name} in {self.workdir} (attempt {restarted + 1})", flush=True)
            start = time.time()
            try:
                value = self._call_once(main=global_rank() == 0)
            except SystemExit as stop:
                if stop.code not in (0, None, requeue.EXIT_REQUEUE):
                    raise RuntimeError(f"{self.name} called sys.exit({stop.code!r})") from None
                if stop.code == requeue.EXIT_REQUEUE:
                    self._ask_requeue(restarted)  # on SLURM this process exits; here the next attempt starts
                    continue
                value = None
            self._finish(run_dir, time.time() - start)
            return value

    def _call_once(self, main: bool) -> Any:
        from deltajobs.injob.gpu_usage import GPU_FILE, GpuSampler

        fn, args, kwargs = self._load()
        sampler = GpuSampler(Path(self.run_dir) / GPU_FILE).start() if main else None
        try:
            return fn(*args, **kwargs)
        finally:
            if sampler is not None:
                sampler.stop()

    def _load(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The function and fresh copies of its arguments (each attempt starts from what was submitted)."""
        if self.python != python_version():
            raise RuntimeError(
                f"{self.name} was pickled by Python {self.python}, and this job runs Python {python_version()} "
                f"({sys.executable}); submit from the Python the job runs (its venv or module)"
            )
        for path in reversed(self.paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        try:
            fn, args, kwargs = pickle.loads(self.call)
        except Exception as err:
            where = ", ".join(self.paths) or "the installed packages"
            raise RuntimeError(
                f"cannot load {self.name} in the job ({type(err).__name__}: {err}); what it needs must import "
                f"with the job's python ({sys.executable}), from {where}"
            ) from err
        return fn, args, kwargs

    def _finish(self, run_dir: Path, seconds: float) -> None:
        from deltajobs.payloads.runner import write_completed

        write_completed(run_dir, "function", self.name, seconds)

    def _ask_requeue(self, restarted: int) -> None:
        requeue.ask(self.name, "sys.exit(85)", "calling it again", restarted, self.max_requeues)
