"""What a run ran with, recorded in RUN_DIR/env/ by the job itself on its node (`record`), and what
its code was at submit (`record_code`): the facts `deltajobs show ID --env`, `results` and
`deltajobs diff` read back (`deltajobs.jobs.provenance`).

    env/job.json       the node's view, each attempt (the latest wins): when, where (host, nodes,
                       job id), the python (executable, version, prefix; venv, conda or system),
                       the modules loaded (Lmod's LOADEDMODULES), torch with its CUDA and NCCL
                       versions, `nvidia-smi -L` and the driver's version, the program (argv,
                       working directory), how many packages, how long the record took
    env/packages.txt   the job python's packages, `name==version` one per line, sorted (pip freeze's
                       form, read from the installed packages' metadata: no pip run, ~50 ms)
    env/conda.txt      a conda env's packages (CONDA_PREFIX's conda-meta), `name=version=build`
                       (conda list --export's form)
    env/git.json       at submit, the code's repository: commit, branch, the files that differ
    env/code.diff      ... and their changes against that commit (`git diff HEAD`, text, capped)

The packaged trainer, a script, a command, a function and a sweep's point call `start` from
`record_attempt` on rank 0: a process of its own, so that the program starts at once (BENCHMARKS.md,
issue 37).
An sbatch script as written runs no deltajobs code: its job gets `BASH_ENV` (`shell_hook`), whose
EXIT trap runs `python -m deltajobs.injob.provenance RUN_DIR --python PY` when the script ends, in
the environment the script made (its modules, its venv). DELTAJOBS_NO_ENV_RECORD=1 turns it off.

Nothing here imports torch: its versions come from its metadata and files.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import Any

ENV_DIR = "env"
JOB_FILE, PACKAGES_FILE, CONDA_FILE = "job.json", "packages.txt", "conda.txt"
GIT_FILE, DIFF_FILE = "git.json", "code.diff"
HOOK_FILE = "record.sh"  # an sbatch script's BASH_ENV
OFF = "DELTAJOBS_NO_ENV_RECORD"
RECORD_WAIT_S = 20  # how long a job that ends first waits for its record at exit
DIFF_CAP = 4 * 1024 * 1024  # bytes of `git diff` kept; a bigger one is cut and says so
NCCL_PACKAGES = ("nvidia-nccl-cu12", "nvidia-nccl-cu11", "nvidia-nccl-cu13", "nccl")
_CUDA_LINE = re.compile(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
# What another interpreter says of itself, as JSON: pip freeze's form without running pip, its
# prefixes and the CUDA its torch was built for (torch/version.py read, not imported).
_ASK = (
    "import importlib.metadata as m, json, re, sys\n"
    "seen = {}\n"
    "for d in m.distributions():\n"
    "    name = (d.metadata['Name'] or '').strip()\n"
    "    key = name.lower().replace('_', '-')\n"
    "    if name and key not in seen: seen[key] = f'{name}=={d.version}'\n"
    "cuda = None\n"
    "try:\n"
    "    text = open(m.distribution('torch').locate_file('torch/version.py')).read()\n"
    "    found = re.search(" + repr(_CUDA_LINE.pattern) + ", text, re.M)\n"
    "    cuda = found.group(1) if found else None\n"
    "except Exception:\n"
    "    pass\n"
    "print(json.dumps({'version': sys.version.split()[0], 'prefix': sys.prefix, 'base': sys.base_prefix,\n"
    "    'packages': sorted(seen.values(), key=str.lower), 'cuda': cuda}))\n"
)


def enabled(env: dict[str, str] | None = None) -> bool:
    """Unless DELTAJOBS_NO_ENV_RECORD=1 here, or in the job's own environment (`env`:
    environment.env, which on this machine reaches only the program)."""
    return all(source.get(OFF, "") in ("", "0") for source in (os.environ, env or {}))


def start(
    run_dir: Path, argv: list[str] | None = None, python: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes] | None:
    """Record the environment in a process of its own, at low priority: the program starts at
    once, and an in-process trainer's `import torch` does not share its interpreter (a thread did:
    +0.3 s). A job that ends first waits for it at exit, RECORD_WAIT_S at most. None where it is
    turned off or cannot start."""
    if not enabled(env):
        return None
    command = [sys.executable, "-m", "deltajobs.injob.provenance", str(run_dir)]
    if python is not None:
        command += ["--python", python]
    if argv is not None:
        command += ["--command", json.dumps(list(argv))]
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_lower_priority
        )
    except OSError as err:
        print(f"deltajobs: the environment record was not started ({err.strerror})", file=sys.stderr, flush=True)
        return None
    atexit.register(_wait, process)
    return process


def _lower_priority() -> None:
    try:
        os.nice(10)
    except OSError:
        pass


def _wait(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=RECORD_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()


def record(run_dir: Path, argv: list[str] | None = None, python: str | None = None) -> dict[str, Any]:
    """Write env/job.json, env/packages.txt (and env/conda.txt in a conda env); returns job.json's
    dict. `python` is the interpreter whose packages count (None: this one; "": there is none, as
    for an sbatch script whose PATH has no python)."""
    began = time.time()
    target = Path(run_dir) / ENV_DIR
    target.mkdir(parents=True, exist_ok=True)
    python = sys.executable if python is None else python
    facts, packages, cuda = interpreter(python) if python else (None, [], None)
    prefix = facts["prefix"] if facts else ""
    conda = conda_packages(prefix) if prefix and Path(prefix, "conda-meta").is_dir() else []
    _write(target / PACKAGES_FILE, "".join(f"{line}\n" for line in packages))
    if conda:
        _write(target / CONDA_FILE, "".join(f"{line}\n" for line in conda))
    job = {
        "recorded_at": began,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "host": os.uname().nodename,
        "nodes": os.environ.get("SLURM_JOB_NODELIST") or os.uname().nodename,
        "python": facts,
        "modules": loaded_modules(),
        "torch": torch_facts(packages, None if not python or _own(python) else {"cuda": cuda}),
        "gpus": gpu_lines(),
        "driver": gpu_driver(),
        "command": list(argv) if argv is not None else None,
        "workdir": os.getcwd(),
        "packages": len(packages),
        "conda_packages": len(conda) if conda else None,
    }
    job["seconds"] = round(time.time() - began, 3)
    _write(target / JOB_FILE, json.dumps(job, indent=1) + "\n")
    return job


# -- the facts -------------------------------------------------------------------------------------


def installed_packages() -> list[str]:
    """This interpreter's packages as `name==version`, sorted, the first of a name on sys.path."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        key = name.lower().replace("_", "-")
        if name and key not in seen:
            seen[key] = f"{name}=={dist.version}"
    return sorted(seen.values(), key=str.lower)


