"""A notebook job: JupyterLab on one compute node, in the job's own environment (`deltajobs notebook`).

    run:
      notebook: /u/me/project      # JupyterLab's root directory (and the job's working directory)
      args: [--idle, "1800"]       # deltajobs.injob.notebook's own options

The task runs `python -m deltajobs.injob.notebook` with the job's python (its modules, then the
user's venv or conda env: where JupyterLab must be, which `submit`'s probe checks first) under the
task wrapper, like a script: the walltime warning reaches it as SIGUSR2. One task on one node.
Before the job is queued, `prepare` writes the token JupyterLab will ask for, readable by its owner
alone (RUN_DIR/notebook/token, 0600, in a 0700 directory).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from deltajobs.errors import SpecError
from deltajobs.injob import notebook as server
from deltajobs.payloads.program import ProgramPayload


class NotebookPayload(ProgramPayload):
    kind = "notebook"
    one_task_per_gpu = False  # one JupyterLab sees all the node's GPUs the job has

    @property
    def python(self) -> str:
        from deltajobs.payloads.pyenv import job_python

        return self.run.python or job_python(self.job).python

    def program(self, run_dir: Path | None) -> list[str]:
        return [self.python, "-m", "deltajobs.injob.notebook"]

    def argv(self, run_dir: Path | None = None) -> list[str]:
        return [*super().argv(run_dir), "--grace", str(self.job.spec.resources.signal_grace)]

    def describe(self) -> str:
        idle = self.idle_s
        return f"JupyterLab in {self.workdir}" + (f" (stops after {idle}s idle)" if idle else "")

    @property
    def idle_s(self) -> int | None:
        args = self.run.args
        if "--idle" in args and args.index("--idle") + 1 < len(args):
            value = args[args.index("--idle") + 1]
            return int(value) if value.isdigit() and int(value) > 0 else None
        return None

    def check(self) -> None:
        super().check()
        if self.job.spec.resources.nodes != 1:
            raise SpecError("resources.nodes", f"{self.job.spec.resources.nodes}; a notebook runs on 1 node")

    def prepare(self, run_dir: Path) -> None:
        write_token(run_dir)

    def sweep_key(self, key: str) -> str:
        raise SpecError(key, "a notebook is not swept; sweep a script or a job spec")


def token_path(run_dir: Path) -> Path:
    return run_dir / server.NOTEBOOK_DIR / server.TOKEN_FILE


def server_path(run_dir: Path) -> Path:
    return run_dir / server.NOTEBOOK_DIR / server.SERVER_FILE


def write_token(run_dir: Path) -> str:
    """A new token (256 random bits) in RUN_DIR/notebook/token: the directory 0700, the file 0600."""
    folder = run_dir / server.NOTEBOOK_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    token = secrets.token_urlsafe(32)
    server.write_private(folder / server.TOKEN_FILE, token + "\n")
    return token


def read_token(run_dir: Path) -> str | None:
    try:
        return token_path(run_dir).read_text().strip() or None
    except OSError:
        return None
