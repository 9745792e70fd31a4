"""What the laptop does after the remote command succeeded: files it wrote for the user (--plot,
--output) fetched to where the user named them, and for `results` the run directory's small files
mirrored in DELTAJOBS_HOME/remotes/NAME/runs/<run directory's name>."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from deltajobs.remote import ssh as seam
from deltajobs.remote.argv import Plan
from deltajobs.remote.session import HEADER, note, scratch_rsync, script
from deltajobs.remote.ssh import RemoteError, Ssh
from deltajobs.remote.sync import Stats


def after(ssh: Ssh, job: Plan) -> None:
    from deltajobs.remote.sync import fetch_file

    for item in job.scratch:
        fetch_file(ssh, scratch_rsync(ssh, item), item.local)
    if job.words == ("results",):
        local, stats = mirror_run(ssh, job)
        left = "" if job.checkpoints else "; checkpoints and files over 64 MiB stay there (--checkpoints fetches them)"
        note(f"{ssh.name}: run directory mirrored in {local} ({stats.sent} of {stats.files} files fetched{left})")


def mirror_root(name: str) -> Path:
    from deltajobs.paths import state_home

    return state_home() / "remotes" / name / "runs"


def mirror_run(ssh: Ssh, job: Plan) -> tuple[Path, Stats]:
    """Fetch the run directory of the job `results` named into its local mirror."""
    from deltajobs.remote.sync import pull_run

    job_id = next((a for a in job.args[1:] if isinstance(a, str) and not a.startswith("-")), "last")
    run_dir = remote_run_dir(ssh, job_id)
    local = mirror_root(ssh.name) / Path(run_dir).name
    return local, pull_run(ssh, run_dir, local, checkpoints=job.checkpoints)


def remote_run_dir(ssh: Ssh, job_id: str) -> str:
    """The run directory of a job, from the remote's `status ID --json`."""
    status = Plan(("status",), ["status", job_id, "--json"])
    done = seam.run(ssh.command("sh -c " + shlex.quote(script(ssh, status, Path.cwd()))), timeout=120)
    text = done.stdout.split(HEADER, 1)[-1].split("\n", 1)[-1]
    try:
        rows = json.loads(text)
        return str(rows[0]["run_dir"])
    except (ValueError, LookupError, TypeError):
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RemoteError(
            f"could not find the run directory of {job_id} on {ssh.name}: {lines[-1] if lines else 'no answer'}"
        ) from None
