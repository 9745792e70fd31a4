"""Job specs: load YAML, layer settings and overrides, validate against the cluster profile.

Layering, lowest first: built-in defaults < user config < environment variables < the job spec
< command-line flags (`--set KEY=VALUE` and the named flags such as `--partition`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from deltajobs.clusters import directives
from deltajobs.clusters.profile import ClusterProfile, Partition, load_profile
from deltajobs.clusters.units import format_mem, parse_mem_mb, parse_walltime
from deltajobs.errors import SpecError
from deltajobs.payloads.choose import complete_spec, launcher_tasks
from deltajobs.payloads.config import NAME_PATTERN, RunConfig
from deltajobs.schema import apply_override, check_constraints, constrained, from_dict, parse_override
from deltajobs.spec import assets, parents
from deltajobs.spec.settings import Settings
from deltajobs.train.config import TrainConfig

if TYPE_CHECKING:
    from deltajobs.payloads.base import Payload

MODULE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+/-]{0,127}"
ENV_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
CONSTRAINT_PATTERN = r"[A-Za-z0-9_]+([&|,][A-Za-z0-9_]+)*"


@dataclass(frozen=True)
class Resources:
    partition: str | None = None  # None: the profile's default; "a,b": whichever SLURM starts first
    nodes: int = constrained(1, minimum=1, maximum=1024)
    gpus_per_node: int = constrained(1, minimum=0)
    tasks_per_node: int | None = constrained(None, minimum=1, doc="None: one per GPU, else 1")
    cpus_per_task: int = constrained(1, minimum=1)
    mem: str = "16G"  # per node; 0 with exclusive: the whole node
    time: str = "00:30:00"
    constraint: str | None = constrained(None, pattern=CONSTRAINT_PATTERN)
    exclusive: bool = False
    max_requeues: int = constrained(3, minimum=0, maximum=100, doc="0: never requeue (--no-requeue)")
    signal_grace: int = constrained(120, minimum=10, maximum=3600, doc="seconds of warning")

    @property
    def ntasks_per_node(self) -> int:
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return max(1, self.gpus_per_node)

    @property
    def seconds(self) -> int:
        return parse_walltime(self.time)

    @property
    def mem_mb(self) -> float:
        return parse_mem_mb(self.mem)


@dataclass(frozen=True)
class Schedule:
    """When and how SLURM starts the job; each value is checked by `directives.schedule`."""

    dependency: str | None = None  # afterok:1234[:1235], after:1234+5, singleton, ... (sbatch -d)
    qos: str | None = None
    reservation: str | None = None
    exclude: str | None = None  # nodes never to run on: gpua001,gpub[010-012]
    mail_type: str | None = None  # BEGIN,END,FAIL, ...
    mail_user: str | None = None
    # --after's jobs that deltajobs knows: job id -> run directory (the child reads it: spec.parents)
    parents: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Environment:
    modules: list[str] | None = constrained(None, pattern=MODULE_PATTERN)  # None: the profile's
    venv: str | None = None  # a virtualenv to activate after the modules (inside a container: in it)
    inherit: bool = True  # no venv named: use the venv or conda env deltajobs runs in (deltajobs.payloads.pyenv)
    env: dict[str, str] = field(default_factory=dict)
    container: str | None = None  # an Apptainer image (.sif or docker://) the trainer runs in


@dataclass(frozen=True)
class JobSpec:
    name: str = constrained(pattern=NAME_PATTERN)
    description: str = ""
    account: str | None = None
    resources: Resources = field(default_factory=Resources)
    schedule: Schedule = field(default_factory=Schedule)
    environment: Environment = field(default_factory=Environment)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig | None = None  # the user's own code instead of the packaged trainer
    rerun_of: str | None = None  # set by `deltajobs rerun`: the job this run repeats

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data: `train` for the packaged trainer, else `run` (never both)."""
        data = dataclasses.asdict(self)
        data.pop("train" if self.run is not None else "run")
        return data


