"""The SU estimate: what a request costs, from the partition's charge rules in the cluster profile.

Delta charges what a job reserves, not what it uses. Per node, a GPU partition counts the largest
of: GPUs, cores / gpu_equiv.cpus and memory / gpu_equiv.mem_gb (all in GPU-equivalents); a CPU
partition counts the larger of cores and memory / mem_gb_per_cpu (in core-equivalents). Then

    SU = hours x max(terms) x charge_factor x nodes

which is what SLURM's `billing` TRES carries (billing / 1000 = SU per hour). The ratios and factors
come from the profile (`clusters/*.yaml`), never from this file, and so does the size of the "GB" in
the memory term (`charge_mem_unit_bytes`: NCSA's is 1e9 bytes, while `--mem 64G` is 64 x 2^30).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltajobs.cluster import Partition
from deltajobs.errors import SpecError
from deltajobs.slurm import AcctRecord, parse_size_mb
from deltajobs.spec import ResolvedJob, Resources

MB_PER_GB = 1024  # SLURM's G: mem_mb / 1024 GB, as sbatch --mem counts it
BYTES_PER_SLURM_GB = 2**30
TERM_ORDER = ("gpus", "cpus", "mem")  # ties go to the first: GPUs, then cores, then memory


@dataclass(frozen=True)
class Request:
    """What a job reserves, per node: the only input the charge depends on besides time."""

    nodes: int
    gpus_per_node: int
    cpus_per_node: int
    mem_mb_per_node: float  # 0 with exclusive: the whole node
    seconds: float
    exclusive: bool = False

    @classmethod
    def from_resources(cls, res: Resources) -> Request:
        return cls(
            nodes=res.nodes,
            gpus_per_node=res.gpus_per_node,
            cpus_per_node=res.ntasks_per_node * res.cpus_per_task,
            mem_mb_per_node=res.mem_mb,
            seconds=res.seconds,
            exclusive=res.exclusive,
        )

    @classmethod
    def from_acct(cls, record: AcctRecord, seconds: float | None = None) -> Request:
        """What sacct says a job was allocated (AllocTRES holds job totals; split them per node)."""
        nodes = max(1, record.nnodes or int(record.alloc_tres.get("node", "1") or 1))
        cpus = int(record.alloc_tres.get("cpu", 0) or 0) or record.ncpus
        mem_mb = parse_size_mb(record.alloc_tres.get("mem", "")) or 0.0
        return cls(
            nodes=nodes,
            gpus_per_node=record.gpus // nodes,
            cpus_per_node=cpus // nodes,
            mem_mb_per_node=mem_mb / nodes,
            seconds=record.elapsed_s if seconds is None else seconds,
        )


@dataclass(frozen=True)
class Estimate:
    """The charge of one request; `su` is the worst case, at the full walltime."""

    partition: str
    kind: str  # "gpu": terms in GPU-equivalents; "cpu": in core-equivalents
    nodes: int
    seconds: float
    charge_factor: float
    terms: dict[str, float]  # per node: gpus, cpus, mem, each in the partition's charge unit
    dominant: str  # the term that sets the charge: "gpus", "cpus" or "mem"
    reserved: dict[str, float]  # per node: gpus, cpus, mem_gb (after exclusive / mem 0)
    divisors: dict[str, float]  # cpus and mem_gb per charge unit, from the profile
    mem_unit_bytes: float = BYTES_PER_SLURM_GB  # the charge formula's GB (reserved mem_gb is SLURM's G)

    @property
    def mem_charged_gb(self) -> float:
        """The reserved memory in the charge formula's GB (68.7 for --mem 64G on Delta)."""
        return self.reserved["mem_gb"] * BYTES_PER_SLURM_GB / self.mem_unit_bytes

    @property
    def units_per_node(self) -> float:
        return self.terms[self.dominant]

    @property
    def su_per_hour(self) -> float:
        return self.units_per_node * self.nodes * self.charge_factor

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def su(self) -> float:
        return self.su_per_hour * self.hours

    @property
    def billing(self) -> float:
        """SLURM's billing TRES for this request: SU per hour x 1000."""
        return self.su_per_hour * 1000

    def su_for(self, seconds: float) -> float:
        """The charge if the job runs `seconds` (it is billed for the time it ran)."""
        return self.su_per_hour * max(0.0, min(seconds, self.seconds)) / 3600

    @property
    def unit(self) -> str:
        return "GPU-equivalent" if self.kind == "gpu" else "core-equivalent"

    def breakdown(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "nodes": self.nodes,
            "hours": self.hours,
            "charge_factor": self.charge_factor,
            "unit": self.unit,
            "reserved_per_node": dict(self.reserved),
            "terms_per_node": dict(self.terms),
            "divisors": dict(self.divisors),
            "dominant": self.dominant,
            "units_per_node": self.units_per_node,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"su": self.su, "su_per_hour": self.su_per_hour, "dominant": self.dominant, **self.breakdown()}

    def explain(self) -> str:
        """`max(gpus 1, cpus 1/16 = 0.06, mem 16G/62.5G = 0.26) = 1 GPU-equivalent (gpus)`."""
        parts = []
        if self.kind == "gpu":
            parts.append(f"gpus {self.reserved['gpus']:g}")
        cpus, mem = self.reserved["cpus"], self.reserved["mem_gb"]
        cpu_div, mem_div = self.divisors["cpus"], self.divisors["mem_gb"]
        parts.append(f"cpus {cpus:g}" if cpu_div == 1 else f"cpus {cpus:g}/{cpu_div:g} = {self.terms['cpus']:.2f}")
        if self.mem_unit_bytes == BYTES_PER_SLURM_GB:
            parts.append(f"mem {mem:g}G/{mem_div:g}G = {self.terms['mem']:.2f}")
        else:  # `mem 64G = 68.72 GB/62.5 GB = 1.10`: SLURM's G converted to the formula's GB
            parts.append(f"mem {mem:g}G = {self.mem_charged_gb:.2f} GB/{mem_div:g} GB = {self.terms['mem']:.2f}")
        return f"max({', '.join(parts)}) = {self.units_per_node:.3g} {self.unit} ({self.dominant})"


