"""The SU estimate: what a request costs, from the partition's charge rules in the cluster profile.

Delta charges what a job reserves, not what it uses. Per node, a GPU partition counts the largest
of: GPUs, cores / gpu_equiv.cpus and memory / gpu_equiv.mem_gb (all in GPU-equivalents); a CPU
partition counts the larger of cores and memory / mem_gb_per_cpu (in core-equivalents). `--mem=0`
(all of the node's memory, with or without --exclusive) counts as the whole node: its GPUs, or on a
CPU node its cores (NCSA, job_accounting.rst 'Job Accounting Considerations'). Then

    SU = hours x max(terms) x charge_factor x nodes

which is what SLURM's `billing` TRES carries (billing / 1000 = SU per hour). The ratios and factors
come from the profile (`clusters/*.yaml`), never from this file, and so does the size of the "GB" in
the memory term (`charge_mem_unit_bytes`: NCSA's is 1e9 bytes, while `--mem 64G` is 64 x 2^30).
Where the profile bills whole units (`gpu_equiv.rounding`: DeltaAI's GH200 superchips), the
largest term becomes a whole number of units, one at least: rounded up, to the nearest or down.
Where the profile's source reads two ways (`rounding_alt`), `Estimate.readings` holds both, the
headline first: `su` is the larger (what the budget guard uses) and the estimate shows both
where they differ, as it does the minimum.

A profile's `charge_minimum` is the least a job is billed: `Estimate.su` is the billed figure,
max(formula, minimum), which the budget guard, sweeps and advice use; `formula_su` is the formula's.
Both are shown wherever they differ, with the minimum's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltajobs.clusters.profile import ChargeMinimum, Partition, Reading
from deltajobs.errors import DeltaJobsError, SpecError
from deltajobs.slurm.parse import AcctRecord, parse_size_mb
from deltajobs.spec.resolve import ResolvedJob, Resources

MB_PER_GB = 1024  # SLURM's G: mem_mb / 1024 GB, as sbatch --mem counts it
BYTES_PER_SLURM_GB = 2**30
TERM_ORDER = ("gpus", "cpus", "mem")  # ties go to the first: GPUs, then cores, then memory


@dataclass(frozen=True)
class Request:
    """What a job reserves, per node: the only input the charge depends on besides time."""

    nodes: int
    gpus_per_node: int
    cpus_per_node: int
    mem_mb_per_node: float  # 0: the whole node's memory (--mem=0), charged as the whole node
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
    """The charge of one request; `su` is the worst case, at the full walltime, as billed (the
    profile's minimum included); `formula_su` is the formula's figure."""

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
    unit_name: str = ""  # the profile's charge_unit ("GH200"); empty: GPU- or core-equivalent
    readings: tuple[Reading, ...] = (Reading(),)  # how units are billed, the headline first
    minimum: ChargeMinimum = ChargeMinimum()
    whole_node_mem: bool = False  # --mem=0: the node's memory, charged as the whole node

    @property
    def mem_charged_gb(self) -> float:
        """The reserved memory in the charge formula's GB (68.7 for --mem 64G on Delta)."""
        return self.reserved["mem_gb"] * BYTES_PER_SLURM_GB / self.mem_unit_bytes

    @property
    def largest(self) -> float:
        """The largest term, in (fractional) units: what the readings round."""
        return self.terms[self.dominant]

    @property
    def whole(self) -> bool:
        """Whether a reading bills whole units (DeltaAI's GH200s)."""
        return any(reading.rounding != "none" for reading in self.readings)

    @property
    def units_per_node(self) -> float:
        """The units billed per node by the larger reading: what `su` and the budget guard use."""
        return max(reading.units(self.largest) for reading in self.readings)

    @property
    def readings_differ(self) -> bool:
        return len({reading.units(self.largest) for reading in self.readings}) > 1

    @property
    def worst_reading(self) -> Reading:
        return next(r for r in self.readings if r.units(self.largest) == self.units_per_node)

    def reading_su(self, reading: Reading) -> float:
        """The formula's charge at the full walltime by one reading."""
        return reading.units(self.largest) * self.nodes * self.charge_factor * self.hours

    @property
    def su_per_hour(self) -> float:
        return self.units_per_node * self.nodes * self.charge_factor

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def formula_su(self) -> float:
        """The formula's charge at the full walltime, before any minimum."""
        return self.su_per_hour * self.hours

    @property
    def su(self) -> float:
        """The worst case as billed: the formula's charge, or the profile's minimum if that is more."""
        return max(self.formula_su, self.minimum.su)

    @property
    def minimum_applies(self) -> bool:
        return self.formula_su < self.minimum.su

    @property
    def billing(self) -> float:
        """SLURM's billing TRES for this request: SU per hour x 1000."""
        return self.su_per_hour * 1000

    def formula_su_for(self, seconds: float) -> float:
        """The formula's charge if the job runs `seconds` (it is billed for the time it ran)."""
        return self.su_per_hour * max(0.0, min(seconds, self.seconds)) / 3600

    def su_for(self, seconds: float) -> float:
        """The charge as billed if the job runs `seconds`: the minimum at least, once it started."""
        formula = self.formula_su_for(seconds)
        return max(formula, self.minimum.su) if seconds > 0 else formula

    def array_su(self, count: int) -> float:
        """The worst case of `count` array tasks like this one, as billed: the minimum per task
        (`array_tasks: each`) or once for the whole array (`whole`)."""
        if self.minimum.array_tasks == "whole":
            return max(self.formula_su * count, self.minimum.su)
        return self.su * count

    @property
    def unit(self) -> str:
        if self.unit_name:
            return self.unit_name
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
        """`su` as billed (what the budget guard uses), `su_formula` before the minimum; `readings`
        each reading of whole units (the headline first), `su` its formula's charge."""
        readings = [
            {
                "rounding": reading.rounding,
                "source": reading.source,
                "units_per_node": reading.units(self.largest),
                "su_per_hour": reading.units(self.largest) * self.nodes * self.charge_factor,
                "su": self.reading_su(reading),
            }
            for reading in self.readings
        ]
        minimum = {
            "su": self.minimum.su,
            "array_tasks": self.minimum.array_tasks,
            "source": self.minimum.source,
            "applies": self.minimum_applies,
        }
        return {
            "su": self.su,
            "su_formula": self.formula_su,
            "su_per_hour": self.su_per_hour,
            "dominant": self.dominant,
            "minimum": minimum,
            "readings": readings,
            "readings_differ": self.readings_differ,
            **self.breakdown(),
        }

    def explain(self) -> str:
        """`max(gpus 1, cpus 1/16 = 0.06, mem 16G/62.5G = 0.26) = 1 GPU-equivalent (gpus)`; in whole
        units each reading where they differ: `... = 2.496 GH200 (mem), billed as 2 by NCSA's worked
        example (300 GB -> 2 GH200), to the nearest whole (a half down); 3 by ..., rounded up`."""
        digits = ".3f" if self.whole else ".2f"  # near a half, 2.50 could be 2.496 or 2.504
        parts = []
        if self.kind == "gpu":
            parts.append(f"gpus {self.reserved['gpus']:g}")
        cpus, mem = self.reserved["cpus"], self.reserved["mem_gb"]
        cpu_div, mem_div = self.divisors["cpus"], self.divisors["mem_gb"]
        cpu_term, mem_term = format(self.terms["cpus"], digits), format(self.terms["mem"], digits)
        parts.append(f"cpus {cpus:g}" if cpu_div == 1 else f"cpus {cpus:g}/{cpu_div:g} = {cpu_term}")
        if self.whole_node_mem:  # `mem 0 (the whole node) = 4`
            parts.append(f"mem 0 (the whole node) = {self.terms['mem']:g}")
        elif self.mem_unit_bytes == BYTES_PER_SLURM_GB:
            parts.append(f"mem {mem:g}G/{mem_div:g}G = {mem_term}")
        else:  # `mem 64G = 68.72 GB/62.5 GB = 1.10`: SLURM's G converted to the formula's GB
            parts.append(f"mem {mem:g}G = {self.mem_charged_gb:.2f} GB/{mem_div:g} GB = {mem_term}")
        head, largest, units = f"max({', '.join(parts)})", self.largest, f"{self.unit} ({self.dominant})"
        if self.readings_differ:
            each = "; ".join(f"{r.units(largest):g} by {r.name}, {r.words}" for r in self.readings)
            return f"{head} = {largest:.4g} {units}, billed as {each}"
        if self.whole and self.units_per_node != largest:  # `= 2.684, rounded up: 3 GH200 (mem)`
            words = " and ".join(dict.fromkeys(r.words for r in self.readings))
            return f"{head} = {largest:.4g}, {words}: {self.units_per_node:g} {units}"
        return f"{head} = {self.units_per_node:.3g} {units}"


def estimate(request: Request, partition: Partition) -> Estimate:
    """The charge of `request` on `partition` at its full walltime (a pure function)."""
    exclusive, whole_mem = request.exclusive, request.mem_mb_per_node == 0
    cpus = float(partition.cpus if exclusive else request.cpus_per_node)
    gpus = float(partition.gpus if exclusive and partition.kind == "gpu" else request.gpus_per_node)
    mem_gb = partition.mem_gb if whole_mem else request.mem_mb_per_node / MB_PER_GB
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
    if whole_mem:  # --mem=0: all of the node's memory, with or without --exclusive: the whole node's worth
        terms["mem"] = partition.whole_node_units
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
        unit_name=partition.charge_unit or "",
        readings=partition.gpu_equiv.readings if partition.kind == "gpu" and partition.gpu_equiv else (Reading(),),
        minimum=partition.charge_minimum,
        whole_node_mem=whole_mem,
    )


