"""Right-sizing: compare what a finished job reserved with what it used, and price a smaller request.

Three comparisons, each priced with the same `estimate` the submit path shows:
CPUs (TotalCPU / Elapsed against the cores reserved), memory (MaxRSS against --mem) and time
(Elapsed against the time limit); and, from the GPU utilisation sampled inside the job
(`gpu_advice`), GPUs reserved but idle and GPUs starved of work. Suggestions round up with
headroom; advice is given only where it is worth acting on: it saves charge, or the job reserved
at least OVERSIZED times what it needed. Charges are compared as billed: under the profile's
minimum charge per job, a smaller request saves nothing, and the advice says so with the
formula's figures.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from deltajobs.charge.estimate import (
    BYTES_PER_SLURM_GB,
    MB_PER_GB,
    Estimate,
    Request,
    estimate,
    format_hours,
    format_su,
)
from deltajobs.clusters.profile import Partition, Reading
from deltajobs.clusters.units import format_walltime
from deltajobs.slurm.parse import AcctRecord

MIN_ELAPSED_FOR_CPU_S = 60  # shorter jobs are mostly start-up: their CPU average says little
CPU_HEADROOM = 2.0  # suggest twice the average busy cores, rounded up to a power of two
MEM_HEADROOM = 1.5  # 1.5x the peak RSS, rounded up to a power of two or a multiple of 4G
TIME_HEADROOM = 1.5  # 1.5x the elapsed time, rounded up to TIME_STEP_S
TIME_STEP_S = 300
MEANINGFUL_SAVING = 0.01  # a change below 1% of the charge "keeps the same SU"
OVERSIZED = 4  # reserving 4x the suggestion is worth a word even when the charge stays the same
USAGE_STATES = ("COMPLETED", "TIMEOUT")  # the job ran to its end: its usage is the real usage


@dataclass(frozen=True)
class Advice:
    resource: str  # "cpus", "mem", "time", "gpus" or "gpu_util"
    option: str  # the flag to pass next time: "--cpus 4", "--mem 8G", "--time 00:10:00" ("" if none)
    message: str
    su_before: float  # cpus/mem: the job's charge; time: the worst-case estimate
    su_after: float

    @property
    def saving(self) -> float:
        return 0.0 if self.su_before <= 0 else 1 - self.su_after / self.su_before

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "saving": self.saving}


def advise(record: AcctRecord, partition: Partition, *, tasks_per_node: int | None = None) -> list[Advice]:
    """Advice for one finished job; empty when it was right-sized (a pure function).

    `tasks_per_node` turns cores per node into --cpus (per task); None assumes deltajobs' default
    of one task per GPU (one on CPU partitions). CPU and memory suggestions are priced alone and,
    where only both together lower the charge (CPU partitions: max(cores, mem / 2G)), together.
    """
    request = Request.from_acct(record)
    tasks = tasks_per_node or max(1, request.gpus_per_node)
    found = [c for c in (_cpu_candidate(record, request, tasks), _mem_candidate(record, request, tasks)) if c]
    now = estimate(request, partition)
    combined = request
    for candidate in found:
        combined = dataclasses.replace(combined, **candidate.change)
    both = estimate(combined, partition)
    advice = []
    for candidate in found:
        alone = estimate(dataclasses.replace(request, **candidate.change), partition)
        others = [c for c in found if c is not candidate]
        others_alone = [estimate(dataclasses.replace(request, **c.change), partition).su for c in others]
        if _saves(now.su, alone.su):
            after, effect = alone, _effect(now, alone)
        elif others and all(_saves(other, both.su) for other in others_alone):
            with_others = " ".join(c.option for c in others)
            after, effect = both, f"with {with_others} " + _effect(now, both)
        elif candidate.reserved >= OVERSIZED * candidate.suggested:
            after, effect = alone, _effect(now, alone)
        else:
            continue
        message = f"{candidate.reason}: {candidate.option} {effect}"
        advice.append(Advice(candidate.resource, candidate.option, message, now.su, after.su))
    time_advice = _time_advice(record, partition, request)
    return advice + ([time_advice] if time_advice else [])


@dataclass(frozen=True)
class _Candidate:
    resource: str
    option: str
    reason: str  # what was reserved and what was used
    change: dict[str, Any]  # the Request fields the suggestion changes
    reserved: float
    suggested: float


def _cpu_candidate(record: AcctRecord, request: Request, tasks: int) -> _Candidate | None:
    if record.state not in USAGE_STATES or record.elapsed_s < MIN_ELAPSED_FOR_CPU_S or record.total_cpu_s <= 0:
        return None
    reserved = request.cpus_per_node
    used = record.total_cpu_s / record.elapsed_s / request.nodes  # cores busy on average, per node
    per_task = max(1, math.ceil(_power_of_two(used * CPU_HEADROOM) / tasks))
    suggested = per_task * tasks
    if suggested >= reserved:
        return None
    where = " per node" if request.nodes > 1 else ""
    return _Candidate(
        resource="cpus",
        option=f"--cpus {per_task}",
        reason=f"reserved {reserved} CPUs{where}, used {used:.1f} on average",
        change={"cpus_per_node": suggested},
        reserved=reserved,
        suggested=suggested,
    )


def _mem_candidate(record: AcctRecord, request: Request, tasks: int) -> _Candidate | None:
    if record.state not in USAGE_STATES or not record.max_rss_mb or request.mem_mb_per_node <= 0:
        return None
    peak_mb = record.max_rss_mb * tasks  # MaxRSS is the largest task's; every task may reach it
    suggested_mb = nice_mem_gb(peak_mb * MEM_HEADROOM / MB_PER_GB) * MB_PER_GB
    reserved_mb = request.mem_mb_per_node
    if suggested_mb >= reserved_mb:
        return None
    per_task = f" per task x {tasks}" if tasks > 1 else ""
    where = " per node" if request.nodes > 1 else ""
    return _Candidate(
        resource="mem",
        option=f"--mem {suggested_mb // MB_PER_GB:.0f}G",
        reason=f"reserved {_size(reserved_mb)}{where}, peak {_size(record.max_rss_mb)}{per_task}",
        change={"mem_mb_per_node": suggested_mb},
        reserved=reserved_mb,
        suggested=suggested_mb,
    )


def _time_advice(record: AcctRecord, partition: Partition, request: Request) -> Advice | None:
    limit = record.timelimit_s
    if record.state != "COMPLETED" or not limit or record.elapsed_s <= 0:
        return None
    suggested = max(TIME_STEP_S, math.ceil(record.elapsed_s * TIME_HEADROOM / TIME_STEP_S) * TIME_STEP_S)
    if suggested * 2 > limit:
        return None
    before = estimate(dataclasses.replace(request, seconds=limit), partition)
    after = estimate(dataclasses.replace(request, seconds=suggested), partition)
    if not after.minimum_applies:
        change = f"would drop from {format_su(before.su)} to {format_su(after.su)} SU"
    elif _saves(before.su, after.su):
        change = f"would drop from {format_su(before.su)} to {format_su(after.su)} SU{_floor(after)}"
    else:
        change = (
            f"stays {format_su(after.su)} SU, the minimum per job "
            f"({format_su(before.formula_su)} -> {format_su(after.formula_su)} SU by the formula)"
        )
    return Advice(
        resource="time",
        option=f"--time {format_walltime(suggested)}",
        message=f"ran {format_hours(record.elapsed_s)} of a {format_hours(limit)} limit: "
        f"--time {format_walltime(suggested)} (the estimate shown before submitting {change})",
        su_before=before.su,
        su_after=after.su,
    )


def _saves(before: float, after: float) -> bool:
    return before > 0 and (before - after) / before >= MEANINGFUL_SAVING


def _effect(before: Estimate, after: Estimate) -> str:
    """`would halve the charge (2.06 -> 1.0 SU)`, as billed; under a minimum charge, with the formula's
    figures: `keeps the same SU (1.0, the minimum per job; 0.14 -> 0.067 SU by the formula)`."""
    if not _saves(before.su, after.su):
        if after.minimum_applies and _saves(before.formula_su, after.formula_su):
            return (
                f"keeps the same SU ({format_su(after.su)}, the minimum per job; "
                f"{format_su(before.formula_su)} -> {format_su(after.formula_su)} SU by the formula)"
            )
        return "keeps the same SU"
    ratio = after.su / before.su
    change = "would halve the charge" if 0.45 <= ratio <= 0.55 else f"would cut the charge by {1 - ratio:.0%}"
    return f"{change} ({format_su(before.su)} -> {format_su(after.su)} SU{_floor(after)})"


def _floor(after: Estimate) -> str:
    """`, the minimum per job; 0.17 SU by the formula` where the minimum sets the charge after a change."""
    return f", the minimum per job; {format_su(after.formula_su)} SU by the formula" if after.minimum_applies else ""


def _power_of_two(value: float) -> int:
    return 1 if value <= 1 else 1 << math.ceil(math.log2(value))


def nice_mem_gb(gb: float) -> int:
    """The smallest of 1, 2, 4, 8, 12, 16, 20, ... (powers of two, then multiples of 4G) >= gb."""
    if gb <= 4:
        return _power_of_two(gb)
    return 4 * math.ceil(gb / 4)


def _size(mb: float) -> str:
    return f"{mb:.0f}M" if mb < MB_PER_GB else f"{mb / MB_PER_GB:.3g}G"


# -- GPUs: what nvidia-smi saw inside the job (deltajobs.injob.gpu_usage) -------------------------------

LOW_GPU_UTIL = 30.0  # % busy: below this the GPUs mostly wait for data or for the host


def gpu_advice(
    gpu: dict[str, Any] | None,
    gpus_per_node: int,
    record: AcctRecord | None = None,
    partition: Partition | None = None,
) -> list[Advice]:
    """Advice from a run's GPU summary (`gpu_usage.summarize`; None: never sampled, no advice):
    GPUs reserved but idle (priced when sacct's `record` and the `partition` are known), and GPUs
    busy only a small part of the time. The samples come from the job's first node."""
    if not gpu or not gpus_per_node or not gpu.get("samples"):
        return []
    reserved, busy, util = gpus_per_node, int(gpu.get("busy_gpus", 0)), float(gpu.get("mean_util", 0.0))
    request = Request.from_acct(record) if record is not None else None
    priced = estimate(request, partition) if request is not None and partition is not None else None
    now = priced.su if priced is not None else 0.0
    advice = []
    if busy < reserved:
        used = max(1, busy)
        after, effect = now, ""
        if priced is not None and request is not None and partition is not None:
            fewer = estimate(dataclasses.replace(request, gpus_per_node=used), partition)
            after, effect = fewer.su, f" {_effect(priced, fewer)}"
        plural = "s" if reserved > 1 else ""
        reason = f"{reserved} GPU{plural} reserved, {busy} used" + (
            " (the job trained on the CPU? see train.device)" if busy == 0 else ""
        )
        advice.append(Advice("gpus", f"--gpus {used}", f"{reason}: --gpus {used}{effect}", now, after))
    if busy and util < LOW_GPU_UTIL:
        advice.append(
            Advice(
                "gpu_util",
                "",
                f"GPU busy {util:.0f}% of the time: the input pipeline or the host is the bottleneck, not the "
                "GPU (try a larger train.batch_size, fewer host syncs, or a smaller GPU; for a sweep of such "
                f"runs, --pack {pack_for(util)} runs {pack_for(util)} points at once on one GPU)",
                now,
                now,
            )
        )
    return advice


PACK_TARGET_UTIL = 80.0  # % busy that --pack aims for: K points of `util` each, the GPU not saturated
MAX_PACK = 8


def pack_for(util: float) -> int:
    """How many points of a GPU busy `util` % share one GPU: enough to keep it ~80 % busy (2 to 8)."""
    return max(2, min(MAX_PACK, math.floor(PACK_TARGET_UTIL / max(util, 1.0))))


# -- sweeps: the minimum charge per array task and idle GPUs (deltajobs.sweep.advise) --------------


def points_under_minimum(est: Estimate, typical_s: float) -> int:
    """How many points of `typical_s` one after another a task holds before its formula charge
    reaches the minimum it pays anyway (at least 1): the --per-task the advice and the sweep use."""
    per_point = est.su_per_hour * typical_s / 3600
    if per_point <= 0 or est.minimum.su <= 0:
        return 1
    return max(1, math.floor(est.minimum.su / per_point + 1e-9))


def per_task_advice(est: Estimate, tasks: list[list[float]], accounted_su: float | None = None) -> Advice | None:
    """After a sweep whose tasks ran the points of `tasks` (each task: its points' seconds): what its
    points were billed under the minimum per array task, and what `--per-task K` would have cost,
    both by `est`'s rules (charge_minimum, billed vs formula). None when grouping saves nothing.
    `accounted_su`: what SLURM's accounting says the tasks cost, shown where it differs."""
    seconds = [s for task in tasks for s in task]
    if not seconds or est.minimum.su <= 0 or est.minimum.array_tasks != "each":
        return None
    typical = sorted(seconds)[len(seconds) // 2]
    per_task = min(len(seconds), points_under_minimum(est, typical))
    if per_task <= max(len(task) for task in tasks):
        return None
    before = sum(est.su_for(sum(task)) for task in tasks)
    after = sum(est.su_for(sum(seconds[i : i + per_task])) for i in range(0, len(seconds), per_task))
    if not _saves(before, after):
        return None
    formula = sum(est.formula_su_for(s) for s in seconds)
    source = f"; {est.minimum.source}" if est.minimum.source else ""
    accounted = ""
    if accounted_su is not None and abs(accounted_su - before) > MEANINGFUL_SAVING * max(before, 1e-9):
        accounted = f"; SLURM's accounting says {format_su(accounted_su)} SU"
    return Advice(
        "per_task",
        f"--per-task {per_task}",
        f"{len(seconds)} points of {format_hours(typical)} each were charged {format_su(before)} SU "
        f"(at least {est.minimum.su:g} SU per array task{source}{accounted}); with --per-task {per_task} they "
        f"would have cost {format_su(after)} SU ({format_su(formula)} SU by the formula either way)",
        before,
        after,
    )


def pack_advice(utils: list[float]) -> Advice | None:
    """The points' GPUs were busy less than LOW_GPU_UTIL % on average: run several on one GPU."""
    busy = [u for u in utils if u > 0]
    if not busy:
        return None
    mean = sum(busy) / len(busy)
    if mean >= LOW_GPU_UTIL:
        return None
    pack = pack_for(mean)
    return Advice(
        "gpu_util",
        f"--pack {pack}",
        f"the points kept their GPU busy {mean:.0f}% of the time on average: --pack {pack} runs {pack} points "
        f"at once on one GPU (separate processes), about 1/{pack} of the GPU-hours",
        0.0,
        0.0,
    )


# -- whole units: the request that bills one fewer (deltajobs estimate) ---------------------------


def one_unit_fewer(est: Estimate, tasks_per_node: int = 1) -> Advice | None:
    """Where units are whole (DeltaAI's GH200s): the largest --mem (in sbatch's G) and/or --cpus
    (per task) with which `est` bills one unit fewer per node by every reading, never below what its
    GPUs need. None where units are fractions, where the GPUs set the count, or where no core fits.
    The message adds the headline reading's own limit where it alone allows more memory."""
    target = est.units_per_node - 1
    if not est.whole or target < max(1.0, est.reserved["gpus"]):
        return None
    limits = _largest_within(est, target, est.readings)
    changes: dict[str, str] = {}  # resource: its option (`--mem 223G`)
    if est.reserved["cpus"] > limits["cpus"]:
        per_task = int(limits["cpus"]) // tasks_per_node
        if per_task < 1:
            return None
        changes["cpus"] = f"--cpus {per_task}"
    if est.reserved["mem_gb"] > limits["mem_gb"]:
        changes["mem"] = f"--mem {limits['mem_gb']:g}G"
    shown = [_mem_shown(est, limits["mem_gb"]) if name == "mem" else option for name, option in changes.items()]
    saved = est.nodes * est.charge_factor  # SU per hour: one unit on every node
    per_node = " per node" if est.nodes > 1 else ""
    message = f"one {est.unit} fewer: {' and '.join(shown)} would be {target:g} {est.unit}{per_node}"
    if len(est.readings) == 1:
        message += f": {saved:g} SU per hour less"
    else:
        message += f" by every reading: {saved:g} SU per hour less in the worst case"
        headline = est.readings[0]
        alone = _largest_within(est, target, (headline,))["mem_gb"]
        if headline.units(est.terms["mem"]) > target and alone > limits["mem_gb"]:
            message += f"; by {headline.name} alone, {_mem_shown(est, alone)} would do"
    after = max(est.formula_su - saved * est.hours, est.minimum.su)
    return Advice("+".join(changes), " ".join(changes.values()), message, est.su, after)


def _largest_within(est: Estimate, target: float, readings: tuple[Reading, ...]) -> dict[str, float]:
    """The most cores, and the most whole G of memory, per node that bill at most `target` units by
    every one of `readings` (a count down from one unit above: at most one unit's worth of steps)."""
    per_core = 1 / est.divisors["cpus"]
    per_g = BYTES_PER_SLURM_GB / est.mem_unit_bytes / est.divisors["mem_gb"]
    limits = {}
    for name, step in (("cpus", per_core), ("mem_gb", per_g)):
        value = math.floor((target + 1) / step)
        while value > 0 and max(r.units(value * step) for r in readings) > target:
            value -= 1
        limits[name] = float(value)
    return limits


def _mem_shown(est: Estimate, gib: float) -> str:
    """`--mem 223G (239.4 GB)`: sbatch's G, and the charge formula's GB where they differ."""
    if est.mem_unit_bytes == BYTES_PER_SLURM_GB:
        return f"--mem {gib:g}G"
    return f"--mem {gib:g}G ({gib * BYTES_PER_SLURM_GB / est.mem_unit_bytes:.1f} GB)"
