"""Will the job's python run deltajobs' task? The probe that `submit` (its guard, cached per set-up)
and `doctor` (its check) share, so the check a submission needs sits below both.

    require_interpreter(job)        # SpecError naming the fix, or nothing (cached: a second submit costs nothing)
    check = interpreter_check(job)  # a Check: name, status, detail, fix

The job's modules and interpreter are set up in a subshell with the very lines of the rendered
script (`render.setup_lines`); the probe imports deltajobs and submitit (at this side's versions)
and torch. Where the job runs a venv or conda env, its ELF header is read against the nodes'
architecture first (`arch_check`), without running it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from deltajobs import __version__
from deltajobs.errors import SpecError
from deltajobs.osutil import write_atomic
from deltajobs.spec.resolve import ResolvedJob

Status = Literal["ok", "warn", "fail"]


PROBE_MARK = "DELTAJOBS-PROBE "
JUPYTERLAB = "jupyterlab>=4,<5"  # what a notebook job needs in its environment (pyproject's `notebook` extra)


PROBE = (
    "import json, sys\n"
    "found = {'python': sys.executable}\n"
    "for name in ('deltajobs', 'submitit', 'torch'):\n"
    "    try:\n"
    "        found[name] = getattr(__import__(name), '__version__', '?')\n"
    "    except Exception as err:\n"
    "        found[name] = None\n"
    "        found[name + '_error'] = f'{type(err).__name__}: {err}'\n"
    f"print({PROBE_MARK!r} + json.dumps(found))\n"
)
# A notebook's also asks for JupyterLab's version, from its metadata: importing it costs a second.
NOTEBOOK_PROBE = PROBE.replace(
    f"print({PROBE_MARK!r}",
    "import importlib.metadata as m\n"
    "try:\n"
    "    found['jupyterlab'] = m.version('jupyterlab')\n"
    "except Exception as err:\n"
    "    found['jupyterlab'] = None\n"
    "    found['jupyterlab_error'] = f'{type(err).__name__}: {err}'\n"
    f"print({PROBE_MARK!r}",
)


# Lmod's bash set-up where a non-interactive shell lacks the `module` function (a login shell has it).
LMOD_INIT = (
    "if ! type module >/dev/null 2>&1; then "
    "for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash /etc/profile.d/modules.sh; do "
    '[ -f "$init" ] && . "$init" && break; done; fi'
)


PROBE_TIMEOUT_S = 180


CACHE_TTL_S = 86400


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def arch_check(job: ResolvedJob) -> Check | None:
    """The job's venv or conda env against the nodes' CPU architecture (the profile's `arch`: DeltaAI's
    are Arm, Delta's x86): None where the job runs the modules' `python` or a container's, or where
    either side is unknown. Its ELF header says what an interpreter was built for, without running it."""
    from deltajobs.clusters.profile import arch_mismatch, executable_arch
    from deltajobs.payloads import pyenv

    if job.spec.environment.container or job.profile.arch is None:
        return None
    chosen = pyenv.job_python(job)
    if not Path(chosen.python).is_absolute() or executable_arch(chosen.python) is None:
        return None
    what = "venv" if chosen.venv else "conda env" if pyenv.submitting().kind == "conda" else "python"
    problem = arch_mismatch(job.profile, chosen.python, what)
    if problem is not None:
        return Check("architecture", "fail", f"{chosen.python}: {problem}")
    return Check("architecture", "ok", f"{chosen.python}: built for {job.profile.arch}, as the nodes are")


def interpreter_check(job: ResolvedJob, cached: bool = False) -> Check:
    """Set the job's software up in a subshell as its script does and import what the job needs."""
    from deltajobs.payloads import pyenv
    from deltajobs.spec.render import setup_lines

    chosen = pyenv.job_python(job)
    lines = setup_lines(job)
    needs = ["# and jupyterlab"] if job.payload.kind == "notebook" else []  # a verdict for a script's job is not one
    key = cache_key([*lines, *needs], chosen.python)
    if cached and (hit := read_cache(key)) is not None:
        return hit
    code = NOTEBOOK_PROBE if job.payload.kind == "notebook" else PROBE
    script = "\n".join([LMOD_INIT, *lines, f"{shlex.quote(chosen.python)} -c {shlex.quote(code)}"])
    try:
        proc = subprocess.run(  # from /: a package in the current directory must not count
            ["bash", "-c", script], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, cwd="/"
        )
    except subprocess.TimeoutExpired:
        return Check("python", "fail", f"setting up the job's environment took over {PROBE_TIMEOUT_S}s", "")
    check = judge_probe(job, chosen.python, chosen.why, proc.returncode, proc.stdout, proc.stderr)
    if check.status != "fail":
        write_cache(key, check)
    return check


def require_interpreter(job: ResolvedJob) -> None:
    """What `submit` checks itself (cached per set-up): the job's python can run deltajobs' task.
    Nothing for an sbatch script (its set-up is the user's) or a container (the image's)."""
    if job.payload.sbatch_file() is not None or job.spec.environment.container:
        return
    arch = arch_check(job)
    if arch is not None and arch.status == "fail":
        raise SpecError("environment", f"the job would fail: {arch.detail} (`deltajobs doctor`)")
    check = interpreter_check(job, cached=True)
    if check.status == "fail":
        raise SpecError("environment", f"the job would fail: {check.detail}; {check.fix} (`deltajobs doctor`)")


def judge_probe(job: ResolvedJob, python: str, why: str, code: int, out: str, err: str) -> Check:
    """The verdict on the subshell's output: modules, then the interpreter, then its imports."""
    import submitit

    name = f"job's python ({why})"
    found = next(
        (json.loads(line[len(PROBE_MARK) :]) for line in out.splitlines() if line.startswith(PROBE_MARK)), None
    )
    last = (err.strip().splitlines() or [f"exit {code}"])[-1]
    if found is None:
        failed = next((line for line in err.splitlines() if line.startswith("deltajobs: ")), last)
        fix = "check the module names with `module avail`, or the spec's environment.modules"
        if "activate the venv" in failed:
            fix = "create the venv, or point environment.venv at one"
        elif "No such file" in err or "not found" in err:
            fix = "install deltajobs into a venv on a filesystem compute nodes see, and run deltajobs from it"
        return Check(name, "fail", f"{python}: {failed}", fix)
    problems = []
    if found.get("deltajobs") != __version__:
        problems.append(f"deltajobs {found.get('deltajobs') or 'missing'} ({found.get('deltajobs_error', '')})")
    if found.get("submitit") != submitit.__version__:
        problems.append(f"submitit {found.get('submitit') or 'missing'} (here {submitit.__version__})")
    fix = (
        f"run deltajobs from the venv the job should use (pip install deltajobs=={__version__} there), "
        "or name it: --set environment.venv=DIR"
    )
    if problems:
        return Check(name, "fail", f"{found['python']} after the set-up: " + "; ".join(problems), fix)
    lab = str(found.get("jupyterlab") or "")
    major = lab.split(".")[0]
    if job.payload.kind == "notebook" and (not major.isdigit() or int(major) < 4):
        why = f"JupyterLab {lab}, older than 4" if lab else found.get("jupyterlab_error")
        return Check(
            name,
            "fail",
            f"{found['python']}: no JupyterLab 4, which a notebook runs ({why})",
            f"install it there: {shlex.quote(found['python'])} -m pip install {shlex.quote(JUPYTERLAB)} "
            "(or deltajobs[notebook])",
        )
    if found.get("torch") is None:
        status: Status = "fail" if job.payload.kind == "train" else "warn"
        return Check(name, status, f"{found['python']}: no torch ({found.get('torch_error')})", "load a PyTorch module")
    versions = f"deltajobs {found['deltajobs']}, submitit {found['submitit']}, torch {found['torch']}"
    return Check(name, "ok", f"{found['python']}: {versions}")


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "deltajobs" / "interpreters.json"


def cache_key(lines: list[str], python: str) -> str:
    import submitit

    text = json.dumps([lines, python, __version__, submitit.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_cache(key: str) -> Check | None:
    try:
        entry = json.loads(cache_path().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or time.time() - float(entry.get("time", 0)) > CACHE_TTL_S:
        return None
    return Check(**entry["check"])


def write_cache(key: str, check: Check) -> None:
    path = cache_path()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    data[key] = {"time": time.time(), "check": check.to_dict()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data))
    except OSError:
        pass  # a cache that cannot be written costs one more check next time
