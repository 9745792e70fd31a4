"""The one place a spec becomes a payload (`payload_of`), and the command line's JOB argument a spec.

The command line names a payload by its JOB argument: a packaged spec name or a YAML file (its
`train:` or `run:` section), a `.py` script (its arguments after `--`), an sbatch script (a file
whose `#SBATCH` lines deltajobs reads), or `--command '...'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltajobs.errors import SpecError
from deltajobs.payloads.config import safe_name

if TYPE_CHECKING:
    from deltajobs.clusters.profile import ClusterProfile
    from deltajobs.payloads.base import Payload
    from deltajobs.spec.resolve import ResolvedJob

SBATCH_SUFFIXES = (".sh", ".sbatch", ".slurm", ".bash")


def payload_of(job: ResolvedJob) -> Payload:
    """The payload of a resolved job (the one place a spec becomes a payload)."""
    run = job.spec.run
    if run is None:
        from deltajobs.payloads.trainer import TrainerPayload

        return TrainerPayload(job)
    if run.kind == "script":
        from deltajobs.payloads.program import ScriptPayload

        return ScriptPayload(job)
    if run.kind == "command":
        from deltajobs.payloads.program import CommandPayload

        return CommandPayload(job)
    if run.kind == "sbatch":
        from deltajobs.payloads.sbatch import SbatchPayload

        return SbatchPayload(job)
    if run.kind == "function":
        from deltajobs.payloads.function import FunctionPayload

        return FunctionPayload(job)
    if run.kind == "notebook":
        from deltajobs.payloads.notebook import NotebookPayload

        return NotebookPayload(job)
    raise SpecError("run", "names nothing to run; give one of: script, command, sbatch")


def complete_spec(raw: dict[str, Any], profile: ClusterProfile) -> None:
    """Fill in, before validation, what the cluster (not deltajobs) gives where the payload leaves a
    field to it: an sbatch script's memory and walltime (`payloads.sbatch.complete_spec`)."""
    run = raw.get("run")
    if isinstance(run, dict) and run.get("sbatch"):
        from deltajobs.payloads.sbatch import complete_spec as complete_sbatch

        complete_sbatch(raw, profile)


def check_run(run: dict[str, Any] | None) -> None:
    """A `run:` section names exactly one of script, command and sbatch."""
    if run is None:
        return
    given = [k for k in ("script", "command", "sbatch", "function", "notebook") if run.get(k)]
    if len(given) != 1:
        what = "nothing" if not given else " and ".join(given)
        raise SpecError("run", f"names {what}; give exactly one of: script, command, sbatch")


def launcher_tasks(raw: dict[str, Any]) -> None:
    """A `run.command` that starts its node's processes itself (torchrun, `accelerate launch`: see
    `payloads.runner.launcher`) runs one task per node, where the spec does not say how many."""
    run, resources = raw.get("run"), raw.get("resources")
    if not isinstance(run, dict) or not isinstance(run.get("command"), str):
        return
    if isinstance(resources, dict) and resources.get("tasks_per_node") is not None:
        return
    from deltajobs.payloads.launchers import launcher
    from deltajobs.payloads.program import split_command

    try:
        argv = split_command(run["command"])
    except SpecError:
        return  # the payload says what is wrong with it, in its words
    if launcher(argv) is not None:
        raw["resources"] = {**(resources if isinstance(resources, dict) else {}), "tasks_per_node": 1}


def command_line_spec(
    job: str | None, args: list[str], command: str | None, *, snapshot: bool = True, cwd: Path | None = None
) -> str | dict[str, Any]:
    """The job the command line names: a spec name or YAML path as it is, else the raw spec dict
    of a script (`train.py -- ARGS`), an sbatch file, or `--command`; run in `cwd` (sbatch's rule)."""
    workdir = str((cwd or Path.cwd()).absolute())
    if command is not None:
        if job is not None:
            raise SpecError("--command", f"runs a command instead of JOB; drop {job!r} or --command")
        from deltajobs.payloads.program import split_command

        argv = split_command(command)
        run = {"command": command, "args": list(args), "workdir": workdir, "snapshot": False}
        return {"name": safe_name(Path(argv[0]).name), "run": run}
    if job is None:
        raise SpecError("JOB", "missing; name a job spec, a script (train.py) or an sbatch file, or pass --command")
    path = Path(job).expanduser()
    if path.suffix == ".py":
        if not path.is_file():
            raise SpecError("JOB", f"no such script: {job}")
        run = {"script": str(path.absolute()), "args": list(args), "workdir": workdir, "snapshot": snapshot}
        return {"name": safe_name(path.stem), "run": run}
    if path.suffix in SBATCH_SUFFIXES or (path.is_file() and _looks_like_sbatch(path)):
        if not path.is_file():
            raise SpecError("JOB", f"no such sbatch script: {job}")
        if args:
            raise SpecError("JOB", f"arguments after -- go to a .py script, not to the sbatch script {job}")
        from deltajobs.payloads.sbatch import sbatch_spec

        return sbatch_spec(path, workdir)
    if args:
        raise SpecError("JOB", f"arguments after -- are for a script (train.py -- --lr 1e-3), not for the spec {job!r}")
    return job


def _looks_like_sbatch(path: Path) -> bool:
    try:
        head = path.read_bytes()[:4096].decode(errors="replace")
    except OSError:
        return False
    return head.startswith("#!") and "#SBATCH" in head