def estimate(request: Request, partition: Partition) -> Estimate:
    """The charge of `request` on `partition` at its full walltime (a pure function)."""
    exclusive = request.exclusive
    cpus = float(partition.cpus if exclusive else request.cpus_per_node)
    gpus = float(partition.gpus if exclusive and partition.kind == "gpu" else request.gpus_per_node)
    mem_gb = partition.mem_gb if request.mem_mb_per_node == 0 and exclusive else request.mem_mb_per_node / MB_PER_GB
    mem_charged = mem_gb * BYTES_PER_SLURM_GB / partition.charge_mem_unit_bytes  # in the formula's GB
    where = f"partitions.{partition.name or partition.kind}"
    if partition.kind == "gpu":
        if partition.gpu_equiv is None:
            raise SpecError(f"{where}.gpu_equiv", "is needed to estimate charges on a GPU partition")
        divisors = {"cpus": partition.gpu_equiv.cpus, "mem_gb": partition.gpu_equiv.mem_gb}
        terms = {"gpus": gpus, "cpus": cpus / divisors["cpus"], "mem": mem_charged / divisors["mem_gb"]}
    else:
        if partition.mem_gb_per_cpu is None:
            raise SpecError(f"{where}.mem_gb_per_cpu", "is needed to estimate charges on a CPU partition")
        divisors = {"cpus": 1.0, "mem_gb": partition.mem_gb_per_cpu}
        terms = {"gpus": 0.0, "cpus": cpus, "mem": mem_charged / divisors["mem_gb"]}
    dominant = max(TERM_ORDER, key=lambda name: (terms[name], -TERM_ORDER.index(name)))
    return Estimate(
        partition=partition.name,
        kind=partition.kind,
        nodes=request.nodes,
        seconds=float(request.seconds),
        charge_factor=partition.charge_factor,
        terms=terms,
        dominant=dominant,
        reserved={"gpus": gpus, "cpus": cpus, "mem_gb": mem_gb},
        divisors=divisors,
        mem_unit_bytes=partition.charge_mem_unit_bytes,
    )


def estimate_job(resolved: ResolvedJob) -> Estimate:
    """The worst-case charge of a resolved job spec: its full walltime, on the most expensive of its
    partitions (`--partition gpuA100x4,gpuA40x4` may run on either)."""
    request = Request.from_resources(resolved.spec.resources)
    estimates = [estimate(request, partition) for partition in resolved.partitions]
    return max(estimates, key=lambda est: est.su)  # the first listed wins a tie


def format_su(su: float) -> str:
    """`1.0`, `0.38`, `3.2`, `1.10`, `0.0047`, `1,235`: enough digits to compare jobs, no more.
    Trailing zeros are dropped only where nothing was rounded away: 1.0995 is `1.10`, 1.1 is `1.1`."""
    if su == 0:
        return "0"
    if abs(su) >= 100:
        return f"{su:,.0f}"
    if abs(su) >= 0.1:
        text = f"{su:.2f}"
        if float(text) != su:
            return text
        text = text.rstrip("0")
        return text + "0" if text.endswith(".") else text
    return f"{su:.2g}"


def format_hours(seconds: float) -> str:
    """`4 min`, `2 h`, `1.5 h`, `30 s` for advice and summaries."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{round(seconds / 60):.0f} min"
    return f"{seconds / 3600:.3g} h"


def describe(est: Estimate) -> str:
    """One line for humans: `1.0 SU on gpuA100x4 (1 node x 1 GPU-equivalent x factor 1 x 1 h)`."""
    nodes = f"{est.nodes} node{'s' if est.nodes != 1 else ''}"
    return (
        f"{format_su(est.su)} SU on {est.partition} ({nodes} x {est.units_per_node:.3g} {est.unit} "
        f"x factor {est.charge_factor:g} x {est.hours:.3g} h)"
    )
