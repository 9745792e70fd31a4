"""The backend seam: submitit's private API in one module, checked against the installed submitit;
no code outside `deltajobs/backends/` asks which backend it holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import submitit

from deltajobs import backends
from deltajobs.errors import DeltaJobsError
from deltajobs.slurm import submitit_private
from deltajobs.spec.settings import load_settings

REPO = Path(__file__).resolve().parent.parent


def test_the_installed_submitit_has_every_private_api_we_use() -> None:
    submitit_private.check_compatible()


def test_an_incompatible_submitit_fails_loudly_naming_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(submitit_private.local, "start_controller")
    monkeypatch.setattr(submitit.JobEnvironment, "_requeue", lambda self: None)
    with pytest.raises(DeltaJobsError) as err:
        submitit_private.check_compatible()
    message = str(err.value)
    assert f"submitit {submitit.__version__} is not supported (deltajobs needs submitit>=1.5,<1.6)" in message
    assert "submitit.local.local.start_controller is gone" in message
    assert "JobEnvironment._requeue('self',) is not JobEnvironment._requeue('self', 'countdown')" in message


def test_the_pinned_range_is_the_one_the_private_module_supports() -> None:
    (pin,) = re.findall(r'^\s*"(submitit[^"]*)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert pin == "submitit" + ",".join(submitit_private.SUPPORTED)


def test_private_submitit_names_appear_only_in_the_private_module() -> None:
    names = "make_submission_file_text|internal_process_submissions|submit_command|throttle|requeue"
    private = re.compile(rf"\._({names})\b")
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "deltajobs").rglob("*.py")
        if path.name != "submitit_private.py" and private.search(path.read_text())
    ]
    assert offenders == []


def test_no_backend_is_named_outside_the_backends_package() -> None:
    named = re.compile(r"""(==|!=|\bin)\s*\(?["'](slurm|local)["']|["'](slurm|local)["']\s*(==|!=)""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in (REPO / "deltajobs").rglob("*.py")
        if "backends" not in path.parts and path.name != "submitit_private.py"  # submitit's executor names
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if named.search(line)
    ]
    assert offenders == []


def test_backends_by_name_and_the_fallback_note(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backends.get("slurm").needs_account and not backends.get("local").needs_account
    with pytest.raises(DeltaJobsError, match="unknown backend 'pbs'; choose one of: slurm, local"):
        backends.get("pbs")
    monkeypatch.setattr("shutil.which", lambda name: None)
    settings = load_settings()
    backend, note = backends.choose(False, settings)
    assert backend.name == "local" and note and "no sbatch on PATH" in note
    assert backends.choose(False, settings)[1] is None  # said once
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    assert backends.choose(False, settings)[0].name == "slurm"
    assert backends.choose(True, settings)[0].name == "local"
