"""Every option and argument the commands share, declared once with `Annotated` types, and the one
helper that turns a command's job flags into a resolved job.

Commands that take a job spec declare `flags: JobFlags` and decorate themselves with
`@job_flags`: the decorator adds the job options (--set, -A, -p, -N, --gpus, --cpus, --mem, -t,
--constraint, --after, --dependency, --exclude, --qos, --reservation, --mail-type, --mail-user,
--cluster) to the command's signature, where Typer sees them, and hands them to the command as one
`JobFlags`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # spec.resolve (and yaml) load when a command runs, not for --help
    from deltajobs.backends.base import Backend
    from deltajobs.spec.resolve import Overrides, ResolvedJob
    from deltajobs.spec.settings import Settings

JobArg = Annotated[str, typer.Argument(help="A job name from jobs/ (e.g. mnist) or a path to a YAML spec.")]
PayloadArg = Annotated[
    str | None,
    typer.Argument(
        help="What to run: a job spec (mnist, or a YAML path), a Python script (train.py), an sbatch script "
        "(train.sh); none with --command.",
        show_default=False,
        metavar="JOB",
    ),
]
ScriptArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="After --: the script's (or --command's) own arguments, passed verbatim.",
        show_default=False,
        metavar="-- ARGS",
    ),
]
JobIdArg = Annotated[str, typer.Argument(help="Job id (or `last`).")]
SweepIdArg = Annotated[str, typer.Argument(help="The sweep id `deltajobs sweep JOB ...` printed, e.g. sw-1a2b3c.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]
ClusterOpt = Annotated[
    str | None, typer.Option("--cluster", help="Cluster profile (delta, minidelta); default: detected.")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Submit even if the estimate exceeds balance or cap.")]
LocalOpt = Annotated[bool, typer.Option("--local", help="Run on this machine (submitit's local executor).")]
PlotOpt = Annotated[
    Path | None,
    typer.Option("--plot", help="Write a PNG (needs matplotlib): a job's curves, a sweep's metric per swept key."),
]


@dataclass
class JobFlags:
    """The command line's say about a job: `--set` overrides, the resource flags and the cluster."""

    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a spec key, dotted and typed by the schema: --set train.epochs=3"),
    ] = None
    account: Annotated[str | None, typer.Option("--account", "-A", help="Account to charge, e.g. bgvu-delta-gpu.")] = (
        None
    )
    partition: Annotated[
        str | None,
        typer.Option("--partition", "-p", help="Partition, or several: gpuA100x4,gpuA40x4 (the first to start wins)."),
    ] = None
    nodes: Annotated[int | None, typer.Option("--nodes", "-N", help="Number of nodes.")] = None
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs per node.")] = None
    cpus: Annotated[int | None, typer.Option("--cpus", help="CPUs per task.")] = None
    mem: Annotated[str | None, typer.Option("--mem", help="Memory per node, e.g. 16G.")] = None
    time: Annotated[str | None, typer.Option("--time", "-t", help="Walltime HH:MM:SS.")] = None
    constraint: Annotated[
        str | None, typer.Option("--constraint", help="File systems the job uses, e.g. projects&scratch.")
    ] = None
    after: Annotated[
        str | None, typer.Option("--after", help="Start after these jobs succeed: ID[,ID...] (afterok).")
    ] = None
    dependency: Annotated[
        str | None,
        typer.Option(
            "--dependency",
            help="SLURM dependency: KIND:ID[:ID] (after, afterany, afternotok, afterok), "
            "after:ID+MIN to stagger, or singleton.",
        ),
    ] = None
    exclude: Annotated[str | None, typer.Option("--exclude", help="Nodes not to run on: gpua001,gpub[010-012].")] = None
    qos: Annotated[str | None, typer.Option("--qos", help="Quality of service.")] = None
    reservation: Annotated[str | None, typer.Option("--reservation", help="Run in this reservation.")] = None
    mail_type: Annotated[str | None, typer.Option("--mail-type", help="E-mail on: BEGIN,END,FAIL, ...")] = None
    mail_user: Annotated[str | None, typer.Option("--mail-user", help="E-mail address for --mail-type.")] = None
    cluster: ClusterOpt = None
    command: Annotated[
        str | None,
        typer.Option(
            "--command",
            help="Run this command instead of JOB: split into words like a shell would, never run by one.",
        ),
    ] = None
    no_snapshot: Annotated[
        bool | None,
        typer.Option("--no-snapshot", help="Run the script's live files, not a copy taken at submit."),
    ] = None

    @property
    def overrides(self) -> Overrides:
        from deltajobs.spec.resolve import Overrides

        return Overrides(
            sets=list(self.sets or []),
            account=self.account,
            partition=self.partition,
            nodes=self.nodes,
            gpus=self.gpus,
            cpus=self.cpus,
            mem=self.mem,
            time=self.time,
            constraint=self.constraint,
            after=self.after,
            dependency=self.dependency,
            exclude=self.exclude,
            qos=self.qos,
            reservation=self.reservation,
            mail_type=self.mail_type,
            mail_user=self.mail_user,
        )

    def cluster_name(self, settings: Settings) -> str:
        from deltajobs.spec.context import active_cluster

        return active_cluster(settings, self.cluster)

    def job(self, job: str | None, args: list[str] | None = None) -> str | dict[str, Any]:
        """What JOB (with the arguments after --, or --command) names: a spec name or path as it
        is, or the raw spec of a script, an sbatch file or a command."""
        from deltajobs.payloads.choose import command_line_spec

        args = list(args or [])
        if self.command is not None and job is not None:  # `--command X -- --lr 3`: all of it is arguments
            args = [job, *args]
            job = None
        return command_line_spec(job, args, self.command, snapshot=not self.no_snapshot)

    def resolve(
        self, job: str | None, settings: Settings, *, args: list[str] | None = None, require_account: bool = True
    ) -> ResolvedJob:
        """The job, layered with the config and these flags, validated against the cluster."""
        from deltajobs.spec.resolve import resolve_job

        return resolve_job(
            self.job(job, args),
            self.overrides_for(settings),
            settings,
            self.cluster_name(settings),
            require_account=require_account,
        )

    def overrides_for(self, settings: Settings) -> Overrides:
        """`overrides`, with the run directories of --after's jobs (read from the registry)."""
        overrides = self.overrides
        if self.after:
            overrides.parents = self.parents(settings)
        return overrides

    def parents(self, settings: Settings) -> dict[str, str]:
        """--after's jobs that deltajobs submitted, with their run directories; a note for the others."""
        from deltajobs.cli.app import note
        from deltajobs.clusters.directives import after_dependency
        from deltajobs.jobs.pipeline import parent_dirs

        after_dependency(str(self.after))  # a malformed id is refused before the registry is read
        known, unknown = parent_dirs(settings, str(self.after))
        if unknown:
            note(
                f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not deltajobs' "
                "(waited for, but no DELTAJOBS_PARENT_RUN_DIR)"
            )
        return known


_FLAG_NAMES = [f.name for f in fields(JobFlags)]
_FLAG_PARAMS = [
    inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=inspect.get_annotations(JobFlags, eval_str=True)[name],
    )
    for name in _FLAG_NAMES
]

Command = TypeVar("Command", bound=Callable[..., Any])


def job_flags(command: Command) -> Command:
    """Give a command the job options; it receives them as `flags: JobFlags`."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "flags"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = JobFlags(**{name: kwargs.pop(name, None) for name in _FLAG_NAMES})
        return command(*args, flags=flags, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *_FLAG_PARAMS])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *_FLAG_PARAMS]}
    return wrapper  # type: ignore[return-value]


def chosen_backend(local: bool, settings: Settings) -> Backend:
    """The backend for `--local` (else SLURM, else local), telling the user once if it fell back."""
    from deltajobs import backends
    from deltajobs.cli.app import note

    backend, fallback = backends.choose(local, settings)
    if fallback:
        note(fallback)
    return backend
