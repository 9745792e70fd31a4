"""minidelta's Delta-like job environment: Lmod modules, the modules' own Python, nvidia-smi.

The pieces (scripts/minidelta.d/modules/, module_env.py) are tested from the source tree without
root or SLURM; the `slurm` tests sbatch real scripts, as a Delta user would, and read their output.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO
from slurmutil import needs_slurm
from test_private import as_user, other_user, shared_tmp  # noqa: F401  (fixtures: another local user)

from deltajobs.backends.probe import LMOD_INIT as LMOD_INIT_LINE
from deltajobs.charge.advice import gpu_advice
from deltajobs.injob.gpu_usage import GPU_FILE, QUERY, GpuSampler, parse_query

SOURCE = REPO / "scripts" / "minidelta.d"
NVIDIA_SMI = SOURCE / "modules" / "bin" / "nvidia-smi"
TASK_PROLOG = SOURCE / "modules" / "libexec" / "task-prolog"
DEFAULT_MODULES = "gcc/11.4.0:openmpi/4.1.6:cuda/11.8.0"  # Delta's, per NCSA Delta_doc software.rst
LMOD_INIT = "/usr/share/lmod/lmod/init/bash"
A100_MIB = 40960


def module_env() -> ModuleType:
    spec = importlib.util.spec_from_file_location("module_env", SOURCE / "module_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nvidia_smi(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The placeholder run outside SLURM with only `env` (plus PATH) set."""
    return subprocess.run(
        [str(NVIDIA_SMI), *args], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env}
    )


# -- nvidia-smi ------------------------------------------------------------------------------------


def test_nvidia_smi_answers_the_samplers_query_for_the_jobs_gpus() -> None:
    out = nvidia_smi(*QUERY, SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="2", SLURM_JOB_PARTITION="gpuA100x4")
    assert out.returncode == 0 and out.stdout == "0, 0, 0\n1, 0, 0\n"
    assert parse_query(out.stdout) == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    full = nvidia_smi(
        "--query-gpu=index,name,memory.total,utilization.gpu", "--format=csv", SLURM_JOB_ID="7", SLURM_JOB_GPUS="1,3"
    )
    assert full.stdout.splitlines() == [
        "index, name, memory.total [MiB], utilization.gpu [%]",
        "0, NVIDIA A100-SXM4-40GB, 40960 MiB, 0 %",
        "1, NVIDIA A100-SXM4-40GB, 40960 MiB, 0 %",
    ]


def test_nvidia_smi_table_list_and_a40_partition() -> None:
    table = nvidia_smi(SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="1", SLURM_JOB_PARTITION="gpuA40x4-interactive")
    assert table.returncode == 0 and "NVIDIA-SMI minidelta placeholder" in table.stdout
    assert "NVIDIA A40" in table.stdout and "0MiB / 46068MiB" in table.stdout
    lines = [line for line in table.stdout.splitlines() if line.startswith(("|", "+"))]
    assert {len(line) for line in lines} == {79}, "the table's borders line up"
    listing = nvidia_smi("-L", SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="3").stdout.splitlines()
    assert [line.split(" (UUID")[0] for line in listing] == [f"GPU {i}: NVIDIA A100-SXM4-40GB" for i in range(3)]


def test_nvidia_smi_without_gpus_and_bad_requests() -> None:
    none = nvidia_smi(*QUERY, SLURM_JOB_ID="7")  # a job that asked for no GPU
    assert (none.returncode, none.stderr.strip()) == (6, "No devices were found")
    bad = nvidia_smi("--query-gpu=index,fan.bogus", "--format=csv", SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="1")
    assert bad.returncode == 2 and 'Field "fan.bogus" is not a valid field to query.' in bad.stderr
    unknown = nvidia_smi("-q", SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="1")
    assert unknown.returncode == 2 and "--query-gpu=FIELDS" in unknown.stderr


