"""Cluster profiles: partitions, limits and charge factors, loaded from `clusters/*.yaml`.

Cluster facts live in those files, never in code. `load_profile` reads one; `detect_cluster`
asks a reachable SLURM for its ClusterName so that the matching profile is picked by default.
User profiles (`deltajobs cluster discover` writes them) live in ~/.config/deltajobs/clusters/
and are used exactly like built-in ones; one named like a built-in profile replaces it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from deltajobs.clusters.units import parse_walltime
from deltajobs.errors import SpecError
from deltajobs.paths import config_path
from deltajobs.schema import constrained, from_dict

PROFILE_DIR = Path(__file__).parent


# How the largest term (GPU-equivalents needed) becomes the units billed: "none" bills the fraction
# (Delta); whole units, one at least: "up" (ceil), "nearest" (a half rounded down), "down" (truncated).
Rounding = Literal["none", "up", "nearest", "down"]
ROUNDING_WORDS = {"up": "rounded up", "nearest": "to the nearest whole (a half down)", "down": "rounded down"}
EPSILON = 1e-9  # 300 GB / 120 GB is 2.5000000000000004 in floats: a half, not more


@dataclass(frozen=True)
class Reading:
    """One way of billing the largest term (`rounding`), and where it comes from (`source`)."""

    rounding: Rounding = "none"
    source: str = ""

    def units(self, largest: float) -> float:
        """The units billed per node for `largest` GPU-equivalents: 2.5 is 3 "up", 2 "nearest"."""
        if self.rounding == "none":
            return largest
        if self.rounding == "up":
            whole = math.ceil(largest - EPSILON)
        elif self.rounding == "nearest":
            whole = math.ceil(largest - 0.5 - EPSILON)
        else:
            whole = math.floor(largest + EPSILON)
        return float(max(1, whole))

    @property
    def words(self) -> str:
        return ROUNDING_WORDS.get(self.rounding, "")

    @property
    def name(self) -> str:
        return self.source or f"rounding {self.rounding}"


@dataclass(frozen=True)
class GpuEquivalent:
    """How many cores, and how much memory, SLURM bills as one GPU on this node type, and how the
    number a job needs is billed (`rounding`: DeltaAI bills whole GH200 superchips). Where the
    source reads two ways, `rounding_alt` is the other reading: the estimate shows both where they
    differ and the budget guard takes the larger. The sources name each reading in the estimate."""

    cpus: float = constrained(exclusive_minimum=0)
    mem_gb: float = constrained(exclusive_minimum=0)
    rounding: Rounding = "none"
    rounding_source: str = ""
    rounding_alt: Rounding | None = None
    rounding_alt_source: str = ""

    @property
    def readings(self) -> tuple[Reading, ...]:
        """Each reading of the rule, the headline first."""
        headline = Reading(self.rounding, self.rounding_source)
        if self.rounding_alt is None:
            return (headline,)
        return (headline, Reading(self.rounding_alt, self.rounding_alt_source))


@dataclass(frozen=True)
class ChargeMinimum:
    """The least a job is billed, whatever the formula gives (`su` 0: no minimum). `array_tasks`:
    whether each task of a job array pays it ("each": SLURM accounts every task as a job) or the
    array once ("whole"). `source` names where the figure comes from; the estimate shows it."""

    su: float = constrained(0.0, minimum=0)
    array_tasks: Literal["each", "whole"] = "each"
    source: str = ""


@dataclass(frozen=True)
class Partition:
    kind: Literal["gpu", "cpu"]
    gpus: int = constrained(minimum=0)
    cpus: int = constrained(minimum=1)
    mem_gb: float = constrained(exclusive_minimum=0)
    # The node's installed memory (GB); `--mem` gets "5 to 10 percent less" (Delta's architecture.rst),
    # so a request between mem_gb and 95% of this is warned about, above it refused. None: mem_gb is all.
    mem_installed_gb: float | None = constrained(None, exclusive_minimum=0)
    max_time: str = "48:00:00"
    charge_factor: float = constrained(1.0, minimum=0)
    gpu_type: str | None = None
    max_nodes: int | None = constrained(None, minimum=1)
    gpu_equiv: GpuEquivalent | None = None  # gpu partitions
    mem_gb_per_cpu: float | None = None  # cpu partitions: memory billed as one core
    interactive: bool = False
    preempt: bool = False
    unsupported: str | None = None  # why deltajobs cannot run jobs here (e.g. ROCm GPUs); None: it can
    charge_unit: str | None = None  # the unit gpu_equiv counts, by name ("GH200"); None: GPU-equivalent
    name: str = ""
    charge_mem_unit_bytes: float = 2**30  # copied from the profile by load_profile
    charge_minimum: ChargeMinimum = ChargeMinimum()  # likewise

    @property
    def max_seconds(self) -> int:
        return parse_walltime(self.max_time, f"partitions.{self.name}.max_time")

    @property
    def mem_max_gb(self) -> float:
        """The most `--mem` a node may grant (SLURM's G): 5% under the installed memory, else mem_gb."""
        return max(self.mem_gb, math.floor(self.mem_installed_gb * 0.95)) if self.mem_installed_gb else self.mem_gb

    @property
    def whole_node_units(self) -> float:
        """What the whole node counts for in the charge formula: its GPUs, or on a CPU node its cores."""
        return float(self.gpus if self.kind == "gpu" else self.cpus)


@dataclass(frozen=True)
class MultiNode:
    """What jobs on more than one node load and export on top of the profile's modules."""

    modules: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    description: str
    slurm_cluster_name: str
    default_partition: str
    partitions: dict[str, Partition]
    account_pattern: str
    account_suffix: dict[str, str]
    modules: list[str] = field(default_factory=list)
    module_reset: bool = True
    python: str | None = None
    # Where job I/O belongs, `{group}` the account's code and `{user}` the login: `init` proposes
    # runs there (NCSA says $HOME is not for job I/O). None: no such place is known.
    work_dir: str | None = None
    default_mem_per_cpu_mb: int = 1000
    default_time: str = "00:30:00"  # the walltime SLURM gives a job that names none
    distributed_env: dict[str, str] = field(default_factory=dict)
    # Bytes in the "GB" of the charge formula (NCSA: 1e9); SLURM's G suffix is 2**30.
    charge_mem_unit_bytes: float = constrained(2**30, exclusive_minimum=0)
    multi_node: MultiNode = field(default_factory=lambda: MultiNode())
    constraints: list[str] = field(default_factory=list)  # --constraint labels; empty: any label
    charge_minimum: ChargeMinimum = field(default_factory=ChargeMinimum)
    # The compute nodes' CPU architecture, as `uname -m` prints it; None: not checked.
    arch: str | None = constrained(None, pattern=r"x86_64|aarch64|ppc64le")
    title: str = ""  # the system's name in messages ("DeltaAI"); empty: the profile's name
    # SLURM's MaxArraySize (`scontrol show config`): an array's task ids run 0..MaxArraySize-1, so a
    # sweep needs at most this many tasks; None: not known, not checked. Its source, or "a guess".
    max_array_size: int | None = constrained(None, minimum=1)
    max_array_size_source: str = ""

    def partition(self, name: str, field_name: str = "resources.partition") -> Partition:
        try:
            return self.partitions[name]
        except KeyError:
            valid = ", ".join(self.partitions)
            raise SpecError(
                field_name, f"partition {name!r} is unknown on {self.name}; choose one of: {valid}"
            ) from None


def user_profile_dir() -> Path:
    """Where `deltajobs cluster discover` writes profiles: ~/.config/deltajobs/clusters/."""
    return config_path().parent / "clusters"


def profile_paths() -> dict[str, Path]:
    """Every profile by name; a user profile replaces a built-in one of the same name."""
    paths = {p.stem: p for p in sorted(PROFILE_DIR.glob("*.yaml"))}
    paths.update({p.stem: p for p in sorted(user_profile_dir().glob("*.yaml"))})
    return dict(sorted(paths.items()))


def profile_names() -> list[str]:
    return list(profile_paths())


def load_profile(name: str) -> ClusterProfile:
    path = profile_paths().get(name)
    if path is None:
        raise SpecError("cluster", f"{name!r} is unknown; choose one of: {', '.join(profile_names())}")
    return _load_profile_file(path, path.stat().st_mtime_ns)


@functools.cache
def _load_profile_file(path: Path, _mtime_ns: int) -> ClusterProfile:
    """Cached per file version, so a profile written in this process is read afresh."""
    raw = yaml.safe_load(path.read_text())
    return parse_profile(raw, f"clusters/{path.name}" if path.parent == PROFILE_DIR else str(path))


def parse_profile(raw: object, where: str) -> ClusterProfile:
    """A profile from the parsed YAML of a clusters/*.yaml file; `where` names it in errors."""
    profile = from_dict(ClusterProfile, raw, where)
    unit, minimum = profile.charge_mem_unit_bytes, profile.charge_minimum
    named = {
        n: dataclasses.replace(p, name=n, charge_mem_unit_bytes=unit, charge_minimum=minimum)
        for n, p in profile.partitions.items()
    }
    if profile.default_partition not in named:
        raise SpecError(f"{where}.default_partition", "names no partition of the profile")
    return dataclasses.replace(profile, partitions=named)


def profile_for_cluster_name(cluster_name: str) -> str | None:
    """The profile whose `slurm_cluster_name` is `cluster_name`, if any; user profiles first."""
    users = {p.stem for p in user_profile_dir().glob("*.yaml")}
    for name in sorted(profile_names(), key=lambda n: n not in users):
        if load_profile(name).slurm_cluster_name == cluster_name:
            return name
    return None


# -- the nodes' CPU architecture against an environment's interpreter -----------------------------

ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x15: "ppc64le"}  # ELF e_machine values
ARCH_NAMES = {"x86_64": "x86", "aarch64": "Arm", "ppc64le": "POWER"}


def executable_arch(path: str | Path) -> str | None:
    """The CPU an ELF executable was built for ("x86_64", "aarch64"), following symlinks (a venv's
    bin/python links to its base interpreter); None when it cannot be read or is not ELF."""
    try:
        with open(path, "rb") as binary:
            header = binary.read(20)
    except OSError:
        return None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"ELF machine {machine:#x}")


def arch_mismatch(profile: ClusterProfile, python: str | Path, what: str = "venv", here: str = "") -> str | None:
    """Why the interpreter `python` (of a venv, a conda env) cannot run on the profile's nodes, or
    None: it can, or one of the two is unknown. `here` is this machine's `uname -m`."""
    built = executable_arch(python) if profile.arch else None
    if built is None or built == profile.arch:
        return None
    system = profile.title or profile.name
    login = " (this login node)" if built == (here or platform.machine()) else ""
    nodes = f"{ARCH_NAMES.get(str(profile.arch), profile.arch)} ({profile.arch})"
    fix = f"make a {what} on a {system} login node"
    return f"this {what} was built for {built}{login}; {system}'s nodes are {nodes}: {fix}"
