"""`deltajobs shell`: an interactive shell on a compute node, set up like the job's script.

    job = interactive(resolved, picked=False, ...)   # on the -interactive sibling where there is one
    argv = shell_argv(job, write_rcfile(job, settings))
    os.execvp(argv[0], argv)                         # srun --pty ... bash --rcfile RC -i

The rcfile holds Lmod's set-up (an interactive shell does not read BASH_ENV) and the rendered
script's own set-up lines (`render.setup_lines`): the modules, then the venv. NCSA's docs start
interactive jobs with `srun --pty` on the `-interactive` partitions (running_jobs.rst,
'Interactive Jobs'); those are dearer per hour but start quickly and are meant for this.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deltajobs.backends.probe import LMOD_INIT
from deltajobs.clusters.units import format_mem, format_walltime
from deltajobs.spec.render import setup_lines
from deltajobs.spec.resolve import ResolvedJob, interactive_sibling
from deltajobs.spec.settings import Settings

if TYPE_CHECKING:
    from deltajobs.cli.options import JobFlags


def interactive(job: ResolvedJob, *, picked: bool, settings: Settings, flags: JobFlags) -> ResolvedJob:
    """The job on its partition's -interactive sibling (where the profile has one, the walltime fits
    and the user did not pick a partition), validated again there."""
    if picked:
        return job
    return interactive_sibling(job, flags.overrides, settings) or job


def write_rcfile(job: ResolvedJob, settings: Settings) -> Path:
    """DELTAJOBS_HOME/shell/NAME.rc: the user's own ~/.bashrc, Lmod, the job's set-up, a prompt."""
    path = settings.home_path / "shell" / f"{job.spec.name}.rc"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# deltajobs shell: written by deltajobs; the job's set-up as its batch script does it",
        "[ -f ~/.bashrc ] && . ~/.bashrc",
        LMOD_INIT,
        *[line.replace("exit 1", "return 1") for line in setup_lines(job)],
        f'PS1="(deltajobs {job.spec.name}) $PS1"',
        'echo "deltajobs shell: job $SLURM_JOB_ID on $(hostname); exit or Ctrl-D ends it and its charge"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def shell_argv(job: ResolvedJob, rcfile: Path) -> list[str]:
    """srun --pty with the job's account and resources, running bash with the rcfile."""
    res = job.spec.resources
    argv = [
        "srun",
        f"--account={job.spec.account}",
        f"--partition={job.partition.name}",
        f"--nodes={res.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={res.cpus_per_task}",
        f"--mem={format_mem(res.mem)}",
        f"--time={format_walltime(res.seconds)}",
        f"--job-name={job.spec.name}",
    ]
    if res.gpus_per_node:
        argv.append(f"--gpus-per-node={res.gpus_per_node}")
    if res.constraint:
        argv.append(f"--constraint={res.constraint}")
    return [*argv, "--pty", "bash", "--rcfile", str(rcfile), "-i"]