@dataclass(frozen=True)
class ResolvedJob:
    """A validated spec with everything layered in, and the profile it was checked against."""

    spec: JobSpec
    profile: ClusterProfile
    source: str  # the YAML file it came from

    @property
    def partitions(self) -> list[Partition]:
        """Every partition the job may run on (`--partition a,b`), in the order given."""
        text = self.spec.resources.partition or self.profile.default_partition
        return [self.profile.partition(name) for name in directives.partition_names(text)]

    @property
    def payload(self) -> Payload:
        """What the job runs: the packaged trainer, a script, a command, an sbatch file, a function."""
        from deltajobs.payloads.choose import payload_of

        return payload_of(self)

    @property
    def partition(self) -> Partition:
        """The first partition listed: the one limits are reported against."""
        return self.partitions[0]

    @property
    def modules(self) -> list[str]:
        """The profile's modules (none in a container) unless the spec names its own; multi-node
        jobs add the profile's `multi_node.modules` (Delta: the NCCL plugin for Slingshot)."""
        env = self.spec.environment
        default = [] if env.container else self.profile.modules
        modules = list(default if env.modules is None else env.modules)
        if self.spec.resources.nodes > 1:
            modules += [m for m in self.profile.multi_node.modules if m not in modules]
        return modules


@dataclass
class Overrides:
    """What the command line says about a job, highest in the layering."""

    sets: list[str] = field(default_factory=list)  # --set KEY=VALUE
    account: str | None = None
    partition: str | None = None
    nodes: int | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None
    constraint: str | None = None
    after: str | None = None  # --after 12,13: afterok on those jobs
    dependency: str | None = None  # --dependency KIND:ID[:ID][+MIN]
    exclude: str | None = None
    qos: str | None = None
    reservation: str | None = None
    mail_type: str | None = None
    mail_user: str | None = None
    parents: dict[str, str] | None = None  # --after's jobs deltajobs knows: id -> run directory (jobs.pipeline)

    def as_sets(self) -> list[tuple[list[str], Any]]:
        pairs = [parse_override(text) for text in self.sets]
        named = {
            ("account",): self.account,
            ("resources", "partition"): self.partition,
            ("resources", "nodes"): self.nodes,
            ("resources", "gpus_per_node"): self.gpus,
            ("resources", "cpus_per_task"): self.cpus,
            ("resources", "mem"): self.mem,
            ("resources", "time"): self.time,
            ("resources", "constraint"): self.constraint,
            ("schedule", "dependency"): self.dependency_text(),
            ("schedule", "exclude"): self.exclude,
            ("schedule", "qos"): self.qos,
            ("schedule", "reservation"): self.reservation,
            ("schedule", "mail_type"): self.mail_type,
            ("schedule", "mail_user"): self.mail_user,
        }
        pairs += [(list(key), value) for key, value in named.items() if value is not None]
        return pairs

    def dependency_text(self) -> str | None:
        """`--after` and `--dependency` as one sbatch value (both must hold)."""
        parts = [directives.after_dependency(self.after)] if self.after else []
        parts += [self.dependency] if self.dependency else []
        return ",".join(parts) or None


def job_names() -> list[str]:
    return sorted(p.stem for p in assets.path("jobs").glob("*.yaml"))


def find_job(job: str) -> Path:
    """`job` is a name from the packaged `jobs/` or a path to a YAML file."""
    candidate = Path(job).expanduser()
    if candidate.suffix in (".yaml", ".yml") or "/" in job:
        if candidate.is_file():
            return candidate
        raise SpecError("JOB", f"no such file: {job}")
    packaged = assets.path("jobs") / f"{job}.yaml"
    if packaged.is_file():
        return packaged
    raise SpecError("JOB", f"{job!r} is not a job spec; choose one of: {', '.join(job_names())}, or a .yaml path")


