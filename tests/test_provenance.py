"""The environment record a job writes in RUN_DIR/env (`deltajobs.injob.provenance`), read back
from its files: the packages of this and of another interpreter, a conda env's, the modules, torch's
versions without importing it, the GPUs (nvidia-smi faked at the process seam), the code's git
state at submit, and an sbatch script's BASH_ENV hook, whose EXIT trap must never change the
script's own exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deltajobs.injob import provenance


def test_the_record_holds_the_python_its_packages_modules_torch_and_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -L ]; then\n'
        "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)'\n"
        "echo 'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-2)'\n"
        "else printf '550.54.15\\n550.54.15\\n'; fi\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("LOADEDMODULES", "gcc/11.4.0:cuda/12.3.0:python/3.11.6")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpua[001-002]")
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    job = provenance.record(tmp_path / "run", ["python", "train.py", "--lr", "3"])
    env = tmp_path / "run" / "env"
    assert json.loads((env / "job.json").read_text()) == job
    assert job["job_id"] == "4242" and job["nodes"] == "gpua[001-002]"
    assert job["modules"] == ["gcc/11.4.0", "cuda/12.3.0", "python/3.11.6"]
    assert job["gpus"][1].startswith("GPU 1: NVIDIA A100-SXM4-40GB") and job["driver"] == "550.54.15"
    assert job["command"] == ["python", "train.py", "--lr", "3"]
    assert job["python"]["executable"] == sys.executable and job["python"]["env"] == "venv"
    lines = (env / "packages.txt").read_text().splitlines()
    assert job["packages"] == len(lines) and lines == sorted(lines, key=str.lower)
    names = {line.split("==")[0].lower() for line in lines}
    assert {"pytest", "pyyaml", "torch", "submitit"} <= names
    torch_version = next(line.split("==")[1] for line in lines if line.lower().startswith("torch=="))
    assert job["torch"]["version"] == torch_version
    assert job["torch"]["cuda"]  # read from torch/version.py, not by importing torch
    assert not (env / "conda.txt").exists()


def test_torch_is_never_imported_to_record_it(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom deltajobs.injob import provenance\n"
        f"job = provenance.record(Path({str(tmp_path)!r}))\n"
        "print(job['torch']['version'] if job['torch'] else None, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] != "None" and out[1] == "False"


def test_another_interpreter_and_a_conda_env_list_their_own_packages(tmp_path: Path) -> None:
    # a venv's python links to the same base interpreter as ours: it must still be asked, not taken for ours
    env_dir = tmp_path / "other"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    meta = env_dir / "conda-meta"  # ... and made to look like a conda env
    meta.mkdir()
    for name, version, build in (("numpy", "1.26.4", "py311h"), ("python", "3.11.9", "h955ad1f_0")):
        (meta / f"{name}-{version}-{build}.json").write_text(
            json.dumps({"name": name, "version": version, "build": build})
        )
    (meta / "history").write_text("not json")
    python = str(env_dir / "bin" / "python")
    job = provenance.record(tmp_path / "run", None, python)
    env = tmp_path / "run" / "env"
    assert (env / "conda.txt").read_text() == "numpy=1.26.4=py311h\npython=3.11.9=h955ad1f_0\n"
    assert job["python"]["executable"] == python and job["python"]["env"] == "conda"
    assert job["python"]["prefix"] == str(env_dir)
    listed = (env / "packages.txt").read_text().lower()
    assert "submitit==" not in listed and "torch==" not in listed and job["torch"] is None  # its own, not ours
    none = provenance.record(tmp_path / "none", None, "")
    assert none["python"] is None and none["packages"] == 0


def test_turned_off_it_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(provenance.OFF, "1")
    assert provenance.start(tmp_path) is None
    assert not (tmp_path / "env").exists()
    monkeypatch.setenv(provenance.OFF, "0")
    process = provenance.start(tmp_path, ["x"])
    assert process is not None and process.wait(timeout=60) == 0
    assert json.loads((tmp_path / "env" / "job.json").read_text())["command"] == ["x"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_the_code_record_has_the_commit_the_changes_and_the_untracked_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "train.py").write_text("lr = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    (repo / "src" / "train.py").write_text("lr = 2\n")
    (repo / "notes.txt").write_text("new\n")
    info = provenance.record_code(repo / "src", tmp_path / "run", snapshot=True)
    assert info is not None and info["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert info["changed"] == ["src/train.py"] and info["untracked"] == ["notes.txt"] and info["snapshot"]
    diff = (tmp_path / "run" / "env" / "code.diff").read_text()
    assert "-lr = 1\n+lr = 2\n" in diff
    assert provenance.record_code(tmp_path / "run", tmp_path / "other", snapshot=False) is None  # no repository
    assert not (tmp_path / "other").exists()


SCRIPT = """{shebang}
set -e
echo "user env: ${{USER_THING:-unset}}"
exit {code}
"""


@pytest.mark.parametrize("code", [0, 3])
def test_an_sbatch_scripts_hook_records_at_its_end_and_keeps_its_exit_status(tmp_path: Path, code: int) -> None:
    user_env = tmp_path / "mine.sh"
    user_env.write_text("export USER_THING=kept\n")
    hook = provenance.shell_hook(tmp_path / "run", str(user_env))
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT.format(shebang="#!/bin/bash", code=code))
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != provenance.OFF}
    proc = subprocess.run([str(script)], capture_output=True, text=True, env={**env, "BASH_ENV": str(hook)})
    assert proc.returncode == code and proc.stdout == "user env: kept\n"  # the user's own BASH_ENV still read
    job = json.loads((tmp_path / "run" / "env" / "job.json").read_text())
    assert job["python"]["executable"]  # the python on the script's PATH when it ended


def test_a_failing_record_never_changes_the_scripts_status(tmp_path: Path) -> None:
    hook = provenance.shell_hook(tmp_path / "run", None)
    (tmp_path / "run").chmod(0o500)  # the record cannot be written
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT.format(shebang="#!/bin/bash", code=0))
    script.chmod(0o755)
    try:
        proc = subprocess.run([str(script)], capture_output=True, text=True, env={**os.environ, "BASH_ENV": str(hook)})
    finally:
        (tmp_path / "run").chmod(0o700)
    assert proc.returncode == 0


def test_the_hook_works_in_a_run_directory_with_a_space_and_a_quote(tmp_path: Path) -> None:
    run = tmp_path / "it's a run"
    hook = provenance.shell_hook(run, None)
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT.format(shebang="#!/bin/bash", code=4))
    script.chmod(0o755)
    proc = subprocess.run([str(script)], capture_output=True, text=True, env={**os.environ, "BASH_ENV": str(hook)})
    assert proc.returncode == 4 and proc.stderr == ""
    assert json.loads((run / "env" / "job.json").read_text())["python"]
