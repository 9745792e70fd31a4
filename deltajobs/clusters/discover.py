"""What a live SLURM says about itself: pure parsers of `scontrol show partition/node/config`.

`deltajobs cluster discover` makes one call of each (`discover_argvs`), parses them here into
dataclasses and hands them to `discover_profile.build_profile`. The parsers accept the one-line
form (`-o`) and the multi-line form alike: a record starts at `PartitionName=` or `NodeName=`, and
a field is `Key=value` up to the next ` Key=` (values may hold spaces, as `OS=Linux 6.1 #1 SMP`).
They are total: a record with a value they cannot read is left out with a warning (on the `Parsed`
list they return); only output with no readable record at all is a SlurmError.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from deltajobs.errors import SlurmError
from deltajobs.slurm.parse import Parsed

DISCOVER_ARGVS = (
    ["scontrol", "show", "partition", "-o"],
    ["scontrol", "show", "node", "-o"],
    ["scontrol", "show", "config"],
)
UNLIMITED = frozenset({"UNLIMITED", "INFINITE", "NONE", "N/A", ""})

R = TypeVar("R")

_FIELD = re.compile(r"(?<!\S)([A-Z][A-Za-z0-9_/:.\-]*)=")
_TIME = re.compile(r"(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)??(?:(?P<m>\d+):)?(?P<s>\d+)")
_MEM_WEIGHT = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>[KMGT]?)", re.IGNORECASE)
_PER_GB = {"K": 1024 * 1024, "M": 1024, "": 1024, "G": 1, "T": 1 / 1024}  # weight per unit -> per GB
_CONFIG_MB = re.compile(r"(?P<n>\d+)(?: ?MB?)?")  # `1000`, or `1000 MB` as older Slurm prints it


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as `scontrol show partition` prints it (limits per job and per node)."""

    name: str
    default: bool
    max_time_s: int | None  # None: UNLIMITED
    max_nodes: int | None
    max_cpus_per_node: int | None
    max_mem_per_node_mb: int | None
    priority_tier: int
    preempt_mode: str
    total_nodes: int
    tres: dict[str, str]  # the partition's totals: cpu, mem, node, billing, gres/gpu[:type]
    billing_weights: str  # TRESBillingWeights as printed ("" when not set)
    # The partition's own per-CPU memory limit and default (None: not set here; for MaxMemPerCPU,
    # the cluster's then applies unless MaxMemPerNode is set here).
    max_mem_per_cpu_mb: int | None = None
    def_mem_per_cpu_mb: int | None = None


@dataclass(frozen=True)
class NodeInfo:
    """One node as `scontrol show node` prints it."""

    name: str
    cpus: int  # CPUEfctv (without specialised cores) where SLURM prints it, else CPUTot
    real_memory_mb: int
    mem_spec_limit_mb: int  # memory reserved for the system: jobs cannot have it
    gpus: int
    gpu_types: tuple[str, ...]
    partitions: tuple[str, ...]

    @property
    def usable_mem_mb(self) -> int:
        """What `--mem` can get on this node: RealMemory minus MemSpecLimit."""
        return self.real_memory_mb - self.mem_spec_limit_mb


@dataclass(frozen=True)
class ConfigInfo:
    """The few lines of `scontrol show config` a profile needs."""

    cluster_name: str
    priority_flags: tuple[str, ...]
    def_mem_per_cpu_mb: int | None
    # The cluster's memory limits, for partitions that set none of their own (None: UNLIMITED).
    max_mem_per_cpu_mb: int | None = None
    max_mem_per_node_mb: int | None = None
    warnings: tuple[str, ...] = ()  # values it could not read (then taken as not set)
    max_array_size: int | None = None  # MaxArraySize: array task ids run 0..MaxArraySize-1

    @property
    def max_tres(self) -> bool:
        """PriorityFlags=MAX_TRES: billing is the largest weighted TRES, not their sum."""
        return "MAX_TRES" in self.priority_flags