def test_nvidia_smi_outside_a_job_shows_the_nodes_gpus(tmp_path: Path) -> None:
    gres = tmp_path / "gres.conf"
    gres.write_text(f"NodeName={socket.gethostname().split('.')[0]} Name=gpu File=/var/lib/minidelta/dev/gpu[0-3]\n")
    out = nvidia_smi("--query-gpu=index,memory.total", "--format=csv,noheader,nounits", MINIDELTA_GRES_CONF=str(gres))
    assert out.stdout.splitlines() == [f"{i}, {A100_MIB}" for i in range(4)]
    gres.write_text("NodeName=gpua001 Name=gpu File=/var/lib/minidelta/dev/gpu[0-3]\n")  # a CPU node: not listed
    assert nvidia_smi(*QUERY, MINIDELTA_GRES_CONF=str(gres)).returncode == 6


def test_the_sampler_reads_the_placeholder_as_idle_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What deltajobs makes of it in a 2-GPU minidelta job: 2 GPUs seen, none busy, hence the advice."""
    monkeypatch.setenv("PATH", f"{NVIDIA_SMI.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "2")
    with GpuSampler(tmp_path / GPU_FILE, interval=0.05) as sampler:
        time.sleep(0.2)
    summary = sampler.summary()
    assert summary is not None and summary["gpus"] == 2 and summary["busy_gpus"] == 0 and summary["mean_util"] == 0
    advice = gpu_advice(summary, 2)
    assert [a.message for a in advice] == [
        "2 GPUs reserved, 0 used (the job trained on the CPU? see train.device): --gpus 1"
    ]


# -- the TaskProlog ------------------------------------------------------------------------------------


def test_task_prolog_gives_module_and_nvidia_smi_once() -> None:
    root = SOURCE / "modules"
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(TASK_PROLOG)], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == [
        f"export BASH_ENV={LMOD_INIT}",
        f"export MODULEPATH={root}/modulefiles",
        f"export PATH={root}/bin:/usr/bin:/bin",
    ]
    # An srun task inside the job already has all of it: nothing is printed, nothing is undone.
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    env["MODULEPATH"] = f"/elsewhere:{env['MODULEPATH']}"
    assert subprocess.run([str(TASK_PROLOG)], capture_output=True, text=True, env=env, check=True).stdout == ""


@pytest.mark.skipif(not Path(LMOD_INIT).is_file(), reason="Lmod is not installed (scripts/minidelta up installs it)")
def test_module_reset_restores_deltas_defaults_and_modules_put_their_python_first(tmp_path: Path) -> None:
    """The modulefiles and Lmod site file of the source tree, with Lmod and nothing else."""
    root = SOURCE / "modules"
    script = (
        "module load nccl\nmodule reset 2>/dev/null\necho loaded=$LOADEDMODULES\n"
        "module load pytorch-conda/2.8 python\necho path=$PATH\nmodule purge\necho purged=${LOADEDMODULES:-}\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BASH_ENV": LMOD_INIT,
        "MODULEPATH": str(root / "modulefiles"),
        "LMOD_CONFIG_DIR": str(root / "etc"),  # its lmod_config.lua, as /etc/lmod/lmod_config.lua runs it
    }
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=True).stdout
    assert f"loaded={DEFAULT_MODULES}\n" in out
    python_bin, torch_bin = root / "envs" / "python" / "bin", root / "envs" / "pytorch-conda-2.8" / "bin"
    assert f"path={python_bin}:{torch_bin}:/usr/bin:/bin\n" in out  # the last loaded comes first
    assert out.endswith("purged=\n")


# -- the modules' Python environments -------------------------------------------------------------------


def test_linked_entries_leave_out_deltajobs_and_its_launchers(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    names = [
        "torch", "torch-2.14.1.dist-info", "numpy", "typing_extensions.py", "deltajobs", "deltajobs-0.1.0.dist-info",
        "submitit", "submitit-1.5.4.dist-info", "cloudpickle", "typer", "typer-0.28.0.dist-info", "pip",
        "pip-26.3.dist-info", "_editable_impl_deltajobs.pth", "__editable__.deltajobs-0.1.0.pth",
        "distutils-precedence.pth", "__pycache__", "old.egg-link",
    ]  # fmt: skip
    site.mkdir()
    for name in names:
        (site / name).mkdir() if "." not in name or name.endswith("-info") else (site / name).touch()
    assert module_env().linked_entries(site) == ["numpy", "torch", "torch-2.14.1.dist-info", "typing_extensions.py"]


def test_a_linked_env_has_torch_without_deltajobs(tmp_path: Path) -> None:
    """Built from the venv running the tests, as scripts/minidelta builds pytorch-conda/2.8's."""
    script, env = SOURCE / "module_env.py", tmp_path / "pytorch-conda-2.8"
    first = subprocess.run([sys.executable, str(script), "--linked", str(env)], capture_output=True, text=True)
    assert first.returncode == 0 and "made," in first.stdout, first.stderr
    python = env / "bin" / "python"
    probe = (
        "import importlib.util as u; print([u.find_spec(m) is not None for m in ('torch', 'deltajobs', 'submitit')])"
    )
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env={})
    has_torch = importlib.util.find_spec("torch") is not None
    assert found.stdout.strip() == str([has_torch, False, False])
    if has_torch:
        assert (env / "bin" / "torchrun").read_text().startswith(f"#!{python}\n")
    again = subprocess.run([sys.executable, str(script), "--linked", str(env)], capture_output=True, text=True)
    assert "(+0 -0)" in again.stdout and "made," not in again.stdout


