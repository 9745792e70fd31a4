"""`deltajobs doctor`: check on the login node what a job will need, each failure with its fix.

    checks = run_checks(resolved, settings)      # a list of Check: name, status, detail, fix

The account and its balance; the runs and data directories (existing, writable, on a filesystem
the compute nodes see: not /tmp; not $HOME, which NCSA says is not for job I/O); the free space of
the runs directory's filesystem (statvfs: a warning under 1 GB or 5 %) and, where there is a `quota`
command (Delta's), the quota of the directory holding it and any other at 90 % or more; the modules and
the job's interpreter, set up in a subshell with the very lines of the rendered script
(`render.setup_lines`), importing deltajobs and submitit at this side's versions, and torch
(`backends.probe`, which `submit` runs itself, cached per set-up); the data; a user script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from deltajobs.backends.probe import Check, arch_check, interpreter_check
from deltajobs.errors import DeltaJobsError
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings

QUOTA_TIMEOUT_S = 30  # Delta's `quota` asks Lustre for every directory: seconds, not minutes
UNSEEN_ROOTS = ("/tmp", "/var/tmp", "/dev/shm")  # local to the login node: compute nodes do not see them


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


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.status != "fail" for c in checks), "checks": [c.to_dict() for c in checks]}
