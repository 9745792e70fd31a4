"""Which Python a job runs: the venv or conda env deltajobs runs in by default, after the modules."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from deltajobs.payloads import pyenv
from deltajobs.spec.render import render
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

RUN = Path("/projects/bgvu/runs/RUN")


def script(*sets: str, cluster: str = "delta") -> str:
    job = resolve_job("mnist", Overrides(sets=list(sets), account="bgvu-delta-gpu"), load_settings(), cluster)
    return render(job, RUN)


def test_the_submitting_venv_is_activated_after_the_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyenv, "submitting", lambda: pyenv.Submitting("venv", "/u/me/venvs/dj"))
    lines = script().splitlines()
    load = lines.index(
        "module load pytorch-conda/2.8 || { echo \"deltajobs: 'module load pytorch-conda/2.8' failed\" >&2; exit 1; }"
    )
    comment = lines.index(
        "# Python: the venv deltajobs runs in, activated after the modules so that its python comes first on PATH."
    )
    assert load < comment and lines[comment + 1].startswith("source /u/me/venvs/dj/bin/activate ||")
    assert [line for line in lines if line.startswith("srun ")][0].endswith(
        " /u/me/venvs/dj/bin/python -u -m submitit.core._submit /projects/bgvu/runs/RUN/submitit"
    )
    assert "source" not in script("environment.inherit=false")


def test_a_conda_env_runs_its_interpreter_by_absolute_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyenv, "submitting", lambda: pyenv.Submitting("conda", "/u/me/miniconda3/envs/dj"))
    text = script()
    assert "# Python: the conda env deltajobs runs in, by absolute path (NCSA: no conda activate)." in text
    assert "/u/me/miniconda3/envs/dj/bin/python -u -m submitit.core._submit" in text
    assert not [line for line in text.splitlines() if line.startswith(("conda activate", "source "))]


def test_no_env_runs_the_modules_python_or_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyenv, "submitting", lambda: pyenv.Submitting("none", None))
    text = script()
    assert "# Python: the modules' python (deltajobs runs in no venv or conda env)." in text
    (launch,) = [line for line in text.splitlines() if line.startswith("srun ")]
    assert launch.endswith(" python -u -m submitit.core._submit /projects/bgvu/runs/RUN/submitit")  # the profile's
    job = resolve_job("mnist", Overrides(account="bgvu-delta-gpu"), load_settings(), "minidelta")
    bare = dataclasses.replace(job, profile=dataclasses.replace(job.profile, python=None))  # a profile naming none
    assert pyenv.job_python(bare) == pyenv.JobPython(sys.executable, None, "the interpreter deltajobs runs in")


def test_a_spec_venv_wins_and_goes_inside_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyenv, "submitting", lambda: pyenv.Submitting("venv", "/u/me/venvs/dj"))
    assert "source /projects/bgvu/venvs/x/bin/activate" in script("environment.venv=/projects/bgvu/venvs/x")
    text = script("environment.container=/projects/bgvu/img.sif", "environment.venv=/opt/venv")
    outside = [line for line in text.splitlines() if line.startswith("source ")]
    assert outside == []  # not on the host: the venv is the image's
    assert (
        'apptainer exec --nv --bind "$DELTAJOBS_BINDS" /projects/bgvu/img.sif bash -c '
        "'source /opt/venv/bin/activate && exec python -u -m submitit.core._submit /projects/bgvu/runs/RUN/submitit'"
    ) in text


def test_submitting_detects_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    monkeypatch.setattr(sys, "prefix", "/u/me/venvs/dj")  # a venv: its prefix is not its base's
    assert pyenv.submitting() == pyenv.Submitting("venv", "/u/me/venvs/dj")
    monkeypatch.setenv("CONDA_PREFIX", sys.base_prefix)  # a venv made inside a conda env is a venv
    assert pyenv.submitting() == pyenv.Submitting("venv", "/u/me/venvs/dj")
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    monkeypatch.setenv("CONDA_PREFIX", sys.base_prefix)
    assert pyenv.submitting() == pyenv.Submitting("conda", sys.base_prefix)
    monkeypatch.delenv("CONDA_PREFIX")
    assert pyenv.submitting() == pyenv.Submitting("none", None)
