"""Which Python a job runs: by default the environment `deltajobs` itself runs in.

On Delta a job's `module reset; module load pytorch-conda/2.8` puts the module's Python first on
PATH; a venv made for deltajobs must therefore come after the modules, or the job's `python` is
the module's, which has neither deltajobs nor submitit (NCSA software.rst, "Python": install into a
venv layered over the module, or a conda env). So, unless the spec names a venv:

- run from a **venv**: the job activates it after the modules (its `python` comes first);
- run from a **conda env**: the job runs that env's interpreter by absolute path. NCSA advises to
  "submit the batch job from within the environment and do not add conda activate" (software.rst,
  "Python", conda); an absolute path keeps working after `module reset` reorders PATH, where
  relying on the inherited PATH would not;
- run from **neither**: the profile's `python` (the module's), or, where the profile names none
  (minidelta without modules), this interpreter.

In a container the image's interpreter runs, and a venv the spec names is activated inside it.
`environment.inherit: false` turns the default off. The rendered script says which, in one line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from deltajobs.spec.resolve import ResolvedJob

CONTAINER_PYTHON = "python3"  # in an image, where the profile names no interpreter


@dataclass(frozen=True)
class Submitting:
    """The environment this process runs in."""

    kind: Literal["venv", "conda", "none"]
    prefix: str | None


@dataclass(frozen=True)
class JobPython:
    """How a job gets its Python: the interpreter its launch line names, the venv it activates
    after the modules (or inside the container), and why, for the script's comment."""

    python: str
    venv: str | None
    why: str


def submitting() -> Submitting:
    """The venv or conda env of this interpreter, if any (a venv inside a conda env is a venv)."""
    if sys.prefix != sys.base_prefix:
        return Submitting("venv", sys.prefix)
    conda = os.environ.get("CONDA_PREFIX")
    if conda and Path(conda).resolve() == Path(sys.prefix).resolve():
        return Submitting("conda", sys.prefix)
    return Submitting("none", None)


def venv_python(venv: str | None) -> str:
    """A venv's interpreter by path: the same as `python` once it is activated, and right where
    nothing activates it (a script's task on this machine)."""
    return str(Path(str(venv)) / "bin" / "python")


def job_python(job: ResolvedJob) -> JobPython:
    env, profile = job.spec.environment, job.profile
    if env.container:
        python = profile.python or CONTAINER_PYTHON
        if env.venv:
            return JobPython("python", env.venv, f"the venv {env.venv}, activated inside the container")
        return JobPython(python, None, f"the container's {python}")
    if env.venv:
        return JobPython(venv_python(env.venv), env.venv, f"the spec's venv {env.venv}, activated after the modules")
    here = submitting() if env.inherit else Submitting("none", None)
    if here.kind == "venv":
        why = "the venv deltajobs runs in, activated after the modules so that its python comes first on PATH"
        return JobPython(venv_python(here.prefix), here.prefix, why)
    if here.kind == "conda" and here.prefix:
        python = str(Path(here.prefix) / "bin" / "python")
        return JobPython(python, None, "the conda env deltajobs runs in, by absolute path (NCSA: no conda activate)")
    if profile.python:
        why = f"the modules' {profile.python} (deltajobs runs in no venv or conda env)"
        return JobPython(profile.python, None, why)
    return JobPython(sys.executable, None, "the interpreter deltajobs runs in")