def parse_records(text: str, first_key: str, command: str) -> list[dict[str, str]]:
    """`Key=value ...` records, each starting at `first_key=`; `#` lines are comments."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    body = "\n".join(lines).strip()
    if not body:
        return []
    if not body.startswith(f"{first_key}="):
        raise SlurmError(f"{command} printed {lines[0][:60]!r}; expected records starting {first_key}=")
    records = []
    for chunk in re.split(rf"(?<!\S)(?={first_key}=)", body):
        if not chunk.strip():
            continue
        matches = list(_FIELD.finditer(chunk))
        fields = {}
        for match, following in zip(matches, [*matches[1:], None], strict=True):
            end = following.start() if following else len(chunk)
            fields[match[1]] = chunk[match.end() : end].strip()
        records.append(fields)
    return records


def parse_partitions(text: str) -> Parsed[PartitionInfo]:
    """`scontrol show partition [-o]` -> one PartitionInfo per partition, in SLURM's order."""
    return _each_record(text, "PartitionName", "scontrol show partition", _partition)


def _partition(rec: dict[str, str], where: str) -> PartitionInfo:
    return PartitionInfo(
        name=rec["PartitionName"],
        default=rec.get("Default", "NO").upper() == "YES",
        max_time_s=parse_slurm_time(rec.get("MaxTime", "UNLIMITED"), f"{where} MaxTime"),
        max_nodes=_limit(rec.get("MaxNodes", "UNLIMITED"), f"{where} MaxNodes"),
        max_cpus_per_node=_limit(rec.get("MaxCPUsPerNode", "UNLIMITED"), f"{where} MaxCPUsPerNode"),
        max_mem_per_node_mb=_limit(rec.get("MaxMemPerNode", "UNLIMITED"), f"{where} MaxMemPerNode"),
        priority_tier=_limit(rec.get("PriorityTier", "1"), f"{where} PriorityTier") or 0,
        preempt_mode=rec.get("PreemptMode", "OFF").upper(),
        total_nodes=_limit(rec.get("TotalNodes", "0"), f"{where} TotalNodes") or 0,
        tres=parse_tres_list(rec.get("TRES", "")),
        billing_weights=rec.get("TRESBillingWeights", "").strip('"'),
        max_mem_per_cpu_mb=_limit(rec.get("MaxMemPerCPU", "UNLIMITED"), f"{where} MaxMemPerCPU"),
        def_mem_per_cpu_mb=_limit(rec.get("DefMemPerCPU", "UNLIMITED"), f"{where} DefMemPerCPU"),
    )


def parse_nodes(text: str) -> Parsed[NodeInfo]:
    """`scontrol show node [-o]` -> one NodeInfo per node."""
    return _each_record(text, "NodeName", "scontrol show node", _node)


def _node(rec: dict[str, str], where: str) -> NodeInfo:
    gpus, types = parse_gres_gpus(rec.get("Gres", "(null)"), where)
    return NodeInfo(
        name=rec["NodeName"],
        cpus=_number(rec.get("CPUEfctv") or rec.get("CPUTot", ""), f"{where} CPUTot"),
        real_memory_mb=_number(rec.get("RealMemory", ""), f"{where} RealMemory"),
        mem_spec_limit_mb=_number(rec.get("MemSpecLimit", "0"), f"{where} MemSpecLimit"),
        gpus=gpus,
        gpu_types=types,
        partitions=tuple(p for p in rec.get("Partitions", "").split(",") if p),
    )


def _each_record(text: str, first_key: str, command: str, read: Callable[[dict[str, str], str], R]) -> Parsed[R]:
    """`read` applied to each record; a record it cannot read is left out with a warning, and
    output with records but none readable is a SlurmError (the first record's error)."""
    records: Parsed[R] = Parsed()
    what = first_key.removesuffix("Name").lower()  # partition, node
    for rec in parse_records(text, first_key, command):
        try:
            records.append(read(rec, f"{command}: {what} {rec[first_key]}"))
        except SlurmError as err:
            records.warnings.append(f"{err}; left out")
    if records.warnings and not records:
        raise SlurmError(records.warnings[0].removesuffix("; left out"))
    return records