def interpreter(python: str) -> tuple[dict[str, Any] | None, list[str], str | None]:
    """The interpreter's facts (executable, version, prefix, env: venv, conda or system), its
    packages, and the CUDA its torch was built for; this one in-process, another by asking it."""
    if _own(python):
        version, prefix, base, packages, cuda = sys.version.split()[0], sys.prefix, sys.base_prefix, None, None
    else:
        try:
            out = subprocess.run([python, "-c", _ASK], capture_output=True, text=True, timeout=60, check=False)
            told = json.loads(out.stdout) if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            told = None
        if not isinstance(told, dict):
            return {"executable": python, "version": "", "prefix": "", "env": "unknown"}, [], None
        version, prefix, base, cuda = told["version"], told["prefix"], told["base"], told.get("cuda")
        packages = [line for line in told.get("packages", []) if "==" in line]
    if Path(prefix, "conda-meta").is_dir():
        kind = "conda"
    elif prefix != base:
        kind = "venv"
    else:
        kind = "system"
    facts = {"executable": python, "version": version, "prefix": prefix, "env": kind}
    return facts, installed_packages() if packages is None else packages, cuda


def _own(python: str) -> bool:
    """Whether `python` is this interpreter: the same path (a venv's python links to its base
    interpreter, so the file it resolves to says nothing), or one in this same prefix."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        return True
    return Path(python).parent == Path(sys.executable).parent and Path(python).name.startswith("python")


def conda_packages(prefix: str | None) -> list[str]:
    """A conda env's packages from its conda-meta records: `name=version=build`, sorted."""
    if not prefix:
        return []
    lines = []
    for path in sorted(Path(prefix, "conda-meta").glob("*.json")):
        try:
            meta = json.loads(path.read_text())
            lines.append(f"{meta['name']}={meta['version']}={meta.get('build', '')}")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(lines, key=str.lower)


def loaded_modules() -> list[str] | None:
    """The modules loaded (Lmod's and Tcl modules' LOADEDMODULES), in load order; None without a
    module system."""
    text = os.environ.get("LOADEDMODULES")
    if text is None:
        return None if "LMOD_CMD" not in os.environ and "MODULESHOME" not in os.environ else []
    return [name for name in text.split(":") if name]


