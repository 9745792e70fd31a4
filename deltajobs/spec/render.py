"""Rendering is pure: a resolved job and a run directory in, the sbatch script text out.

`submit` sends exactly this text to sbatch (through submitit); `render` prints it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2

from deltajobs import __version__
from deltajobs.clusters.units import format_mem, format_walltime
from deltajobs.errors import SpecError
from deltajobs.injob import requeue
from deltajobs.payloads import pyenv
from deltajobs.spec import assets
from deltajobs.spec.resolve import ResolvedJob

# Paths land in #SBATCH lines, which sbatch does not parse like a shell: keep them plain.
SAFE_PATH = re.compile(r"[A-Za-z0-9_.,/+=@%~-]+")
BIND_PATH = re.compile(r"[A-Za-z0-9_./+=@%~-]+")  # apptainer --bind splits on , and :
SUBMITIT_DIR = "submitit"
APPTAINER_CACHE = ".apptainer-cache"  # under the runs directory: off $HOME, seen by every node


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(assets.path("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env


def job_python(job: ResolvedJob) -> str:
    """The interpreter the job's launch line names (`deltajobs.payloads.pyenv` decides which and why)."""
    return pyenv.job_python(job).python


def submitit_folder(run_dir: Path) -> Path:
    return run_dir / SUBMITIT_DIR


def launch_command(job: ResolvedJob, folder: Path) -> str:
    """The line submitit runs in each task: it unpickles the trainer call and runs it (inside
    `apptainer exec --nv` when the spec names a container; the script sets $DELTAJOBS_BINDS)."""
    chosen = pyenv.job_python(job)
    python = " ".join([shlex.quote(chosen.python), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    image = job.spec.environment.container
    if not image:
        return python
    if chosen.venv:  # the venv is the image's: activated inside it
        inner = f"source {shlex.quote(chosen.venv + '/bin/activate')} && exec {python}"
        python = f"bash -c {shlex.quote(inner)}"
    return f'apptainer exec --nv --bind "$DELTAJOBS_BINDS" {shlex.quote(image)} {python}'


def container_binds(job: ResolvedJob, run_dir: Path) -> str:
    """What the container sees besides $HOME: the run directory and what the payload reads (the
    trainer's data root; a script's directory and working directory)."""
    paths = [str(run_dir), *job.payload.bind_paths(run_dir)]
    for path in paths:
        if not BIND_PATH.fullmatch(path):
            raise SpecError("environment.container", f"cannot bind {path!r} into it; use a path without , : or spaces")
    return ",".join(dict.fromkeys(paths))


def setup_lines(job: ResolvedJob) -> list[str]:
    """The lines of the rendered script that set up the job's software (modules, then the venv,
    then the spec's variables), in its order: what `doctor` tests and `shell` starts with. A test
    holds them to the rendered script."""
    chosen = pyenv.job_python(job)
    lines = ["module reset"] if job.profile.module_reset and job.modules else []
    lines += [
        f"module load {module} || {{ echo \"deltajobs: 'module load {module}' failed\" >&2; exit 1; }}"
        for module in job.modules
    ]
    if chosen.venv and not job.spec.environment.container:
        activate = shlex.quote(chosen.venv + "/bin/activate")
        lines.append(f'source {activate} || {{ echo "deltajobs: cannot activate the venv" >&2; exit 1; }}')
    lines += [f"export {key}={shlex.quote(value)}" for key, value in job.spec.environment.env.items()]
    return lines


def printable(text: str) -> str:
    """`text` safe for one comment line of the script: control characters shown as `?`."""
    return "".join(c if c.isprintable() else "?" for c in text)


def check_path(path: Path, field: str = "runs_dir") -> None:
    if not SAFE_PATH.fullmatch(str(path)):
        raise SpecError(field, f"{str(path)!r} has characters sbatch cannot take; use letters, digits and _.,/+=@-")


def render(
    job: ResolvedJob,
    run_dir: Path,
    *,
    command: str | None = None,
    array: str | None = None,
) -> str:
    """The sbatch script for `job` writing into `run_dir`. `array` is e.g. "0-63%8" for sweeps."""
    run_dir = run_dir.expanduser().absolute()
    check_path(run_dir)
    folder = submitit_folder(run_dir)
    spec, res = job.spec, job.spec.resources
    chosen = pyenv.job_python(job)
    stem = "%A_%a" if array else "%j"  # submitit's names for job and array-task files
    context = {
        "version": __version__,
        "cluster": job.profile.name,
        "name": spec.name,
        "account": spec.account,
        "partition": ",".join(p.name for p in job.partitions),
        "nodes": res.nodes,
        "ntasks_per_node": res.ntasks_per_node,
        "gpus_per_node": res.gpus_per_node,
        "cpus_per_task": res.cpus_per_task,
        "mem": format_mem(res.mem),
        "time": format_walltime(res.seconds),
        "constraint": res.constraint,
        "exclusive": res.exclusive,
        "schedule": spec.schedule,
        "mail_type": ",".join(t.strip().upper() for t in (spec.schedule.mail_type or "").split(",") if t.strip()),
        "array": array,
        "stdout": folder / f"{stem}_0_log.out",
        "stderr": folder / f"{stem}_0_log.err",
        "task_stdout": folder / f"{stem}_%t_log.out",
        "task_stderr": folder / f"{stem}_%t_log.err",
        "signal_grace": res.signal_grace,
        "warning_signal": job.payload.warning_signal,
        "module_reset": job.profile.module_reset and bool(job.modules),
        "modules": job.modules,
        "venv": None if spec.environment.container else chosen.venv,
        "python_why": printable(chosen.why),
        "env": spec.environment.env,
        "world_size": res.nodes * res.ntasks_per_node,
        "distributed_env": job.profile.distributed_env,
        "multi_node_env": job.profile.multi_node.env if res.nodes > 1 else {},
        "container": spec.environment.container,
        "container_binds": container_binds(job, run_dir) if spec.environment.container else "",
        "container_cache": run_dir.parent / APPTAINER_CACHE,
        "command": command or launch_command(job, folder),
        "payload": job.payload.kind,
        "runs": printable(job.payload.describe()),
        **requeue.batch_script(
            folder / requeue.REQUEST_FILE if job.payload.requeue_from_batch else None, res.max_requeues
        ),
    }
    return _environment().get_template("job.sh.j2").render(**context)
