"""A cluster profile from what SLURM says (`discover.py`): partitions, limits and charge rules.

Per partition: GPUs (with their type), CPUs and the memory `--mem` can get (RealMemory minus
MemSpecLimit, capped by MaxCPUsPerNode, MaxMemPerNode and MaxMemPerCPU x CPUs: the partition's
limits where it sets any, else the cluster's) of its SMALLEST node, MaxTime, MaxNodes,
preemptible (PreemptMode not OFF and a lower PriorityTier than a partition sharing its nodes, or
a name saying preempt/scavenger/standby) and interactive (its name says so: SLURM has no flag).

The charge rule comes from TRESBillingWeights where billing is the largest weighted TRES
(PriorityFlags=MAX_TRES, or a single nonzero weight), the rule `charge/estimate.py` applies:
charge_factor = the GPU's (or core's) weight / 1000, because deltajobs counts SU = billing-hours
/ 1000; gpu_equiv and mem_gb_per_cpu are weight ratios. Without scontrol show config, MAX_TRES is
inferred from the partition's own TRES billing total. Everything else is a note for the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import yaml

from deltajobs.clusters.discover import ConfigInfo, NodeInfo, PartitionInfo, parse_billing_weights, parse_mem_mb
from deltajobs.clusters.profile import ClusterProfile, GpuEquivalent, Partition
from deltajobs.clusters.units import format_walltime
from deltajobs.errors import SlurmError
from deltajobs.slurm.parse import Parsed, one_line

BILLING_PER_SU = 1000  # SLURM's billing TRES is SU per hour x 1000 (as charge/estimate.py reads it)
MB_PER_GB = 1024
NOT_BILLED = 1e9  # cores or GB per charge unit of a TRES the weights leave out: its term stays ~0
UNLIMITED_TIME = "8760:00:00"  # MaxTime=UNLIMITED: a year, so that any walltime passes
PREEMPT_WORDS = ("preempt", "scavenger", "standby")
PLACEHOLDERS = (
    "modules: the modules a job loads (`module avail`); none are loaded now",
    "account_pattern / account_suffix: how accounts are named (`sacctmgr show assoc user=$USER`)",
    "filesystems: put runs_dir and data_root on a filesystem the compute nodes see",
)


@dataclass
class Discovery:
    """The discovered profile, and what the user should know about how it was derived."""

    profile: ClusterProfile
    notes: dict[str, list[str]] = field(default_factory=dict)  # partition -> notes
    billing: dict[str, str] = field(default_factory=dict)  # partition -> TRESBillingWeights
    skipped: dict[str, str] = field(default_factory=dict)  # partition -> why it is left out
    cluster_notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what scontrol printed that could not be read


def build_profile(
    name: str, partitions: list[PartitionInfo], nodes: list[NodeInfo], config: ConfigInfo | None
) -> Discovery:
    """The profile `name` for a cluster that printed `partitions`, `nodes` and `config` (pure).

    What the parsers could not read (the `warnings` of their `Parsed` lists, of `config`) is left
    out of the profile and said in one line of its notes.
    """
    if not partitions:
        raise SlurmError("scontrol show partition printed no partitions: nothing to discover")
    cluster_name = config.cluster_name if config else name
    found: dict[str, Partition] = {}
    result = Discovery(profile=None)  # type: ignore[arg-type]  # set below
    result.warnings = [w for parsed in (partitions, nodes) if isinstance(parsed, Parsed) for w in parsed.warnings]
    result.warnings += config.warnings if config else ()
    for info in partitions:
        notes: list[str] = []
        members = [n for n in nodes if info.name in n.partitions]
        shape = _node_shape(info, members, config, notes)
        if shape is None:
            result.skipped[info.name] = "no node records and no TRES totals: its node size is unknown"
            continue
        gpus, cpus, mem_mb, gpu_type = shape
        try:
            weights: dict[str, float] | None = parse_billing_weights(info.billing_weights, f"partition {info.name}")
        except SlurmError as err:
            notes.append(f"{err}: no charge rule, `estimate` cannot price it")
            weights = None
        billed_gpus = weights is None or any(k.startswith("gres/gpu") and w for k, w in weights.items())
        if gpus and info.billing_weights and not billed_gpus:
            notes.append(f"its nodes have {gpus} GPUs but TRESBillingWeights bill none: taken as a CPU partition")
            gpus, gpu_type = 0, None
        kind: Literal["gpu", "cpu"] = "gpu" if gpus else "cpu"
        preempt = _preemptible(info, partitions, nodes, notes)
        interactive = "interactive" in info.name.lower()
        if interactive:
            notes.append("interactive (from its name)")
        max_time = format_walltime(info.max_time_s) if info.max_time_s is not None else UNLIMITED_TIME
        if info.max_time_s is None:
            notes.append(f"MaxTime=UNLIMITED, written as {UNLIMITED_TIME}")
        default_mem = config.def_mem_per_cpu_mb if config else None
        if info.def_mem_per_cpu_mb and info.def_mem_per_cpu_mb != default_mem:
            notes.append(f"DefMemPerCPU={info.def_mem_per_cpu_mb}M here (default_mem_per_cpu_mb is the cluster's)")
        charge = {} if weights is None else _charge_rule(info, kind, weights, gpu_type, config, notes)
        found[info.name] = Partition(
            kind=kind,
            gpus=gpus,
            cpus=cpus,
            mem_gb=round(mem_mb / MB_PER_GB, 3),
            max_time=max_time,
            gpu_type=gpu_type,
            max_nodes=info.max_nodes,
            interactive=interactive,
            preempt=preempt,
            name=info.name,
            **charge,  # type: ignore[arg-type]
        )
        result.billing[info.name] = info.billing_weights
        result.notes[info.name] = notes
    if not found:
        raise SlurmError("no partition of this cluster has a known node size; see `scontrol show node`")
    default = next((p.name for p in partitions if p.default and p.name in found), next(iter(found)))
    if not any(p.default for p in partitions):
        result.cluster_notes.append(f"no partition is Default=YES; {default} is the default here")
    result.profile = ClusterProfile(
        name=name,
        description=f"SLURM cluster {cluster_name}, discovered by `deltajobs cluster discover`",
        slurm_cluster_name=cluster_name,
        default_partition=default,
        partitions=found,
        account_pattern=".+",
        account_suffix={"gpu": "", "cpu": ""},
        modules=[],
        module_reset=False,
        python=None,
        default_mem_per_cpu_mb=(config.def_mem_per_cpu_mb if config and config.def_mem_per_cpu_mb else 1000),
        max_array_size=config.max_array_size if config else None,
        max_array_size_source="scontrol show config" if config and config.max_array_size else "",
    )
    if config is None:
        result.cluster_notes.append("no scontrol show config: ClusterName taken as the profile name")
    if result.warnings:
        result.cluster_notes.append(f"warning: {one_line(result.warnings)}")
    return result


def _node_shape(
    info: PartitionInfo, members: list[NodeInfo], config: ConfigInfo | None, notes: list[str]
) -> tuple[int, int, float, str | None] | None:
    """(GPUs, CPUs, usable MB, GPU type) of the partition's smallest node, within its limits."""
    if members:
        shapes = {(n.gpus, n.cpus, n.usable_mem_mb) for n in members}
        gpus, cpus, mem_mb = (
            min(n.gpus for n in members),
            min(n.cpus for n in members),
            min(float(n.usable_mem_mb) for n in members),
        )
        if len(shapes) > 1:
            sizes = "; ".join(f"{g} GPUs, {c} CPUs, {m / MB_PER_GB:g}G" for g, c, m in sorted(shapes))
            notes.append(f"heterogeneous ({sizes}): the limits of the smallest node")
        if any(n.mem_spec_limit_mb for n in members):
            notes.append("memory is RealMemory minus MemSpecLimit")
        types = sorted({t for n in members for t in n.gpu_types})
    elif info.total_nodes and _count(info.tres.get("cpu", "")):
        count = info.total_nodes
        gpus = int(_count(info.tres.get("gres/gpu", ""))) // count
        cpus = int(_count(info.tres["cpu"])) // count
        mem_mb = (parse_mem_mb(info.tres.get("mem", "")) or 0.0) / count
        types = sorted(k.split(":", 1)[1] for k in info.tres if k.startswith("gres/gpu:"))
        uneven = " (an average: its nodes differ)" if int(_count(info.tres["cpu"])) % count else ""
        notes.append(f"no node records: per-node figures are the partition's TRES over its {count} nodes{uneven}")
    else:
        return None
    if info.max_cpus_per_node is not None and info.max_cpus_per_node < cpus:
        cpus = info.max_cpus_per_node
        notes.append(f"MaxCPUsPerNode={cpus}")
    per_node, per_cpu, whose = _mem_limits(info, config)
    if per_node is not None and per_node < mem_mb:
        mem_mb = float(per_node)
        notes.append(f"MaxMemPerNode={per_node}M{whose}")
    if per_cpu is not None and per_cpu * cpus < mem_mb:
        mem_mb = float(per_cpu * cpus)
        notes.append(
            f"MaxMemPerCPU={per_cpu}M{whose} x {cpus} CPUs: SLURM gives a job at most {mem_mb / MB_PER_GB:g}G"
            " of a node's memory"
        )
    return gpus, cpus, mem_mb, ", ".join(types) if types and gpus else None


