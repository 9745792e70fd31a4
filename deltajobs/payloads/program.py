"""A user's own program as a payload: a Python script with its arguments (`run.script`), or any
command (`run.command`). Each task runs `runner.CommandJob`: the program as an argv list, in the
directory `submit` ran in, with the contract's environment and signals (`deltajobs.injob.contract`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltajobs.errors import SpecError
from deltajobs.injob import warning
from deltajobs.payloads import snapshot
from deltajobs.payloads.base import UserPayload
from deltajobs.payloads.config import param_args


class ProgramPayload(UserPayload):
    """What script and command share: arguments, parameters, the working directory, the task."""

    # SLURM's warning goes to every process of the job: SIGURG, which a program ignores unless it
    # catches it; the task wrapper passes it on as the signal the program listens for (injob.warning).
    warning_signal = warning.SLURM_WARNING_NAME

    def program(self, run_dir: Path | None) -> list[str]:
        """The program and its own leading words: `python train.py`, `python -m pkg`."""
        raise NotImplementedError

    def argv(self, run_dir: Path | None = None) -> list[str]:
        return [*self.program(run_dir), *self.run.args, *param_args(self.run.params, self.run.param_style)]

    def describe(self) -> str:
        return shlex.join(self.argv())

    def check(self) -> None:
        if not self.workdir.is_dir():
            raise SpecError("run.workdir", f"{str(self.workdir)!r} is not a directory")

    def task(self, run_dir: Path) -> Callable[[], Any]:
        from deltajobs.payloads.runner import CommandJob

        res = self.job.spec.resources
        return CommandJob(
            self.argv(run_dir),
            str(self.workdir),
            str(run_dir),
            res.max_requeues,
            self.kind,
            dict(self.job.spec.environment.env),
            res.gpus_per_node,
            shown=self.describe(),
        )

    def bind_paths(self, run_dir: Path) -> list[str]:
        return [str(self.workdir)]

    def sweep_key(self, key: str) -> str:
        if key.startswith("run.params."):
            key = key.removeprefix("run.params.")
        if not key or "." in key or not key.replace("-", "_").replace("_", "a").isalnum():
            raise SpecError(
                key, f"a sweep of {self.kind} arguments takes plain names (--grid lr=1e-3,3e-3 passes --lr VALUE)"
            )
        return f"run.params.{key}"


class ScriptPayload(ProgramPayload):
    kind = "script"

    @property
    def script(self) -> Path:
        return Path(str(self.run.script)).expanduser().absolute()

    @property
    def python(self) -> str:
        from deltajobs.payloads.pyenv import job_python

        return self.run.python or job_python(self.job).python

    def program(self, run_dir: Path | None) -> list[str]:
        script = self.script
        if run_dir is not None and self.run.snapshot:
            root = self.code_from or snapshot.plan(script).root
            script = run_dir / snapshot.CODE_DIR / script.relative_to(root)
        return [self.python, str(script)]

    @property
    def code_from(self) -> Path | None:
        """An earlier run's snapshot this one copies (`deltajobs rerun`), else None."""
        return Path(self.run.code_from) if self.run.code_from else None

    def describe(self) -> str:
        """`python train.py --lr 0.001`: the script relative to the working directory where it lies below it."""
        script, code = self.script, self.code_from
        if code is not None and script.is_relative_to(code):  # a rerun: the script as it lies in its snapshot
            shown = script.relative_to(code)
        else:
            shown = script.relative_to(self.workdir) if script.is_relative_to(self.workdir) else script
        return shlex.join(["python", str(shown), *self.argv()[2:]])

    def check(self) -> None:
        super().check()
        script = self.script
        if not script.is_file():
            raise SpecError("run.script", f"no such file: {self.run.script}")
        if script.suffix == ".py":
            compile_check(script)
        if self.code_from is not None:
            if not script.is_relative_to(self.code_from) or not self.code_from.is_dir():
                raise SpecError("run.code_from", f"{self.code_from} is not a code snapshot holding {script}")
        elif self.run.snapshot:
            snapshot.plan(script)  # too big: refused here, before anything exists

    def warnings(self) -> list[str]:
        """A Lightning Trainer(devices=..., num_nodes=...) that disagrees with the job's tasks and
        nodes, read from the script's source (`frameworks`: nothing of it is imported)."""
        from deltajobs.payloads.frameworks import Shape, lightning_warnings

        script = self.script
        try:
            source = script.read_bytes() if script.suffix == ".py" else b""
        except OSError:
            return []
        if b"lightning" not in source:  # the cheap test: most scripts are not parsed again
            return []
        res, spec = self.job.spec.resources, self.job.spec
        shape = Shape(res.ntasks_per_node, res.nodes, res.gpus_per_node, res.tasks_per_node is not None, spec.name)
        shown = script.relative_to(self.workdir) if script.is_relative_to(self.workdir) else script
        return lightning_warnings(source, str(shown), shape, preset={*os.environ, *spec.environment.env})

    def prepare(self, run_dir: Path) -> None:
        if self.code_from is not None:
            snapshot.copy_run(self.code_from, run_dir)  # a rerun: the same code, and what was known of it
        elif self.run.snapshot:
            snapshot.take(snapshot.plan(self.script), run_dir)

    def code_root(self) -> Path | None:
        return None if self.code_from is not None else self.script.parent

    @property
    def snapshot(self) -> bool:
        return bool(self.run.snapshot)

    def bind_paths(self, run_dir: Path) -> list[str]:
        return [*super().bind_paths(run_dir), str(self.script.parent)]


class CommandPayload(ProgramPayload):
    kind = "command"

    def program(self, run_dir: Path | None) -> list[str]:
        return split_command(str(self.run.command))

    def check(self) -> None:
        super().check()
        split_command(str(self.run.command))


def split_command(text: str) -> list[str]:
    """Split a command like a shell splits words (quotes respected); nothing is ever run by a
    shell, so `;`, `|`, `$(...)` and `*` are just characters of an argument."""
    try:
        argv = shlex.split(text)
    except ValueError as err:
        raise SpecError("run.command", f"{text!r} cannot be split into words ({err})") from None
    if not argv:
        raise SpecError("run.command", "is empty; give the program and its arguments")
    return argv


def compile_check(script: Path) -> None:
    """A Python script that does not compile is refused with its file, line and message."""
    try:
        source = script.read_bytes()
    except OSError as err:
        raise SpecError("run.script", f"{script} cannot be read ({err.strerror})") from None
    try:  # what py_compile does, without writing a .pyc anywhere
        compile(source, str(script), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as err:
        line = getattr(err, "lineno", None)
        message = getattr(err, "msg", None) or str(err)
        where = f"{script}, line {line}" if line else str(script)
        raise SpecError("run.script", f"{where}: {message}") from None