def torch_facts(packages: list[str], asked: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """torch's version, the CUDA it was built for and NCCL's version, from its metadata and files
    and the NCCL wheel's metadata (never an import: ~2 s; and the same whether or not a process
    imported torch already); for another interpreter, what it said (`asked`: its torch's CUDA)."""
    versions = dict(line.split("==", 1) for line in packages if "==" in line)
    nccl = next((versions[name] for name in NCCL_PACKAGES if name in versions), None)
    if asked is not None:
        return {"version": versions["torch"], "cuda": asked.get("cuda"), "nccl": nccl} if "torch" in versions else None
    version = versions.get("torch")
    if version is None:
        return None
    cuda = None
    try:
        files = metadata.distribution("torch").locate_file("torch/version.py")
        found = _CUDA_LINE.search(Path(str(files)).read_text())
        cuda = found.group(1) if found else None
    except (metadata.PackageNotFoundError, OSError):
        pass
    return {"version": version, "cuda": cuda, "nccl": nccl}


def gpu_lines() -> list[str]:
    """`nvidia-smi -L`: one line per GPU the job may use; none without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def gpu_driver() -> str | None:
    """The NVIDIA driver's version the job saw (`nvidia-smi --query-gpu=driver_version`); None
    without GPUs or nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    return lines[0] if out.returncode == 0 and lines else None


# -- the code, at submit ---------------------------------------------------------------------------


_CODE_SEEN: ContextVar[dict[str, Any] | None] = ContextVar("deltajobs_code_seen", default=None)


@contextmanager
def one_submission() -> Iterator[None]:
    """Within it, git is asked once per code directory: a sweep's points share one answer (their
    code is copied at the same moment). Outside it, every call asks afresh."""
    token = _CODE_SEEN.set({})
    try:
        yield
    finally:
        _CODE_SEEN.reset(token)


def record_code(directory: Path, run_dir: Path, snapshot: bool) -> dict[str, Any] | None:
    """env/git.json and env/code.diff for the repository `directory` lies in (None outside one):
    the commit, the branch, the files that differ from it, whether the run has a snapshot of them.
    Within `one_submission`, git is asked once per directory (a sweep of 100 points asks once)."""
    seen, key = _CODE_SEEN.get(), str(Path(directory).absolute())
    answer = seen.get(key) if seen is not None else None
    if answer is None:
        answer = _ask_git(Path(directory))
        if seen is not None:
            seen[key] = answer
    found, diff = answer
    if found is None:
        return None
    info = {**found, "snapshot": snapshot}
    target = Path(run_dir) / ENV_DIR
    target.mkdir(parents=True, exist_ok=True)
    _write(target / GIT_FILE, json.dumps(info, indent=1) + "\n")
    if diff:
        _write(target / DIFF_FILE, diff)
    return info


def _ask_git(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    """What git says of the repository `directory` lies in; (None, None) outside one."""
    if shutil.which("git") is None:
        return None, None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    if not root:
        return None, None
    commit = (git("rev-parse", "HEAD") or "").strip() or None  # a repository without commits has none
    diff = git("diff", "HEAD", "--no-color", "--no-ext-diff") if commit else None
    status = git("status", "--porcelain", "--untracked-files=normal") or ""
    cut = diff is not None and len(diff.encode()) > DIFF_CAP
    info = {
        "root": root.strip(),
        "commit": commit,
        "branch": (git("rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "changed": [line[3:] for line in status.splitlines() if line[:2] != "??"],
        "untracked": [line[3:] for line in status.splitlines() if line[:2] == "??"],
        "diff_cut": cut,
    }
    return info, diff.encode()[:DIFF_CAP].decode(errors="ignore") if diff else None


# -- an sbatch script as written -------------------------------------------------------------------


def shell_hook(run_dir: Path, user_bash_env: str | None) -> Path:
    """Write RUN_DIR/env/record.sh, the BASH_ENV of an sbatch script's job: bash reads it before the
    script; it unsets BASH_ENV (no other bash of the job reads it), reads the user's own BASH_ENV,
    and leaves an EXIT trap (task 0 only) that records the environment the script ends in. A script
    that sets its own EXIT trap, or runs under sh, is not recorded."""
    import shlex

    target = Path(run_dir) / ENV_DIR
    target.mkdir(parents=True, exist_ok=True)
    record_cmd = shlex.join([sys.executable, "-m", "deltajobs.injob.provenance", str(run_dir)])
    lines = [
        "# deltajobs: records what this job ran with when its script ends (deltajobs.injob.provenance)",
        "unset BASH_ENV",
    ]
    if user_bash_env:
        lines.append(f"[ -r {shlex.quote(user_bash_env)} ] && . {shlex.quote(user_bash_env)}")
    lines += [  # the trap names a function: no path is ever quoted inside the trap's own string
        "__deltajobs_record() {",
        "  __deltajobs_rc=$?",
        f'  {record_cmd} --python "$(command -v python || command -v python3)" </dev/null >/dev/null 2>&1 || :',
        "  exit $__deltajobs_rc",
        "}",
        'if [ "${SLURM_PROCID:-0}" = 0 ] && [ "${DELTAJOBS_NO_ENV_RECORD:-0}" = 0 ]; then',
        "  trap __deltajobs_record EXIT",
        "fi",
        "",
    ]
    path = target / HOOK_FILE
    _write(path, "\n".join(lines))
    return path


# -- files -----------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Write whole or not at all (a reader never sees half a file)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def main(args: list[str]) -> int:
    """`python -m deltajobs.injob.provenance RUN_DIR [--python PY] [--command JSON]`: what `start`
    runs, and an sbatch script's EXIT trap (`shell_hook`). Errors go to stderr: the job's log."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deltajobs.injob.provenance")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--python", help="the interpreter whose packages count ('': none)")
    parser.add_argument("--command", help="the program's argv, as JSON")
    options = parser.parse_args(args)
    try:
        record(options.run_dir, json.loads(options.command) if options.command else None, options.python)
    except Exception as err:  # a record is worth less than the job: one line, never its end
        print(f"deltajobs: the environment record was not written ({err})", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