def _mem_limits(info: PartitionInfo, config: ConfigInfo | None) -> tuple[int | None, int | None, str]:
    """(MaxMemPerNode, MaxMemPerCPU, whose): the partition's own where it sets either (SLURM then
    ignores the cluster's), else the cluster's from `scontrol show config`."""
    if info.max_mem_per_node_mb is not None or info.max_mem_per_cpu_mb is not None or config is None:
        return info.max_mem_per_node_mb, info.max_mem_per_cpu_mb, ""
    return config.max_mem_per_node_mb, config.max_mem_per_cpu_mb, " (the cluster's)"


def _count(text: str) -> float:
    """A TRES count as printed (`64`, `264.5`); 0 for anything else."""
    try:
        return float(text)
    except ValueError:
        return 0.0


def _preemptible(info: PartitionInfo, partitions: list[PartitionInfo], nodes: list[NodeInfo], notes: list[str]) -> bool:
    mine = {n.name for n in nodes if info.name in n.partitions}
    sharing = [p for p in partitions if not mine or any(p.name in n.partitions for n in nodes if n.name in mine)]
    if info.preempt_mode != "OFF" and any(p.priority_tier > info.priority_tier for p in sharing):
        notes.append(f"preemptible (PreemptMode={info.preempt_mode}, PriorityTier={info.priority_tier})")
        return True
    if any(word in info.name.lower() for word in PREEMPT_WORDS):
        notes.append("preemptible (from its name)")
        return True
    return False


