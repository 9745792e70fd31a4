"""`doctor` and `submit` refuse a venv built for another CPU than the cluster's nodes (DeltaAI: Arm)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.backends import probe
from deltajobs.environment import doctor
from deltajobs.errors import SpecError
from deltajobs.spec.resolve import Overrides, ResolvedJob, resolve_job
from deltajobs.spec.settings import load_settings


def fake_venv(root: Path, machine: int) -> Path:
    """A venv whose bin/python is a stub ELF header for e_machine `machine` (0x3E x86-64, 0xB7 AArch64)."""
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little") + bytes(44))
    os.chmod(python, 0o755)
    return root


def on_deltaai(venv: Path) -> ResolvedJob:
    overrides = Overrides(partition="ghx4", account="abcd-dtai-gh", sets=[f"environment.venv={venv}"])
    return resolve_job("mnist", overrides, load_settings(), "deltaai")


def test_an_x86_venv_fails_doctor_on_deltaai_before_it_is_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")  # a Delta login node
    monkeypatch.setattr(doctor, "interpreter_check", lambda job, cached=False: pytest.fail("probed an x86 python"))
    checks = doctor.run_checks(on_deltaai(fake_venv(tmp_path / "venv", 0x3E)), load_settings())
    arch = next(c for c in checks if c.name == "architecture")
    assert arch.status == "fail" and arch.detail == (
        f"{tmp_path}/venv/bin/python: this venv was built for x86_64 (this login node); DeltaAI's nodes are Arm "
        "(aarch64): make a venv on a DeltaAI login node"
    )


def test_an_arm_venv_passes_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "interpreter_check", lambda job, cached=False: probe.Check("python", "ok", "probed"))
    checks = doctor.run_checks(on_deltaai(fake_venv(tmp_path / "venv", 0xB7)), load_settings())
    assert [(c.name, c.status) for c in checks if c.name in ("architecture", "python")] == [
        ("architecture", "ok"),
        ("python", "ok"),
    ]


def test_submit_refuses_it(tmp_path: Path) -> None:
    job = on_deltaai(fake_venv(tmp_path / "venv", 0x3E))
    with pytest.raises(SpecError) as err:
        probe.require_interpreter(job)
    assert str(err.value).startswith("environment: the job would fail: ")
    assert "DeltaAI's nodes are Arm (aarch64): make a venv on a DeltaAI login node" in str(err.value)


def test_doctor_checks_the_venv_deltajobs_runs_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no venv named, the job runs the venv deltajobs runs in: this one, built for this machine."""
    args = ["doctor", "mnist", "--cluster", "deltaai", "--partition", "ghx4", "-A", "abcd-dtai-gh"]
    code, out, _ = run_main(monkeypatch, capsys, *args)
    if platform.machine() == "aarch64":
        assert "  ok    architecture" in out
    else:
        assert code == 1 and "this venv was built for x86_64 (this login node); DeltaAI's nodes are Arm" in out
