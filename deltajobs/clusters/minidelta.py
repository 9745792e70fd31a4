"""minidelta's SLURM config files, rendered from its cluster profile.

`scripts/minidelta` brings up a one-node SLURM cluster shaped like Delta. Its partitions, limits
and billing weights are those of `clusters/minidelta.yaml` (the profile deltajobs itself charges
by); this module turns that profile into slurm.conf, gres.conf and slurmdbd.conf through the Jinja
templates in `scripts/minidelta.d/`. What only the script knows at run time (host name,
directories, account names, the database password) comes in as template variables:

    python -m deltajobs.clusters.minidelta render --out DIR --var node=vm --var-file db_password=PATH ...

With `--var node_count=N` (N > 1) the cluster has N nodes named like Delta's (`nodes()`), each
a slurmd in its own network namespace on a bridge (`--var subnet=10.77.0`, the controller at .1),
GPU partitions on the GPU nodes and CPU partitions on the CPU node, with SU limits enforced.

The templates live next to the script, not in the wheel: minidelta only runs from a checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from deltajobs.clusters.profile import ClusterProfile, Partition, load_profile
from deltajobs.errors import DeltaJobsError, SpecError

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "scripts" / "minidelta.d"
CONF_FILES = ("slurm.conf", "gres.conf", "slurmdbd.conf")
PROFILE = "minidelta"
BILLING_PER_SU = 1000  # SLURM's billing TRES is SU per hour x 1000, as charge_estimate reads it
MB_PER_GB = 1024  # SLURM's G suffix and RealMemory count in MiB
# Variables the templates may leave out: one node (the host itself) on the default subnet.
OPTIONAL = {"node_count": "1", "subnet": "10.77.0"}
FIRST_NODE_HOST = 11  # gpua001 is SUBNET.11, gpua002 SUBNET.12, ...; the controller is SUBNET.1


@dataclass(frozen=True)
class NodeConf:
    """One node of a multi-node minidelta: its name, address and kind ("gpu" or "cpu")."""

    name: str
    addr: str
    kind: str


def nodes(count: int, subnet: str = OPTIONAL["subnet"]) -> list[NodeConf]:
    """The nodes of an N-node minidelta, named like Delta's: gpua001, gpua002, ... and cn001.

    Three or more nodes: the last is the CPU node cn001 and the rest are GPU nodes. Two nodes: both
    are GPU nodes (multi-node DDP needs two) and the CPU partitions share them, as on one node.
    """
    if count < 2:
        raise SpecError("--nodes", f"a multi-node minidelta has 2 or more nodes, not {count}")
    gpu_nodes = count if count == 2 else count - 1
    names = [f"gpua{i + 1:03d}" for i in range(gpu_nodes)] + [f"cn{i + 1:03d}" for i in range(count - gpu_nodes)]
    return [
        NodeConf(name, f"{subnet}.{FIRST_NODE_HOST + i}", "gpu" if name.startswith("gpua") else "cpu")
        for i, name in enumerate(names)
    ]


def partition_nodes(node_list: Sequence[NodeConf], kind: str) -> str:
    """Nodes= of a partition of `kind`: the nodes of that kind, else (two nodes) all of them."""
    names = [n.name for n in node_list if n.kind == kind] or [n.name for n in node_list]
    return ",".join(names)


@dataclass(frozen=True)
class NodeShape:
    """The one node: large enough for every partition of the profile (slurmd config_overrides)."""

    cpus: int
    mem_gb: float
    gpus: int

    @property
    def real_memory_mb(self) -> int:
        return round(self.mem_gb * MB_PER_GB)


@dataclass(frozen=True)
class PartitionConf:
    """What one PartitionName line needs beyond the template's fixed text."""

    name: str
    account: str
    default: bool
    max_time: str
    max_nodes: int | None
    preempt: bool
    billing_weights: str


