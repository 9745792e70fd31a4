"""Job specs: load YAML, layer settings and overrides, validate against the cluster profile.

Layering, lowest first: built-in defaults < user config < environment variables < the job spec
< command-line flags (`--set KEY=VALUE` and the named flags such as `--partition`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deltajobs import assets
from deltajobs.cluster import ClusterProfile, Partition, load_profile
from deltajobs.config import Settings
from deltajobs.errors import SpecError
from deltajobs.schema import apply_override, check_constraints, constrained, from_dict, parse_override
from deltajobs.train.config import TrainConfig
from deltajobs.units import format_mem, parse_mem_mb, parse_walltime

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
MODULE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+/-]{0,127}"
ENV_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
CONSTRAINT_PATTERN = r"[A-Za-z0-9_]+([&|,][A-Za-z0-9_]+)*"


@dataclass(frozen=True)
class Resources:
    partition: str | None = None  # None: the profile's default partition
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
class Environment:
    modules: list[str] | None = constrained(None, pattern=MODULE_PATTERN)  # None: the profile's
    venv: str | None = None  # a virtualenv to activate after the modules
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSpec:
    name: str = constrained(pattern=NAME_PATTERN)
    description: str = ""
    account: str | None = None
    resources: Resources = field(default_factory=Resources)
    environment: Environment = field(default_factory=Environment)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ResolvedJob:
    """A validated spec with everything layered in, and the profile it was checked against."""

    spec: JobSpec
    profile: ClusterProfile
    source: str  # the YAML file it came from

    @property
    def partition(self) -> Partition:
        return self.profile.partition(self.spec.resources.partition or self.profile.default_partition)

    @property
    def modules(self) -> list[str]:
        env = self.spec.environment
        return list(self.profile.modules if env.modules is None else env.modules)


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
        }
        pairs += [(list(key), value) for key, value in named.items() if value is not None]
        return pairs


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
    else:
        path = find_job(job)
        source, raw = str(path), read_job(path)
    for parts, value in (overrides or Overrides()).as_sets():
        apply_override(raw, parts, value)
    if raw.get("account") is None and settings.account:
        raw["account"] = settings.account
    train = raw.get("train")
    if isinstance(train, dict) and train.get("data_root") is None:
        train["data_root"] = str(settings.data_path)
    spec = from_dict(JobSpec, raw)
    profile = load_profile(cluster)
    resolved = ResolvedJob(spec=spec, profile=profile, source=source)
    validate(resolved, require_account=require_account)
    return resolved


def validate(job: ResolvedJob, *, require_account: bool = True) -> None:
    """Check the spec against the profile's partitions and limits; raise SpecError on the first fault."""
    spec, profile = job.spec, job.profile
    res = spec.resources
    part = job.partition  # raises for an unknown partition
    pname = part.name
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
    if res.gpus_per_node and res.ntasks_per_node not in (1, res.gpus_per_node):
        raise SpecError(
            "resources.tasks_per_node", f"{res.ntasks_per_node}; choose 1 or {res.gpus_per_node} (one per GPU)"
        )
    mem_mb = res.mem_mb
    format_mem(res.mem)
    if mem_mb == 0 and not res.exclusive:
        raise SpecError("resources.mem", "0 (the whole node) needs resources.exclusive: true")
    if mem_mb > part.mem_gb * 1024:
        raise SpecError("resources.mem", f"{res.mem} on {pname}; at most {part.mem_gb:g}G per node")
    seconds = res.seconds
    if seconds <= 0 or seconds > part.max_seconds:
        raise SpecError("resources.time", f"{res.time} on {pname}; choose 00:00:01 to {part.max_time}")
    if res.signal_grace >= seconds:
        raise SpecError("resources.signal_grace", f"{res.signal_grace}s must be shorter than the walltime ({res.time})")
    for key in spec.environment.env:
        check_constraints(key, f"environment.env.{key}", {"pattern": ENV_KEY_PATTERN})
    if require_account:
        validate_account(spec.account, part, profile)


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