def test_a_linked_env_from_a_checkout_others_cannot_enter_still_serves_them(
    other_user: str,  # noqa: F811
    shared_tmp: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Issue 33 item 14: a clone under a 0700 directory (pytest's tmp_path is one). The module env
    built from its venv must give the login node's user the venv's packages: hard links reached
    through the env's own directory, not symlinks into the checkout they may not enter."""
    private = tmp_path / "clone" / ".venv"  # tmp_path: 0700, root's
    site = module_env().site_packages_of(private)
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("__version__ = '9.9'\n")
    (site / "torch-9.9.dist-info").mkdir()
    (site / "torch-9.9.dist-info" / "METADATA").write_text("Name: torch\nVersion: 9.9\n")
    env = shared_tmp / "pytorch-conda-2.8"
    argv = [sys.executable, str(SOURCE / "module_env.py"), "--linked", str(env), "--source", str(private)]
    built = subprocess.run(argv, capture_output=True, text=True)
    assert built.returncode == 0 and "torch 9.9" in built.stdout, built.stderr
    probe = "import torch; print(torch.__version__)"
    found = as_user(other_user, str(env / "bin" / "python"), "-c", probe)
    assert (found.returncode, found.stdout) == (0, "9.9\n"), found.stderr
    (site / "torch" / "__init__.py").write_text("__version__ = '9.10'\n")  # pip replaced it: a new file
    (site / "torch").touch()
    again = subprocess.run(argv, capture_output=True, text=True)
    assert "(+1 -1)" in again.stdout, again.stdout
    assert as_user(other_user, str(env / "bin" / "python"), "-c", probe).stdout == "9.10\n"


# -- on minidelta -------------------------------------------------------------------------------------

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def clean_env() -> dict[str, str]:
    """This process's environment without any module system or PYTHONPATH: the job owes `module` to minidelta alone."""
    dropped = ("BASH_ENV", "MODULEPATH", "MODULEPATH_ROOT", "MODULESHOME", "LOADEDMODULES", "_LMFILES_", "PYTHONPATH")
    return {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.startswith(("LMOD", "__LMOD", "BASH_FUNC_", "SLURM_"))
    }


def sbatch(tmp_path: Path, body: str, *options: str, timeout: float = 120) -> str:
    """Submit `body` as a bash batch script from `tmp_path`, wait for it, return its output."""
    script, out = tmp_path / "job.sh", tmp_path / "job.out"
    script.write_text("#!/bin/bash\n" + body)
    argv = ["sbatch", "--parsable", "--account=bgvu-delta-gpu", "--partition=gpuA100x4", "--time=00:05:00"]
    argv += [f"--chdir={tmp_path}", f"--output={out}", *options, str(script)]
    job_id = subprocess.run(argv, capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()
    deadline, state = time.time() + timeout, ""
    while time.time() < deadline:
        show = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        state = m[1] if (m := re.search(r"JobState=(\S+)", show)) else state
        if state in FINAL:
            break
        time.sleep(0.5)
    text = out.read_text() if out.exists() else ""
    assert state == "COMPLETED", f"job {job_id} ended {state or 'unseen'}:\n{text}"
    return text


def opt_dir() -> Path:
    """Where minidelta installed its modules: the TaskProlog's folder's parent (/opt/minidelta)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    match = re.search(r"^TaskProlog\s*=\s*(\S+)", config, re.M)
    if not match or not Path(match[1]).is_file():
        pytest.skip("this minidelta has no TaskProlog: bring it up with the current scripts/minidelta up")
    return Path(match[1]).parent.parent


@needs_slurm
@pytest.mark.slurm
def test_a_job_loads_pytorch_conda_whose_python_lacks_deltajobs(tmp_path: Path) -> None:
    """The course's lines run for real, and the trap they set is real: the module's python has torch,
    not deltajobs or submitit (a `python -m submitit...` after them fails as it does on Delta)."""
    root = opt_dir()
    out = sbatch(
        tmp_path,
        "module purge\nmodule reset\nmodule load pytorch-conda/2.8\n"
        'echo "python=$(command -v python) modules=$LOADEDMODULES"\n'
        "nvidia-smi && python -c 'import torch; print(\"torch\", torch.__version__)'\n"
        "python -c 'import deltajobs' 2>&1 | tail -n 1\n"
        "python -m submitit.core._submit . 2>&1 | tail -n 1\n",
        "--gpus-per-node=1",
    )
    python = root / "envs" / "pytorch-conda-2.8" / "bin" / "python"
    assert f"python={python} modules={DEFAULT_MODULES}:pytorch-conda/2.8\n" in out, out
    assert "NVIDIA-SMI minidelta placeholder" in out
    if importlib.util.find_spec("torch") is not None:
        assert re.search(r"^torch \d+\.\d+", out, re.M), out
    assert "ModuleNotFoundError: No module named 'deltajobs'" in out
    assert "No module named 'submitit'" in out


@needs_slurm
@pytest.mark.slurm
def test_module_avail_lists_delta_modules_and_they_load(tmp_path: Path) -> None:
    root = opt_dir()
    out = sbatch(
        tmp_path,
        "module -t avail 2>&1\nmodule load python nccl anaconda3_gpu\n"
        'echo "python=$(command -v python) nccl=$MINIDELTA_NCCL_PLUGIN"\n',
        "--export=NONE",  # nothing from the submitter at all
    )
    listed = set(out.split())
    assert {"pytorch-conda/2.8", "anaconda3_gpu", "nccl", "gcc/11.4.0", "openmpi/4.1.6", "cuda/11.8.0"} <= listed
    assert any(name.startswith("python/3.") for name in listed), out
    assert f"python={root / 'envs' / 'anaconda3_gpu' / 'bin' / 'python'} nccl=aws-ofi-nccl" in out


@needs_slurm
@pytest.mark.slurm
def test_the_login_node_has_the_modules_too() -> None:
    """deltajobs checks a job's set-up on the login node before it submits (doctor.LMOD_INIT, then the
    script's module lines): minidelta's login node, this host, has Delta's modules as Delta's does."""
    root = opt_dir()
    script = f"{LMOD_INIT_LINE}\nmodule reset 2>/dev/null\nmodule load pytorch-conda/2.8 && command -v python"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=clean_env(), cwd="/")
    assert out.stdout.strip() == str(root / "envs" / "pytorch-conda-2.8" / "bin" / "python"), out.stderr


@needs_slurm
@pytest.mark.slurm
def test_nvidia_smi_in_a_two_gpu_job_is_read_by_the_sampler(tmp_path: Path) -> None:
    opt_dir()
    out = sbatch(
        tmp_path,
        "nvidia-smi -L\necho ---\n"
        f"nvidia-smi {' '.join(QUERY)}\necho ---\n"
        "nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits\n",
        "--gpus-per-node=2",
    )
    listing, sampled, memory = out.split("---\n")
    assert [line.split(" (")[0] for line in listing.splitlines()] == [f"GPU {i}: NVIDIA A100-SXM4-40GB" for i in (0, 1)]
    assert parse_query(sampled) == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert parse_query(memory) == [[0.0, 0.0, float(A100_MIB)]] * 2