def number(value: float) -> str:
    """A weight as slurm.conf writes it: `62.5`, `125` (no `.0`), at most 6 decimals."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def billing_weights(partition: Partition, field: str) -> str:
    """TRESBillingWeights for `partition`, from its charge rules in the profile.

    With PriorityFlags=MAX_TRES, billing = max over the node's TRES of count x weight, so each
    weight is the charge unit's billing divided by how much of that TRES makes one unit. A G
    suffix makes Mem per GB (a plain number would be per MB). gpuA100x4: 1 GPU = 1000 =
    16 cores (62.5/core) = 62.5 GB (16/GB); a CPU partition: 1 core = 1000 = 2 GB (500/GB).
    SLURM's G is 2^30 bytes; a profile whose charge GB is another size (charge_mem_unit_bytes)
    gets its Mem weight scaled to match.
    """
    unit = BILLING_PER_SU * partition.charge_factor  # billing of one GPU (gpu) or one core (cpu)
    per_slurm_gb = 2**30 / partition.charge_mem_unit_bytes  # the profile's GB in one SLURM G
    if partition.kind == "gpu":
        if partition.gpu_equiv is None:
            raise SpecError(f"{field}.gpu_equiv", "a gpu partition needs gpu_equiv: {cpus: N, mem_gb: N}")
        cpu, mem = unit / partition.gpu_equiv.cpus, unit / partition.gpu_equiv.mem_gb * per_slurm_gb
        return f"CPU={number(cpu)},Mem={number(mem)}G,GRES/gpu={number(unit)}"
    if partition.mem_gb_per_cpu is None:
        raise SpecError(f"{field}.mem_gb_per_cpu", "a cpu partition needs mem_gb_per_cpu (GB billed as one core)")
    return f"CPU={number(unit)},Mem={number(unit / partition.mem_gb_per_cpu * per_slurm_gb)}G"


def node_shape(profile: ClusterProfile) -> NodeShape:
    """The node every partition runs on: the largest cpus, mem_gb and gpus of any partition."""
    parts = profile.partitions.values()
    return NodeShape(
        cpus=max(p.cpus for p in parts),
        mem_gb=max(p.mem_gb for p in parts),
        gpus=max(p.gpus for p in parts),
    )


def partition_confs(profile: ClusterProfile, accounts: Mapping[str, str]) -> list[PartitionConf]:
    """One PartitionConf per profile partition, in profile order; `accounts` maps kind to account."""
    return [
        PartitionConf(
            name=name,
            account=accounts[p.kind],
            default=name == profile.default_partition,
            max_time=p.max_time,
            max_nodes=p.max_nodes,
            preempt=p.preempt,
            billing_weights=billing_weights(p, f"clusters/{profile.name}.yaml.partitions.{name}"),
        )
        for name, p in profile.partitions.items()
    ]


def _environment(template_dir: Path) -> jinja2.Environment:
    if not template_dir.is_dir():
        raise DeltaJobsError(f"{template_dir} is missing: minidelta renders from a deltajobs source checkout")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["number"] = number
    return env


def required_variables(env: jinja2.Environment) -> set[str]:
    """The variable names the templates use."""
    names: set[str] = set()
    for conf in CONF_FILES:
        source, _, _ = env.loader.get_source(env, f"{conf}.j2")  # type: ignore[union-attr]
        names |= jinja2.meta.find_undeclared_variables(env.parse(source))
    return names


def render_configs(
    variables: Mapping[str, str], profile: ClusterProfile | None = None, template_dir: Path = TEMPLATE_DIR
) -> dict[str, str]:
    """File name -> text for each of CONF_FILES (pure: nothing is written).

    `variables` are the run-time values (node, marker, prog, run_dir, state_dir, log_dir, opt_dir,
    gpu_account, cpu_account, db_user, db_name, db_password; optional: OPTIONAL); the rest comes
    from `profile`. The accounts may be comma-separated lists (AllowAccounts).
    """
    profile = profile or load_profile(PROFILE)
    env = _environment(template_dir)
    accounts = {"gpu": variables.get("gpu_account", ""), "cpu": variables.get("cpu_account", "")}
    derived: dict[str, Any] = {
        "cluster_name": profile.slurm_cluster_name,
        "default_mem_per_cpu_mb": profile.default_mem_per_cpu_mb,
        "shape": node_shape(profile),
        "partitions": partition_confs(profile, accounts),
    }
    count_text, subnet = variables.get("node_count", "1"), variables.get("subnet", OPTIONAL["subnet"])
    if not count_text.isdigit() or int(count_text) < 1:
        raise SpecError("--var", f"node_count must be a whole number of nodes (1 or more), not {count_text!r}")
    count = int(count_text)
    derived["nodes"] = nodes(count, subnet) if count > 1 else []
    derived["controller_addr"] = f"{subnet}.1"
    derived["partition_nodes"] = {
        p.name: partition_nodes(derived["nodes"], profile.partitions[p.name].kind) if count > 1 else ""
        for p in derived["partitions"]
    }
    needed = (required_variables(env) - derived.keys() - OPTIONAL.keys()) | {"gpu_account", "cpu_account"}
    missing = sorted(needed - variables.keys())
    unknown = sorted(variables.keys() - needed - OPTIONAL.keys())
    if missing:
        raise SpecError("--var", f"missing {', '.join(missing)}; the templates need: {', '.join(sorted(needed))}")
    if unknown:
        choices = ", ".join(sorted(needed | OPTIONAL.keys()))
        raise SpecError("--var", f"unknown {', '.join(unknown)}; choose from: {choices}")
    context = {**OPTIONAL, **variables, **derived}
    return {conf: env.get_template(f"{conf}.j2").render(context) for conf in CONF_FILES}


def write_configs(out: Path, texts: Mapping[str, str]) -> None:
    """Write each file into `out`, owner-only (slurmdbd.conf holds the database password)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        fd = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(flag, f"expected KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltajobs.clusters.minidelta", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write slurm.conf, gres.conf and slurmdbd.conf into --out")
    render.add_argument("--out", type=Path, required=True, help="directory to write the files into")
    render.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="a template variable")
    render.add_argument(
        "--var-file", action="append", default=[], metavar="KEY=PATH", help="a variable read from a file (secrets)"
    )
    listing = commands.add_parser("nodes", help="print 'NAME ADDRESS KIND' for each node of an N-node minidelta")
    listing.add_argument("--count", type=int, required=True, help="how many nodes (2 or more)")
    listing.add_argument("--subnet", default=OPTIONAL["subnet"], help="first three octets of the bridge's /24")
    args = parser.parse_args(argv)
    try:
        if args.command == "nodes":
            for node in nodes(args.count, args.subnet):
                print(node.name, node.addr, node.kind)
            return 0
        variables = _pairs(args.var, "--var")
        for key, path in _pairs(args.var_file, "--var-file").items():
            try:
                variables[key] = Path(path).read_text().rstrip("\n")  # as the shell's $(cat PATH)
            except OSError as err:
                raise SpecError("--var-file", f"{key}: cannot read {path}: {err.strerror}") from None
        write_configs(args.out, render_configs(variables))
    except DeltaJobsError as err:
        print(f"minidelta: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
