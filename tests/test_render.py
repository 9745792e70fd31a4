"""Rendering: golden scripts, the course's header, bash syntax and hostile strings."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from deltajobs.payloads import pyenv
from deltajobs.spec.render import render
from deltajobs.spec.resolve import Overrides, job_names, resolve_job
from deltajobs.spec.settings import load_settings

GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = Path("/projects/bgvu/runs/RUN")
UPDATE = os.environ.get("DELTAJOBS_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def delta_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render as a student on Delta would: from the venv NCSA's Python guide has them make."""
    monkeypatch.setattr(pyenv, "submitting", lambda: pyenv.Submitting("venv", "/u/student/venvs/deltajobs"))


def rendered(job: str, cluster: str = "delta", **flags: object) -> str:
    sets = flags.pop("sets", [])
    overrides = Overrides(sets=list(sets), account="bgvu-delta-gpu", **flags)  # type: ignore[arg-type]
    return render(resolve_job(job, overrides, load_settings(), cluster), RUN_DIR)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {name}: create it with DELTAJOBS_UPDATE_GOLDEN=1 pytest tests/test_render.py"
    assert text == path.read_text(), (
        f"{name} differs from the golden file; if the change is intended, refresh with "
        f"DELTAJOBS_UPDATE_GOLDEN=1 pytest tests/test_render.py and review the diff"
    )


@pytest.mark.parametrize("job", job_names())
def test_every_job_matches_its_golden_script(job: str) -> None:
    check_golden(f"{job}.delta.sh", rendered(job))


def test_multi_node_launch_golden() -> None:
    script = rendered("mnist", nodes=2, gpus=4, cpus=16)
    check_golden("mnist-2x4.delta.sh", script)
    assert "#SBATCH --ntasks-per-node=4" in script and "#SBATCH --gpus-per-node=4" in script
    assert "MASTER_ADDR" in script and "#SBATCH --gpu-bind=none" in script
    assert "module load nccl" in script and "export NCCL_SOCKET_IFNAME=hsn" in script


def test_mnist_is_the_course_script() -> None:
    script = rendered("mnist")
    for line in (
        "#SBATCH --account=bgvu-delta-gpu",
        "#SBATCH --partition=gpuA100x4",
        "#SBATCH --nodes=1",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=16g",
        "#SBATCH --time=00:05:00",
        "#SBATCH --job-name=mnist_train",
        "#SBATCH --output=/projects/bgvu/runs/RUN/submitit/%j_0_log.out",
        "module reset",
    ):
        assert line in script.splitlines()
    assert "module load pytorch-conda/2.8" in script
    assert script.startswith("#!/bin/bash\n")


@pytest.mark.parametrize("job", job_names())
@pytest.mark.parametrize("cluster", ["delta", "minidelta"])
def test_scripts_pass_bash_n(job: str, cluster: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(rendered(job, cluster))
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_hostile_strings_are_quoted_and_never_run(tmp_path: Path) -> None:
    """Run the rendered script with stub srun/scontrol: no user string may execute."""
    canary = tmp_path / "canary"
    hostile = f"x$(touch {canary})`touch {canary}`;touch {canary}"
    job = resolve_job(
        "mnist",
        Overrides(
            account="bgvu-delta-gpu",
            sets=[f"environment.env={{EVIL: '{hostile}'}}", f"environment.venv='{tmp_path}/v $(touch {canary})'"],
        ),
        load_settings(),
        "minidelta",
    )
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("srun", "scontrol", "nvidia-smi", "module"):  # minidelta loads modules as Delta does
        (stubs / tool).write_text('#!/bin/sh\necho stub "$@"\n')
        (stubs / tool).chmod(stat.S_IRWXU)
    venv = tmp_path / f"v $(touch {canary})" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("echo activated\n")
    script = tmp_path / "job.sh"
    script.write_text(render(job, tmp_path / "run"))
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "SLURM_JOB_ID": "1"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "activated" in out and "stub --unbuffered" in out
    assert not canary.exists()


def test_rendering_does_not_touch_the_run_dir(tmp_path: Path) -> None:
    job = resolve_job("mnist", Overrides(account="bgvu-delta-gpu"), load_settings(), "delta")
    render(job, tmp_path / "run")
    assert not (tmp_path / "run").exists()
