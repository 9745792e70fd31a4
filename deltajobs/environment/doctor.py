"""`deltajobs doctor`: check on the login node what a job will need, each failure with its fix.

    checks = run_checks(resolved, settings)      # a list of Check: name, status, detail, fix

The account and its balance; the runs and data directories (existing, writable, on a filesystem
the compute nodes see: not /tmp; not $HOME, which NCSA says is not for job I/O); the free space of
the runs directory's filesystem (statvfs: a warning under 1 GB or 5 %) and, where there is a `quota`
command (Delta's), the quota of the directory holding it and any other at 90 % or more; the modules and
the job's interpreter, set up in a subshell with the very lines of the rendered script
(`render.setup_lines`), importing deltajobs and submitit at this side's versions, and torch; the
data; a user script. `submit` runs the interpreter check itself, cached per set-up
(`interpreter_check(..., cached=True)`), so a second submit costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from deltajobs import __version__
from deltajobs.errors import DeltaJobsError, SpecError
from deltajobs.osutil import write_atomic
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings

Status = Literal["ok", "warn", "fail"]
PROBE_MARK = "DELTAJOBS-PROBE "
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
# Lmod's bash set-up where a non-interactive shell lacks the `module` function (a login shell has it).
LMOD_INIT = (
    "if ! type module >/dev/null 2>&1; then "
    "for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash /etc/profile.d/modules.sh; do "
    '[ -f "$init" ] && . "$init" && break; done; fi'
)
PROBE_TIMEOUT_S = 180
QUOTA_TIMEOUT_S = 30  # Delta's `quota` asks Lustre for every directory: seconds, not minutes
CACHE_TTL_S = 86400
UNSEEN_ROOTS = ("/tmp", "/var/tmp", "/dev/shm")  # local to the login node: compute nodes do not see them


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(job: ResolvedJob, settings: Settings, *, program: bool = True) -> list[Check]:
    """Every check for `job` (`program`: the job names a script or command of the user's)."""
    checks = [account_check(job), directory_check("runs directory", settings.runs_path, "--runs-dir")]
    checks += [space_check(settings.runs_path), *quota_checks(settings.runs_path)]
    if job.payload.kind == "train" and job.spec.train.data_root:
        checks.append(directory_check("data directory", Path(job.spec.train.data_root), "--data-root"))
        checks.append(data_check(Path(job.spec.train.data_root)))
    if program and job.payload.kind in ("script", "command"):
        checks.append(Check("program", "ok", job.payload.describe() + " (exists, compiles)"))
    if job.payload.sbatch_file() is None:
        arch = arch_check(job)
        checks += [arch] if arch is not None else []
        if arch is None or arch.status != "fail":  # an x86 python on Arm fails the probe with "Exec format error"
            checks.append(interpreter_check(job))
    return checks


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


def account_check(job: ResolvedJob) -> Check:
    from deltajobs.charge.accounting import balance

    account = job.spec.account
    if not account:
        return Check("account", "fail", "no account", "pass -A ACCOUNT, set DELTAJOBS_ACCOUNT or run `deltajobs init`")
    try:
        left = balance(account)
    except DeltaJobsError as err:
        return Check("account", "fail", f"{account}: {err}", "use an account that `deltajobs accounts` lists")
    if left is None:
        return Check("account", "warn", f"{account}: no balance known here (no `accounts`, no SLURM limit)")
    if left <= 0:
        return Check(
            "account",
            "fail",
            f"{account} has no balance left ({left:g} SU): jobs would pend with QOSGrpBillingMinutes",
            "ask your allocation's PI for more SU, or use another account (`deltajobs accounts`)",
        )
    return Check("account", "ok", f"{account}: {left:,.1f} SU left")


def directory_check(name: str, path: Path, flag: str) -> Check:
    path = path.expanduser().absolute()
    suggestion = f"deltajobs init {flag} /work/hdd/<group>/$USER/{'runs' if 'runs' in name else 'data'}"
    if str(path).startswith(tuple(root + "/" for root in UNSEEN_ROOTS)) or str(path) in UNSEEN_ROOTS:
        return Check(name, "fail", f"{path} is on this node's local disk, which compute nodes do not see", suggestion)
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        return Check(name, "fail", f"{path} cannot be created or written ({existing} is not writable)", suggestion)
    home = Path.home().absolute()
    if path == home or home in path.parents:
        return Check(name, "warn", f"{path} is under $HOME, which NCSA says is not for job I/O", suggestion)
    return Check(name, "ok", f"{path}" + ("" if path.exists() else " (created at the first submit)"))


def space_check(path: Path) -> Check:
    """Free space on the filesystem that will hold the runs (statvfs; not what a quota leaves)."""
    from deltajobs.injob.diskspace import human, low_space, space

    found = space(path.expanduser())
    if found is None:
        return Check("free space", "warn", f"{path}: its filesystem cannot be read (statvfs)")
    detail = (
        f"{found.path} on {found.describe()}: {human(found.free)} free of {human(found.total)} ({found.fraction:.0%})"
    )
    low = low_space(found)
    if low is None:
        return Check("free space", "ok", detail)
    fix = "free space there, or put the runs elsewhere: deltajobs init --runs-dir /work/hdd/<group>/$USER/runs"
    return Check("free space", "warn", f"{detail}: {low}", fix)


def quota_checks(path: Path) -> list[Check]:
    """Delta's `quota` (none where the command does not exist): the directory holding `path`, and
    any other at QUOTA_WARN of its soft quota or more. Output it cannot read is one warning."""
    from deltajobs.injob.diskspace import QUOTA_WARN, parse_quota, quota_for

    command = shutil.which("quota")
    if command is None:
        return []
    try:
        proc = subprocess.run([command], capture_output=True, text=True, errors="replace", timeout=QUOTA_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [Check("quota", "warn", f"`quota` did not answer within {QUOTA_TIMEOUT_S}s")]
    except OSError as err:
        return [Check("quota", "warn", f"`quota` could not run: {err.strerror}")]
    rows, warnings = parse_quota(proc.stdout)
    checks = [Check("quota", "warn", warning) for warning in warnings]
    if not rows and not warnings:
        last = (proc.stderr.strip().splitlines() or ["no quotas"])[-1]
        return [Check("quota", "ok" if proc.returncode == 0 else "warn", f"`quota`: {last}")]
    holding = quota_for(rows, path.expanduser())
    fix = "delete or move files (`quota` shows every directory; NCSA: a soft quota has 7 days' grace)"
    for row in rows:
        if row is not holding and row.share() < QUOTA_WARN and not row.at_hard_limit():
            continue
        if row.at_hard_limit():
            checks.append(Check("quota", "fail", f"{row.describe()}: at its hard limit, writes fail", fix))
        elif row.share() >= 1:
            checks.append(Check("quota", "warn", f"{row.describe()}: over its soft quota", fix))
        elif row.share() >= QUOTA_WARN:
            checks.append(Check("quota", "warn", f"{row.describe()}: near its soft quota", fix))
        else:
            checks.append(Check("quota", "ok", row.describe() + " (the runs directory's)"))
    if holding is None and not any(c.status != "ok" for c in checks):
        checks.append(Check("quota", "ok", f"{len(rows)} directories, none at {QUOTA_WARN:.0%} of its soft quota"))
    return checks


def data_check(root: Path) -> Check:
    from deltajobs.train.fetch import verify

    try:
        counts = verify(root)
    except DeltaJobsError as err:
        return Check("data", "fail", str(err), f"deltajobs data fetch mnist --root {root}")
    return Check("data", "ok", f"MNIST in {root} ({', '.join(f'{v:,} {k}' for k, v in counts.items())})")


def interpreter_check(job: ResolvedJob, cached: bool = False) -> Check:
    """Set the job's software up in a subshell as its script does and import what the job needs."""
    from deltajobs.payloads import pyenv
    from deltajobs.spec.render import setup_lines

    chosen = pyenv.job_python(job)
    lines = setup_lines(job)
    key = cache_key(lines, chosen.python)
    if cached and (hit := read_cache(key)) is not None:
        return hit
    script = "\n".join([LMOD_INIT, *lines, f"{shlex.quote(chosen.python)} -c {shlex.quote(PROBE)}"])
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


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.status != "fail" for c in checks), "checks": [c.to_dict() for c in checks]}