def parse_config(text: str) -> ConfigInfo:
    """`scontrol show config` (`Key = value` lines) -> ConfigInfo; ClusterName must be there.

    A memory value it cannot read is a warning and taken as not set."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    if not values.get("ClusterName"):
        raise SlurmError("scontrol show config printed no `ClusterName = NAME` line")
    flags = values.get("PriorityFlags", "")
    warnings: list[str] = []

    def megabytes(key: str) -> int | None:
        """`1000` (or `1000 MB`) -> 1000; UNLIMITED, 0 or absent -> None."""
        value = values.get(key, "UNLIMITED")
        match = _CONFIG_MB.fullmatch(value)
        if match:
            return int(match["n"]) or None
        if value.upper() not in UNLIMITED:
            warnings.append(f"scontrol show config: {key} = {value!r} is not a number of MB; taken as not set")
        return None

    array_size = _array_size(values.get("MaxArraySize"), warnings)
    return ConfigInfo(
        cluster_name=values["ClusterName"],
        priority_flags=tuple(f.strip().upper() for f in flags.split(",") if f.strip() and f != "(null)"),
        def_mem_per_cpu_mb=megabytes("DefMemPerCPU"),
        max_mem_per_cpu_mb=megabytes("MaxMemPerCPU"),
        max_mem_per_node_mb=megabytes("MaxMemPerNode"),
        warnings=tuple(warnings),
        max_array_size=array_size,
    )


def _array_size(value: str | None, warnings: list[str]) -> int | None:
    """MaxArraySize: a positive count, or None (absent, 0: arrays disabled, or unreadable: said)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value) or None
    warnings.append(f"scontrol show config: MaxArraySize = {value!r} is not a number; taken as not set")
    return None


def parse_gres_gpus(gres: str, where: str = "scontrol show node") -> tuple[int, tuple[str, ...]]:
    """`gpu:a100:4(S:0-1),gpu:v100:2` -> (6, ("a100", "v100")); `gpu:4` -> (4, ()); `(null)` -> (0, ())."""
    count, types = 0, []
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        number = parts[-1] if parts[-1].isdigit() else ""
        if not number:
            raise SlurmError(f"{where} Gres={gres!r}; expected gpu[:TYPE]:COUNT")
        count += int(number)
        if len(parts) >= 3:
            types.append(parts[1])
    return count, tuple(dict.fromkeys(types))


def parse_tres_list(text: str) -> dict[str, str]:
    """`cpu=64,mem=240G,gres/gpu=4` -> dict (keys lower-cased: SLURM is case-blind there)."""
    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {key.strip().lower(): value.strip() for key, sep, value in pairs if sep}


def parse_billing_weights(text: str, where: str) -> dict[str, float]:
    """`CPU=62.5,Mem=16G,GRES/gpu=1000` -> {"cpu": 62.5, "mem_gb": 16.0, "gres/gpu": 1000.0}.

    A memory weight is per MB unless it carries a unit (`16G`: per GB); it comes back per GB.
    """
    weights = {}
    for key, value in parse_tres_list(text).items():
        if key == "mem":
            match = _MEM_WEIGHT.fullmatch(value)
            if not match:
                raise SlurmError(f"{where}: TRESBillingWeights Mem={value!r}; expected a number with K/M/G/T")
            weights["mem_gb"] = float(match["n"]) * _PER_GB[match["unit"].upper()]
            continue
        try:
            weights[key] = float(value)
        except ValueError:
            raise SlurmError(f"{where}: TRESBillingWeights {key}={value!r}; expected a number") from None
    return weights


def parse_slurm_time(text: str, where: str) -> int | None:
    """SLURM's `D-HH:MM:SS`, `HH:MM:SS`, `MM:SS` or minutes -> seconds; UNLIMITED -> None."""
    text = text.strip()
    if text.upper() in UNLIMITED:
        return None
    match = _TIME.fullmatch(text)
    if not match:
        raise SlurmError(f"{where}={text!r}; expected D-HH:MM:SS, HH:MM:SS or UNLIMITED")
    if match["h"] is None and match["m"] is None and match["d"] is None:
        return int(match["s"]) * 60  # a bare number is minutes
    days, hours, minutes = int(match["d"] or 0), int(match["h"] or 0), int(match["m"] or 0)
    return ((days * 24 + hours) * 60 + minutes) * 60 + int(match["s"])


def parse_mem_mb(text: str) -> float | None:
    """TRES memory (`240G`, `980000M`, `1T`) -> MB; a bare number is MB."""
    match = _MEM_WEIGHT.fullmatch(text.strip())
    if not match:
        return None
    return float(match["n"]) * {"K": 1 / 1024, "M": 1, "": 1, "G": 1024, "T": 1024**2}[match["unit"].upper()]


def _limit(text: str, where: str) -> int | None:
    text = text.strip()
    if text.upper() in UNLIMITED:
        return None
    return _number(text, where)


def _number(text: str, where: str) -> int:
    if not text.strip().isdigit():
        raise SlurmError(f"{where}={text!r}; expected a whole number")
    return int(text)