def _charge_rule(
    info: PartitionInfo,
    kind: str,
    weights: dict[str, float],
    gpu_type: str | None,
    config: ConfigInfo | None,
    notes: list[str],
) -> dict[str, object]:
    """charge_factor with gpu_equiv (gpu) or mem_gb_per_cpu (cpu); {} where it cannot be derived."""
    if not info.billing_weights:
        notes.append("no TRESBillingWeights: SLURM bills allocated CPUs; no charge rule, `estimate` cannot price it")
        return {}
    cpu_w, mem_w = weights.get("cpu", 0.0), weights.get("mem_gb", 0.0)
    gpu_w = max([w for k, w in weights.items() if k == "gres/gpu" or k == f"gres/gpu:{gpu_type}"], default=0.0)
    billed = [w for w in (cpu_w, mem_w, gpu_w if kind == "gpu" else 0.0) if w]
    max_tres = config.max_tres if config else _billing_is_max(info, weights)
    if len(billed) > 1 and not max_tres:
        why = "PriorityFlags lacks MAX_TRES" if config else "its TRES billing total is not the largest weighted TRES"
        notes.append(f"billing sums the weighted TRES ({why}): no charge rule, `estimate` cannot price it")
        return {}
    if kind == "gpu":
        if not gpu_w:
            notes.append("TRESBillingWeights bill no GPU: no charge rule")
            return {}
        equiv = GpuEquivalent(cpus=_ratio(gpu_w, cpu_w), mem_gb=_ratio(gpu_w, mem_w))
        return {"charge_factor": round(gpu_w / BILLING_PER_SU, 9), "gpu_equiv": equiv}
    if not cpu_w and mem_w:
        notes.append("TRESBillingWeights bill memory but no cores: no charge rule")
        return {}
    if not cpu_w:
        notes.append("TRESBillingWeights are all zero: jobs here are free")
    return {"charge_factor": round(cpu_w / BILLING_PER_SU, 9), "mem_gb_per_cpu": _ratio(cpu_w, mem_w)}


def _ratio(unit: float, weight: float) -> float:
    """How much of a TRES makes one charge unit; NOT_BILLED when that TRES is not billed."""
    return round(unit / weight, 6) if weight and unit else NOT_BILLED


def _billing_is_max(info: PartitionInfo, weights: dict[str, float]) -> bool:
    """Whether the partition's TRES `billing` total is the largest weighted TRES (MAX_TRES)."""
    if "billing" not in info.tres:
        return False
    terms = [
        weights.get("cpu", 0.0) * _count(info.tres.get("cpu", "")),
        weights.get("mem_gb", 0.0) * (parse_mem_mb(info.tres.get("mem", "")) or 0.0) / MB_PER_GB,
        *(w * _count(info.tres.get(k, "")) for k, w in weights.items() if k.startswith("gres/")),
    ]
    return abs(_count(info.tres["billing"]) - max(terms, default=0.0)) <= 1.0


