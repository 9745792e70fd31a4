"""The CLI around render/list: exit codes, one-line errors, no files on failure, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deltajobs.cli import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def test_render_prints_the_script() -> None:
    proc = invoke("render", "mnist", "--cluster", "delta", env={"DELTAJOBS_ACCOUNT": "bgvu-delta-gpu"})
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --partition=gpuA100x4" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "gpuA100"], "resources.partition: partition 'gpuA100' is unknown on delta; choose one of:"),
        (["--time", "99:00:00"], "resources.time: 99:00:00 on gpuA100x4; choose 00:00:01 to 48:00:00"),
        (["--set", "train.epochs=-3"], "train.epochs: -3 is below the minimum 1"),
        (["--set", "nonsense"], "--set: 'nonsense' is not KEY=VALUE"),
        (["--account", "bgvu-delta-cpu"], "account: 'bgvu-delta-cpu' cannot be charged on GPU partition gpuA100x4"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "job.sh"
    proc = invoke("render", "mnist", "--cluster", "delta", "-A", "bgvu-delta-gpu", *args, "-o", str(out))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_render_to_file(tmp_path: Path) -> None:
    out = tmp_path / "job.sh"
    result = runner.invoke(app, ["render", "mnist", "--cluster", "delta", "-A", "bgvu-delta-gpu", "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_text().startswith("#!/bin/bash")
    assert [p.name for p in tmp_path.iterdir()] == ["job.sh"]


def test_unknown_command_and_option_exit_2() -> None:
    assert invoke("frobnicate").returncode == 2
    assert invoke("render", "mnist", "--bogus").returncode == 2


def test_list_json() -> None:
    result = runner.invoke(app, ["list", "--json", "--cluster", "delta"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert "mnist" in [j["job"] for j in data["jobs"]]
    assert "gpuA100x4" in [p["partition"] for p in data["partitions"]]
    assert data["models"][0] == "mlp"


@pytest.mark.parametrize("args", [["--help"], ["render", "mnist", "--cluster", "delta", "-A", "bgvu-delta-gpu"]])
def test_cli_never_imports_torch(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deltajobs", *args], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "typer" in modules
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}


def test_wheel_ships_templates_and_jobs(tmp_path: Path) -> None:
    """The wheel, built with the project's own environment and installed where nothing else provides
    deltajobs, finds its templates and job specs from another directory.

    The wheel is built by this interpreter (.venv: hatchling comes with the dev extra); it goes into
    a fresh venv that cannot see the base interpreter's packages. Its dependencies (typer, jinja2,
    ...) come from .venv's site-packages, named as a plain path: the editable install's .pth file
    there is not processed, so the checkout itself stays invisible.
    """
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, REPO],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("deltajobs-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    python = env_dir / "bin" / "python"
    site_dir = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    deps = sysconfig.get_paths()["purelib"]  # .venv's
    (site_dir / "deltajobs_deps.pth").write_text(deps + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
    )
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [env_dir / "bin" / "deltajobs", "render", "mnist", "--cluster", "delta", "-A", "bgvu-delta-gpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --job-name=mnist_train" in proc.stdout
    where = subprocess.run(
        [python, "-c", "import deltajobs; print(deltajobs.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(site_dir))
