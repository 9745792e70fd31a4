"""Cluster profiles: partitions, limits and charge factors, loaded from `clusters/*.yaml`.

Cluster facts live in those files, never in code. `load_profile` reads one; `detect_cluster`
asks a reachable SLURM for its ClusterName so that the matching profile is picked by default.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from deltajobs.errors import SpecError
from deltajobs.schema import constrained, from_dict
from deltajobs.units import parse_walltime

PROFILE_DIR = Path(__file__).parent / "clusters"


@dataclass(frozen=True)
class GpuEquivalent:
    """How many cores, and how much memory, SLURM bills as one GPU on this node type."""

    cpus: float = constrained(exclusive_minimum=0)
    mem_gb: float = constrained(exclusive_minimum=0)


@dataclass(frozen=True)
class Partition:
    kind: Literal["gpu", "cpu"]
    gpus: int = constrained(minimum=0)
    cpus: int = constrained(minimum=1)
    mem_gb: float = constrained(exclusive_minimum=0)
    max_time: str = "48:00:00"
    charge_factor: float = constrained(1.0, minimum=0)
    gpu_type: str | None = None
    max_nodes: int | None = constrained(None, minimum=1)
    gpu_equiv: GpuEquivalent | None = None  # gpu partitions
    mem_gb_per_cpu: float | None = None  # cpu partitions: memory billed as one core
    interactive: bool = False
    preempt: bool = False
    name: str = ""

    @property
    def max_seconds(self) -> int:
        return parse_walltime(self.max_time, f"partitions.{self.name}.max_time")


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
    default_mem_per_cpu_mb: int = 1000
    distributed_env: dict[str, str] = field(default_factory=dict)

    def partition(self, name: str, field_name: str = "resources.partition") -> Partition:
        try:
            return self.partitions[name]
        except KeyError:
            valid = ", ".join(self.partitions)
            raise SpecError(
                field_name, f"partition {name!r} is unknown on {self.name}; choose one of: {valid}"
            ) from None


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


@functools.cache
def load_profile(name: str) -> ClusterProfile:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError("cluster", f"{name!r} is unknown; choose one of: {', '.join(profile_names())}")
    raw = yaml.safe_load(path.read_text())
    profile = from_dict(ClusterProfile, raw, f"clusters/{name}.yaml")
    named = {n: dataclasses.replace(p, name=n) for n, p in profile.partitions.items()}
    if profile.default_partition not in named:
        raise SpecError(f"clusters/{name}.yaml.default_partition", "names no partition of the profile")
    return dataclasses.replace(profile, partitions=named)


def profile_for_cluster_name(cluster_name: str) -> str | None:
    """The profile whose `slurm_cluster_name` is `cluster_name`, if any."""
    for name in profile_names():
        if load_profile(name).slurm_cluster_name == cluster_name:
            return name
    return None
