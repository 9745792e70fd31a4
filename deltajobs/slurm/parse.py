"""Pure parsers of SLURM's output (squeue, sacct, scontrol) and the records they return.

Functions from text to dataclasses, tested on recorded output, and total: what they cannot read (a
line, a value) becomes a warning on the `Parsed` list they return, never an exception, unless
nothing at all is readable. The commands themselves run in `slurm.py`, through its one seam `run()`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from deltajobs.errors import SlurmError

# States after which a job never changes again (sacct's vocabulary).
FINAL_STATES = frozenset(
    "BOOT_FAIL CANCELLED COMPLETED DEADLINE FAILED NODE_FAIL OUT_OF_MEMORY PREEMPTED TIMEOUT REVOKED".split()
)

SQUEUE_FIELDS = ("%i", "%j", "%T", "%P", "%r", "%M", "%l", "%D", "%b", "%V", "%S")
SACCT_FIELDS = tuple(
    "JobID JobName State Partition Account AllocTRES ElapsedRaw TimelimitRaw TotalCPU MaxRSS ExitCode "
    "Submit Start End NCPUS NNodes ReqMem NTasks".split()
)


T = TypeVar("T")


class Parsed(list[T], Generic[T]):
    """What a parser read, and a warning for each line or value it could not read (skipped or read
    as unknown). A plain list to its callers; `warning` says it all in one line for the user."""

    def __init__(self, records: Iterable[T] = (), warnings: Iterable[str] = ()) -> None:
        super().__init__(records)
        self.warnings = list(warnings)

    @property
    def warning(self) -> str | None:
        return one_line(self.warnings)


def one_line(warnings: Sequence[str]) -> str | None:
    """Warnings as one line for the user: the first, and how many more; None when there are none."""
    if not warnings:
        return None
    more = len(warnings) - 1
    return warnings[0] + (f" (and {more} more)" if more else "")


@dataclass(frozen=True)
class QueueRecord:
    """One line of squeue: a job that is pending or running."""

    job_id: str
    name: str
    state: str
    partition: str
    reason: str
    elapsed: str
    time_limit: str
    nodes: int
    gres: str
    submit: str
    start: str


@dataclass(frozen=True)
class Attempt:
    """One run of a job: a job that was requeued (timeout, preemption, node failure) has several,
    and each one is charged (`sacct --duplicates` lists them all)."""

    state: str
    start: str
    end: str
    elapsed_s: int
    billing: float

    @property
    def su(self) -> float:
        return self.elapsed_s * self.billing / 3_600_000


@dataclass(frozen=True)
class AcctRecord:
    """One job from sacct, with its steps and earlier attempts folded in.

    `state`, `end`, `exit_code` and `alloc_tres` are the last attempt's; `submit` and `start` the
    first attempt's; `elapsed_s`, `total_cpu_s` and the charge add up
    every attempt; MaxRSS is the peak over all steps of all attempts.
    """

    job_id: str
    name: str
    state: str
    partition: str
    account: str
    alloc_tres: dict[str, str]
    elapsed_s: int
    timelimit_s: int | None
    total_cpu_s: float
    max_rss_mb: float | None
    exit_code: str
    submit: str
    start: str
    end: str
    ncpus: int
    nnodes: int
    req_mem: str
    steps: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def billing(self) -> float:
        return _float(self.alloc_tres.get("billing", ""))

    @property
    def gpus(self) -> int:
        return _int(self.alloc_tres.get("gres/gpu", ""))

    @property
    def su(self) -> float:
        """Charge in Service Units, as jobcharge computes it: elapsed x billing / 3,600,000, summed
        over every attempt of a requeued job."""
        if self.attempts:
            return sum(a.su for a in self.attempts)
        return self.elapsed_s * self.billing / 3_600_000

    @property
    def restarts(self) -> int:
        return max(0, len(self.attempts) - 1)


# -- parsers --------------------------------------------------------------------------------------


def split_fields(line: str, count: int, name_at: int = 1) -> list[str] | None:
    """`line` split at `|` into `count` fields, or None when some are missing.

    SLURM does not escape a `|` in the job name (users name jobs freely), and the name is the only
    field a user writes: every extra `|` belongs to the field at `name_at`.
    """
    parts = line.split("|")
    extra = len(parts) - count
    if extra < 0:
        return None
    return [*parts[:name_at], "|".join(parts[name_at : name_at + extra + 1]), *parts[name_at + extra + 1 :]]


def parse_reason(text: str) -> str:
    """squeue's reason: `(Priority)` -> `Priority`; a `)` of the reason's own stays, as in
    `Job's QOS not permitted to use this partition (gpu allows normal not scav)`."""
    text = text.strip()
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text


def parse_squeue(text: str) -> Parsed[QueueRecord]:
    """`squeue --format` with SQUEUE_FIELDS -> one record per job; unreadable lines are warnings."""
    records: Parsed[QueueRecord] = Parsed()
    unreadable: list[str] = []
    for line in _lines(text):
        parts = split_fields(line, len(SQUEUE_FIELDS))
        if parts is None:
            unreadable.append(line)
            continue
        job_id, name, state, partition, reason, elapsed, limit, nodes, gres, submit, start = parts
        if not nodes.strip().isdigit():
            records.warnings.append(f"squeue: job {job_id.strip()}: NODES={nodes!r} is not a number (read as 0)")
        records.append(
            QueueRecord(
                job_id=job_id.strip(),
                name=name,
                state=state.strip(),
                partition=partition,
                reason=parse_reason(reason),
                elapsed=elapsed,
                time_limit=limit,
                nodes=_int(nodes),
                gres=gres,
                submit=submit,
                start=start,
            )
        )
    return _finish(records, unreadable, "squeue")


# What sacct prints in the fields deltajobs computes with (empty: not applicable, as for steps).
_SACCT_VALUES = {
    "ElapsedRaw": re.compile(r"\d+"),
    "TimelimitRaw": re.compile(r"\d+|UNLIMITED|Partition_Limit"),
    "TotalCPU": re.compile(r"(?:\d+-)?(?:\d+:)?\d+:\d+(?:\.\d+)?"),
    "MaxRSS": re.compile(r"\d+(?:\.\d+)?[KMGTP]?"),
    "NCPUS": re.compile(r"\d+"),
    "NNodes": re.compile(r"\d+"),
    "NTasks": re.compile(r"\d+"),
    "billing": re.compile(r"\d+(?:\.\d+)?"),  # in AllocTRES
}


def parse_sacct(text: str) -> Parsed[AcctRecord]:
    """Parse `sacct --parsable2 [--duplicates]` output with SACCT_FIELDS into one record per job.

    Steps (123.batch, 123.0) fold into the attempt they follow; the attempts of a requeued job (the
    same JobID listed again, oldest first) fold into one record whose elapsed time and charge are
    their sums (see `AcctRecord`). A line or value it cannot read is a warning: that job is left
    out, or the value read as 0, and the other jobs are read as usual.
    """
    attempts: dict[str, list[tuple[dict[str, str], list[dict[str, str]]]]] = {}
    unreadable: list[str] = []
    warnings: list[str] = []
    for line in _lines(text):
        parts = split_fields(line, len(SACCT_FIELDS))
        if parts is None:
            unreadable.append(line)
            continue
        row = dict(zip(SACCT_FIELDS, parts, strict=True))
        values = {**row, "billing": parse_tres(row["AllocTRES"]).get("billing", "")}
        odd = [
            f"{key}={value!r}"
            for key, form in _SACCT_VALUES.items()
            if (value := values[key]) and not form.fullmatch(value)
        ]
        if odd:
            warnings.append(f"sacct: {row['JobID']}: could not read {', '.join(odd)} (read as 0)")
        job_id, dot, _step = row["JobID"].partition(".")
        if not dot:
            attempts.setdefault(job_id, []).append((row, []))
        elif job_id in attempts:
            attempts[job_id][-1][1].append(row)
    records = Parsed((_fold(job_id, runs) for job_id, runs in attempts.items()), warnings)
    return _finish(records, unreadable, "sacct")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _finish(records: Parsed[T], unreadable: list[str], command: str) -> Parsed[T]:
    """The records, with a warning for each line left out; SlurmError when no line was readable:
    that is not the output deltajobs asked for (an error message, another format)."""
    if unreadable and not records:
        raise SlurmError(f"{command} printed an unexpected line: {unreadable[0][:200]!r}")
    records.warnings[:0] = [f"{command}: skipped a line it could not read: {line[:120]!r}" for line in unreadable]
    return records


def _fold(job_id: str, runs: list[tuple[dict[str, str], list[dict[str, str]]]]) -> AcctRecord:
    last, _ = runs[-1]
    alloc_tres = parse_tres(last["AllocTRES"])
    done: list[Attempt] = []
    peak: float | None = None
    total_cpu = 0.0
    step_names: list[str] = []
    for job, steps in runs:
        tres = parse_tres(job["AllocTRES"])
        run_state = normalise_state(job["State"])
        for row, tasks in [(job, 1), *((step, step_tasks(step)) for step in steps)]:
            rss = parse_size_mb(row["MaxRSS"])
            if rss is not None:
                peak = max(peak or 0.0, rss)
                run_state = oom_state(run_state, rss, tres, tasks)
        total_cpu += max(parse_duration(job["TotalCPU"]), sum(parse_duration(s["TotalCPU"]) for s in steps))
        step_names = [s["JobID"] for s in steps]
        done.append(
            Attempt(
                state=run_state,
                start=job["Start"],
                end=job["End"],
                elapsed_s=_int(job["ElapsedRaw"]),
                billing=_float(tres.get("billing", "")),
            )
        )
    return AcctRecord(
        job_id=job_id,
        name=last["JobName"],
        state=done[-1].state,
        partition=last["Partition"],
        account=last["Account"],
        alloc_tres=alloc_tres,
        elapsed_s=sum(a.elapsed_s for a in done),
        timelimit_s=_int(last["TimelimitRaw"]) * 60 if last["TimelimitRaw"].isdigit() else None,
        total_cpu_s=total_cpu,
        max_rss_mb=peak,
        exit_code=last["ExitCode"],
        submit=runs[0][0]["Submit"],
        start=runs[0][0]["Start"],
        end=last["End"],
        ncpus=_int(last["NCPUS"]),
        nnodes=_int(last["NNodes"]),
        req_mem=last["ReqMem"],
        steps=step_names,
        attempts=done,
    )


def step_tasks(step: dict[str, str]) -> int:
    """Tasks per node of a step (the batch step runs one)."""
    tasks, nodes = _int(step.get("NTasks", "")), _int(step.get("NNodes", ""))
    return max(1, tasks // max(1, nodes))


def oom_state(state: str, peak_mb: float | None, alloc_tres: dict[str, str], tasks_per_node: int = 1) -> str:
    """FAILED with a step's tasks above the memory reserved per node is OUT_OF_MEMORY.

    With cgroups (Delta) SLURM says OUT_OF_MEMORY itself; without them (JobAcctGatherParams=
    OverMemoryKill, as on minidelta) it kills the step and the job only shows FAILED. MaxRSS is
    the largest task's, and `mem` in AllocTRES is the whole job's: the tasks on one node share that
    node's part, so the peak counts once per task on a node (DDP ranks are alike).
    """
    reserved = parse_size_mb(alloc_tres.get("mem", ""))
    nodes = max(1, _int(alloc_tres.get("node", "1")))
    if state == "FAILED" and peak_mb is not None and reserved and peak_mb * tasks_per_node > reserved / nodes:
        return "OUT_OF_MEMORY"
    return state


def normalise_state(state: str) -> str:
    """`CANCELLED by 0` -> `CANCELLED`; `RUNNING` stays."""
    return state.split()[0] if state else "UNKNOWN"


def parse_tres(text: str) -> dict[str, str]:
    """`billing=1000,cpu=1,gres/gpu=1,mem=16G,node=1` -> dict."""
    result = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


_DURATION = re.compile(r"(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)")


def parse_duration(text: str) -> float:
    """sacct's `[D-][HH:]MM:SS[.mmm]` -> seconds; empty or unknown -> 0."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        return 0.0
    days, hours = int(match["d"] or 0), int(match["h"] or 0)
    return ((days * 24 + hours) * 60 + int(match["m"])) * 60 + float(match["s"])


_SIZE = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>[KMGTP]?)")
_MB = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}


def parse_size_mb(text: str) -> float | None:
    """sacct's `123456K`, `1.5G` -> megabytes; empty -> None. A bare number is bytes."""
    match = _SIZE.fullmatch(text.strip())
    return float(match["n"]) * _MB[match["unit"]] if match else None


def _int(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def parse_config_value(text: str, key: str) -> str | None:
    """A value from `scontrol show config` output (`Key = value` lines)."""
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None