def read_job(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(str(path), f"is not valid YAML{where}") from None
    except OSError as err:
        raise SpecError(str(path), f"cannot be read ({err.strerror})") from None
    if not isinstance(raw, dict):
        raise SpecError(str(path), "must be a mapping with resources, environment and train")
    return raw


def resolve_job(
    job: str | dict[str, Any],
    overrides: Overrides | None,
    settings: Settings,
    cluster: str,
    *,
    require_account: bool = True,
) -> ResolvedJob:
    """Load, layer and validate a job: the single entry point for render, submit, train, sweep."""
    if isinstance(job, dict):
        source, raw = "<dict>", copy.deepcopy(job)
        base = Path.cwd()
    else:
        path = find_job(job)
        source, raw = str(path), read_job(path)
        base = path.parent
    overrides = overrides or Overrides()
    for parts, value in overrides.as_sets():
        apply_override(raw, parts, value)
    if overrides.parents is not None or parents.has_placeholder(raw):
        parents.apply(raw, overrides.parents or {})  # {after.run_dir} and DELTAJOBS_PARENT_RUN_DIR(S)
    if isinstance(raw.get("run"), dict):
        raw["run"] = run_paths(raw, base)
        launcher_tasks(raw)  # torchrun, accelerate launch: one per node, unless the spec says
    if raw.get("account") is None and settings.account:
        raw["account"] = settings.account
    train = raw.get("train")
    if isinstance(train, dict) and train.get("data_root") is None:
        train["data_root"] = str(settings.data_path)
    profile = load_profile(cluster)
    complete_spec(raw, profile)  # what the cluster gives where a user's sbatch script says nothing
    spec = from_dict(JobSpec, raw)
    resolved = ResolvedJob(spec=spec, profile=profile, source=source)
    validate(resolved, require_account=require_account)
    return resolved


INTERACTIVE = "-interactive"  # Delta's interactive partitions: the batch partition's name + this


def interactive_sibling(job: ResolvedJob, overrides: Overrides, settings: Settings) -> ResolvedJob | None:
    """The job on its partition's -interactive sibling (dearer per hour, quick to start, meant for
    interactive work: NCSA running_jobs.rst, 'Interactive Jobs'), validated again there; None where
    the job is there already, the profile has none, or the job's walltime is longer than it allows."""
    sibling = job.partition.name + INTERACTIVE
    if job.partition.interactive or sibling not in job.profile.partitions:
        return None
    if job.spec.resources.seconds > job.profile.partitions[sibling].max_seconds:
        return None
    raw = job.spec.to_dict()
    raw["resources"]["partition"] = sibling
    resolved = resolve_job(raw, dataclasses.replace(overrides, partition=None), settings, job.profile.name)
    return dataclasses.replace(resolved, source=job.source)


def run_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """A `run:` section's files made absolute: the script and sbatch file relative to the spec's
    directory, the working directory defaulting to where deltajobs runs (sbatch's rule)."""
    from deltajobs.payloads.choose import check_run

    if "train" in raw:
        raise SpecError("run", "a spec has either train: (the packaged trainer) or run: (your own code), not both")
    run = dict(raw["run"])
    check_run(run)
    for key in ("script", "sbatch", "notebook"):
        if isinstance(run.get(key), str):
            run[key] = os.path.normpath((base / Path(run[key]).expanduser()).absolute())
    workdir = run.get("workdir")
    run["workdir"] = str((base / Path(workdir).expanduser()).absolute() if workdir else Path.cwd().absolute())
    return run


def validate(job: ResolvedJob, *, require_account: bool = True) -> None:
    """Check the spec against the profile's partitions and limits; raise SpecError on the first fault."""
    spec, profile = job.spec, job.profile
    res = spec.resources
    parts = job.partitions  # raises for an unknown partition
    if len({part.kind for part in parts}) > 1:
        raise SpecError("resources.partition", f"{res.partition!r} mixes GPU and CPU partitions; list one kind")
    for part in parts:
        validate_partition(job, part)
    seconds = res.seconds
    if res.signal_grace >= seconds and not job.payload.as_written:  # deltajobs' own signal
        raise SpecError("resources.signal_grace", f"{res.signal_grace}s must be shorter than the walltime ({res.time})")
    for key in spec.environment.env:
        check_constraints(key, f"environment.env.{key}", {"pattern": ENV_KEY_PATTERN})
    if res.constraint:
        directives.constraint(res.constraint, profile)
    directives.schedule(dataclasses.asdict(spec.schedule))
    if spec.environment.container:
        directives.container(spec.environment.container)
    if require_account:
        validate_account(spec.account, parts[0], profile)
    job.payload.check()


def validate_partition(job: ResolvedJob, part: Partition) -> None:
    """Check the request against one partition's node shape and limits."""
    res, pname = job.spec.resources, part.name
    if part.unsupported and job.payload.needs_cuda:
        usable = [p.name for p in job.profile.partitions.values() if p.kind == part.kind and not p.unsupported]
        raise SpecError(
            "resources.partition",
            f"{pname} cannot run deltajobs jobs: {part.unsupported}; choose one of: {', '.join(usable)}",
        )
    if part.kind == "gpu" and not 1 <= res.gpus_per_node <= part.gpus:
        raise SpecError("resources.gpus_per_node", f"{res.gpus_per_node} on {pname}; choose 1 to {part.gpus}")
    if part.kind == "cpu" and res.gpus_per_node != 0:
        raise SpecError(
            "resources.gpus_per_node", f"{res.gpus_per_node} on CPU partition {pname}; it must be 0 (--gpus 0)"
        )
    if part.max_nodes is not None and res.nodes > part.max_nodes:
        raise SpecError("resources.nodes", f"{res.nodes} on {pname}; choose 1 to {part.max_nodes}")
    cpus = res.ntasks_per_node * res.cpus_per_task
    if cpus > part.cpus:
        raise SpecError(
            "resources.cpus_per_task",
            f"{res.cpus_per_task} x {res.ntasks_per_node} task(s) = {cpus} CPUs per node on {pname}; "
            f"the node has {part.cpus}",
        )
    if res.gpus_per_node and job.payload.one_task_per_gpu and res.ntasks_per_node not in (1, res.gpus_per_node):
        raise SpecError(
            "resources.tasks_per_node", f"{res.ntasks_per_node}; choose 1 or {res.gpus_per_node} (one per GPU)"
        )
    mem_mb = res.mem_mb
    format_mem(res.mem)
    if mem_mb == 0 and not res.exclusive and not job.payload.as_written:  # SLURM takes --mem=0 alone
        raise SpecError("resources.mem", "0 (the whole node) needs resources.exclusive: true")
    if mem_mb > (part.mem_max_gb if job.payload.as_written else part.mem_gb) * 1024:
        raise SpecError("resources.mem", f"{res.mem} on {pname}; at most {part.mem_gb:g}G per node")
    seconds = res.seconds
    if seconds <= 0 or seconds > part.max_seconds:
        raise SpecError("resources.time", f"{res.time} on {pname}; choose 00:00:01 to {part.max_time}")


def validate_account(account: str | None, part: Partition, profile: ClusterProfile) -> None:
    suffix = profile.account_suffix[part.kind]
    if not account:
        raise SpecError(
            "account",
            f"not set; pass --account, set DELTAJOBS_ACCOUNT or run `deltajobs init` (a *{suffix} account)",
        )
    check_constraints(account, "account", {"pattern": profile.account_pattern})
    if not account.endswith(suffix):
        code = account.split("-", 1)[0]
        raise SpecError(
            "account", f"{account!r} cannot be charged on {part.kind.upper()} partition {part.name}; use {code}{suffix}"
        )