def render_profile(found: Discovery, source: str) -> str:
    """The profile as YAML in the format of clusters/*.yaml, with the notes as comments (pure)."""
    p = found.profile
    lines = [
        f"# {p.name}: discovered by `deltajobs cluster discover` from {source}.",
        "# Partitions, limits and charge rules are SLURM's; the TODO lines are what SLURM cannot know.",
        *(f"# {note}" for note in found.cluster_notes),
        *(f"# Left out: {name}: {why}" for name, why in found.skipped.items()),
        f"name: {_yaml(p.name)}",
        f"description: {_yaml(p.description)}",
        f"slurm_cluster_name: {_yaml(p.slurm_cluster_name)}   # ClusterName (picks this profile by default)",
        f"default_partition: {_yaml(p.default_partition)}",
        "modules: []                 # TODO: modules a job loads (`module avail`), e.g. [pytorch/2.5]",
        "module_reset: false         # TODO: true to start each job with `module reset`",
        "python: null                # TODO: null runs the submitting interpreter; or e.g. python3",
        "account_pattern: '.+'       # TODO: a regex your accounts match (`sacctmgr show assoc user=$USER`)",
        "account_suffix: {gpu: '', cpu: ''}  # TODO: how GPU and CPU account names end, if they differ",
        f"default_mem_per_cpu_mb: {p.default_mem_per_cpu_mb}",
        "distributed_env: {}         # TODO: e.g. NCCL settings for multi-node jobs",
        f"charge_mem_unit_bytes: {2**30}   # SLURM's G in TRESBillingWeights",
        *(
            [
                f"max_array_size: {p.max_array_size}        # MaxArraySize: a sweep needs at most this many tasks",
                f"max_array_size_source: {_yaml(p.max_array_size_source)}",
            ]
            if p.max_array_size
            else []
        ),
        "# TODO filesystems: runs_dir and data_root (config.yaml) must be on a filesystem the compute nodes see.",
        "",
        "partitions:",
    ]
    for name, part in p.partitions.items():
        lines.append(f"  {_yaml(name)}:")
        lines += [f"    # {note}" for note in found.notes.get(name, [])]
        fields = {
            "kind": part.kind,
            "gpu_type": part.gpu_type,
            "gpus": part.gpus,
            "cpus": part.cpus,
            "mem_gb": part.mem_gb,
            "max_time": part.max_time,
            "max_nodes": part.max_nodes,
            "interactive": part.interactive,
            "preempt": part.preempt,
        }
        lines += [f"    {key}: {_yaml(value)}" for key, value in fields.items()]
        billing = found.billing.get(name)
        comment = f"   # TRESBillingWeights={billing}" if billing else ""
        if NOT_BILLED in (
            getattr(part.gpu_equiv, "cpus", 0),
            getattr(part.gpu_equiv, "mem_gb", 0),
            part.mem_gb_per_cpu,
        ):
            comment += f" ({NOT_BILLED:.0f}: not billed)"
        if part.gpu_equiv is not None:
            equiv = f"{{cpus: {_yaml(part.gpu_equiv.cpus)}, mem_gb: {_yaml(part.gpu_equiv.mem_gb)}}}"
            lines += [f"    charge_factor: {_yaml(part.charge_factor)}", f"    gpu_equiv: {equiv}{comment}"]
        elif part.mem_gb_per_cpu is not None:
            lines += [f"    charge_factor: {_yaml(part.charge_factor)}"]
            lines += [f"    mem_gb_per_cpu: {_yaml(part.mem_gb_per_cpu)}{comment}"]
        else:
            lines.append("    # TODO: no charge rule (see the note above): `estimate` refuses this partition")
    return "\n".join(lines) + "\n"


def _yaml(value: object) -> str:
    """One YAML scalar: `240`, `62.5`, `null`, `true`, a quoted `"01:00:00"`, other strings."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str) and ":" in value and value.replace(":", "").isdigit():
        return f'"{value}"'
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()


def discover_cluster(name: str | None = None) -> Discovery:
    """Ask the SLURM on this machine (one call each of DISCOVER_ARGVS) and build its profile."""
    from deltajobs.clusters.discover import DISCOVER_ARGVS, parse_config, parse_nodes, parse_partitions
    from deltajobs.slurm import commands as slurm

    partition_text, node_text, config_text = (slurm.run(argv) for argv in DISCOVER_ARGVS)
    config = parse_config(config_text)
    profile_name = name or profile_name_for(config.cluster_name)
    return build_profile(profile_name, parse_partitions(partition_text), parse_nodes(node_text), config)


def profile_name_for(cluster_name: str) -> str:
    """A file-safe profile name from a ClusterName: `Delta AI` -> `delta-ai`."""
    return "-".join("".join(c if c.isalnum() else " " for c in cluster_name.lower()).split()) or "cluster"