def estimate_job(resolved: ResolvedJob) -> Estimate:
    """The worst-case charge of a resolved job spec: its full walltime, on the most expensive of its
    partitions (`--partition gpuA100x4,gpuA40x4` may run on either): as billed, then by the formula
    (under a minimum both may bill 1 SU), the first listed winning a tie."""
    request = Request.from_resources(resolved.spec.resources)
    estimates = [estimate(request, partition) for partition in resolved.partitions]
    return max(estimates, key=lambda est: (est.su, est.formula_su))


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
    """One line for humans: `1.0 SU on gpuA100x4 (1 node x 1 GPU-equivalent x factor 1 x 1 h)`; under
    a minimum, `1.0 SU on gpuA100x4, billed at least 1 SU per job (0.083 SU by the formula: ...)`;
    where readings differ, the larger first: `3.0 SU on ghx4 by X (...); 2.0 SU by Y`."""
    nodes = f"{est.nodes} node{'s' if est.nodes != 1 else ''}"
    formula = f"{nodes} x {est.units_per_node:.3g} {est.unit} x factor {est.charge_factor:g} x {est.hours:.3g} h"
    where = f"{est.partition} by {est.worst_reading.name}" if est.readings_differ else est.partition
    others = [r for r in est.readings if r.units(est.largest) != est.units_per_node]
    also = "".join(f"; {format_su(est.reading_su(r))} SU by {r.name}" for r in others)
    if est.minimum_applies:
        return (
            f"{format_su(est.su)} SU on {where}, billed at least {est.minimum.su:g} SU per job "
            f"({format_su(est.formula_su)} SU by the formula: {formula}){also}"
        )
    return f"{format_su(est.su)} SU on {where} ({formula}){also}"


