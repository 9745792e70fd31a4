"""`deltajobs remote setup`'s local half: the wheel of this version, and the bash the remote runs,
run here in a throwaway directory (no ssh): a hostile --python never runs as a command, and a
python that is there gets a venv with the wheel's deltajobs in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deltajobs import __version__
from deltajobs.remote.install import build_wheel, install_script
from deltajobs.remote.ssh import Ssh
from deltajobs.spec.settings import RemoteRecord


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_is_this_version_with_its_templates(wheel: Path) -> None:
    assert wheel.name == f"deltajobs-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "deltajobs/remote/dispatch.py" in names and any(n.startswith("deltajobs/spec/templates/") for n in names)
    assert "deltajobs/ui/templates/run.html" in names and "deltajobs/ui/static/uPlot.iife.min.js" in names
    assert f"deltajobs-{__version__}.dist-info/METADATA" in names  # what the remote's version check reads


def run_install(tmp_path: Path, python: str, wheel: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "wheels").mkdir(exist_ok=True)
    shutil.copy(wheel, tmp_path / "wheels")
    ssh = Ssh("md", RemoteRecord(host="h", workdir=str(tmp_path), modules=[], python=python), batch=True)
    text = install_script(ssh, wheel.name).replace("--quiet", "--quiet --no-index --no-deps")  # offline here
    return subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=300)


def test_a_hostile_python_is_a_name_not_a_command(tmp_path: Path, wheel: Path) -> None:
    marker = tmp_path / "ran"
    done = run_install(tmp_path, f"$(touch {marker})", wheel)
    assert done.returncode == 3 and not marker.exists()
    assert done.stderr.strip() == f"no $(touch {marker}) on PATH after the modules"


def test_install_makes_a_venv_with_this_deltajobs(tmp_path: Path, wheel: Path) -> None:
    done = run_install(tmp_path, sys.executable, wheel)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == sys.executable
    assert list((tmp_path / "venv" / "lib").glob(f"python*/site-packages/deltajobs-{__version__}.dist-info"))
