"""Where jobs run, behind one interface (`base.Backend`): SLURM (`slurm.py`) or this machine
(`local.py`). A backend's name is stored with each job; `get` is the one place a name becomes a
backend, and `choose` the one place the command line's choice is made.
May import spec, payloads, train, injob, clusters, slurm and the root modules.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from deltajobs.errors import DeltaJobsError

if TYPE_CHECKING:
    from deltajobs.backends.base import Backend
    from deltajobs.spec.settings import Settings

NAMES = ("slurm", "local")
NOTED_LOCAL = ".noted-local-backend"  # in DELTAJOBS_HOME once the user was told about the fallback


def get(name: str) -> Backend:
    """The backend a job was submitted with (imported only when asked: each pulls in submitit)."""
    if name == "slurm":
        from deltajobs.backends.slurm import SlurmBackend

        return SlurmBackend()
    if name == "local":
        from deltajobs.backends.local import LocalBackend

        return LocalBackend()
    raise DeltaJobsError(f"unknown backend {name!r}; choose one of: {', '.join(NAMES)}")


def infer(run_dir: Path, raw_id: str) -> tuple[str, str]:
    """(backend name, job id) of a run directory written before it held its job.json: a SLURM
    run holds the job.sh sbatch got; a local job's id is `local-<pid>-<start>` of its controller
    (`local-<pid>` in rows from before: backends/local_process.py)."""
    if (run_dir / "job.sh").is_file():
        return "slurm", raw_id
    from deltajobs.backends.local import PREFIX

    return "local", f"{PREFIX}{raw_id}"


def choose(local: bool, settings: Settings) -> tuple[Backend, str | None]:
    """--local, else SLURM where sbatch is on PATH, else local; with the note to show the user
    (once per DELTAJOBS_HOME) when it fell back to local."""
    if local:
        return get("local"), None
    if shutil.which("sbatch"):
        return get("slurm"), None
    marker = settings.home_path / NOTED_LOCAL
    if marker.exists():
        return get("local"), None
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return get("local"), "no sbatch on PATH: running on this machine with the local backend (--local)"