def describe_minimum(est: Estimate) -> str:
    """The minimum and its source: `1 SU per job and per array task (NCSA job_accounting: ...)`."""
    per = "per job and per array task" if est.minimum.array_tasks == "each" else "per job (an array pays it once)"
    source = f" ({est.minimum.source})" if est.minimum.source else ""
    return f"{est.minimum.su:g} SU {per}{source}"


def describe_count(est: Estimate, count: int, noun: str = "points") -> str:
    """A sweep's or search's worst case, `count` array tasks like `est`: `5.3 SU (64 points x 0.083
    SU)`, or under a minimum both figures: `64 SU (64 points x 1.0 SU, billed at least 1 SU per
    array task; 5.3 SU by the formula)`."""
    total, formula = est.array_su(count), est.formula_su * count
    if total <= formula:
        return f"{format_su(total)} SU ({count} {noun} x {format_su(est.formula_su)} SU)"
    if est.minimum.array_tasks == "whole":
        return (
            f"{format_su(total)} SU (billed at least {est.minimum.su:g} SU per array; "
            f"{count} {noun} x {format_su(est.formula_su)} SU = {format_su(formula)} SU by the formula)"
        )
    return (
        f"{format_su(total)} SU ({count} {noun} x {format_su(est.su)} SU, billed at least {est.minimum.su:g} SU "
        f"per array task; {format_su(formula)} SU by the formula)"
    )


def estimate_row(row: Any, seconds: float) -> Estimate | None:
    """The charge rules of a registry row's request (a JobRow: its cluster, partition, nodes, GPUs,
    CPUs and memory) for `seconds`; None where its profile or partition is unknown."""
    from deltajobs.clusters.profile import load_profile

    try:
        profile = load_profile(row.cluster)
        partition = profile.partition((row.partition or profile.default_partition).split(",")[0])
    except DeltaJobsError:
        return None
    request = Request(
        nodes=row.nodes or 1,
        gpus_per_node=row.gpus_per_node or 0,
        cpus_per_node=(row.ntasks_per_node or 1) * (row.cpus_per_task or 1),
        mem_mb_per_node=(parse_size_mb(row.mem) or 0.0) if row.mem else 0.0,
        seconds=max(seconds, 1.0),
    )
    try:
        return estimate(request, partition)
    except DeltaJobsError:
        return None
