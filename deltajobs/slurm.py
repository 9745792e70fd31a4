"""SLURM commands: argv builders and pure parsers for squeue/sacct/scancel/scontrol.

Every command goes through `run()`, the single process seam that unit tests replace. Parsers are
pure functions from text to dataclasses, tested on recorded output. sbatch itself is called by
submitit (see `submit.py`), with the script `render.py` produced.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from deltajobs.errors import SlurmError

DEFAULT_TIMEOUT = 30.0

# States after which a job never changes again (sacct's vocabulary).
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
        "REVOKED",
    }
)

SQUEUE_FIELDS = ("%i", "%j", "%T", "%P", "%r", "%M", "%l", "%D", "%b", "%V", "%S")
SACCT_FIELDS = (
    "JobID",
    "JobName",
    "State",
    "Partition",
    "Account",
    "AllocTRES",
    "ElapsedRaw",
    "TimelimitRaw",
    "TotalCPU",
    "MaxRSS",
    "ExitCode",
    "Submit",
    "Start",
    "End",
    "NCPUS",
    "NNodes",
    "ReqMem",
)


def run(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, input_text: str | None = None) -> str:
    """Run a SLURM command and return its stdout; raise SlurmError with its stderr otherwise."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input_text, check=False
        )
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is SLURM installed here? (--local runs on this machine)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer within {timeout:g}s: is slurmctld up?") from None
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        detail = lines[-1] if lines else f"exit code {proc.returncode}"
        raise SlurmError(f"{argv[0]} failed: {detail}")
    return proc.stdout


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
class AcctRecord:
    """One job from sacct, with its steps folded in (MaxRSS is the peak over steps)."""

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

    @property
    def billing(self) -> float:
        return float(self.alloc_tres.get("billing", 0) or 0)

    @property
    def gpus(self) -> int:
        return int(self.alloc_tres.get("gres/gpu", 0) or 0)

    @property
    def su(self) -> float:
        """Charge in Service Units, as jobcharge computes it: elapsed x billing / 3,600,000."""
        return self.elapsed_s * self.billing / 3_600_000


# -- argv builders --------------------------------------------------------------------------------


def squeue_argv(user: str | None = None) -> list[str]:
    return [
        "squeue",
        "--noheader",
        "--array",
        f"--user={user or getpass.getuser()}",
        "--format=" + "|".join(SQUEUE_FIELDS),
    ]


def sacct_argv(
    job_ids: Iterable[str] = (), *, user: str | None = None, since: str | None = None, account: str | None = None
) -> list[str]:
    argv = ["sacct", "--noheader", "--parsable2", "--format=" + ",".join(SACCT_FIELDS)]
    ids = sorted(set(job_ids))
    if ids:
        argv.append("--jobs=" + ",".join(ids))
    else:
        argv.append(f"--user={user or getpass.getuser()}")
        argv.append(f"--starttime={since or 'now-30days'}")
    if account:
        argv.append(f"--accounts={account}")
    return argv


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    return ["scancel", *job_ids]


# -- parsers --------------------------------------------------------------------------------------


def parse_squeue(text: str) -> list[QueueRecord]:
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != len(SQUEUE_FIELDS):
            raise SlurmError(f"squeue printed an unexpected line: {line!r}")
        job_id, name, state, partition, reason, elapsed, limit, nodes, gres, submit, start = parts
        records.append(
            QueueRecord(
                job_id=job_id.strip(),
                name=name,
                state=state.strip(),
                partition=partition,
                reason=reason.strip("()"),
                elapsed=elapsed,
                time_limit=limit,
                nodes=_int(nodes),
                gres=gres,
                submit=submit,
                start=start,
            )
        )
    return records


def parse_sacct(text: str) -> list[AcctRecord]:
    """Parse `sacct --parsable2` output with SACCT_FIELDS; steps (123.batch, 123.0) fold into jobs."""
    jobs: dict[str, AcctRecord] = {}
    steps: dict[str, list[dict[str, str]]] = {}
    order: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != len(SACCT_FIELDS):
            raise SlurmError(f"sacct printed an unexpected line: {line!r}")
        row = dict(zip(SACCT_FIELDS, parts, strict=True))
        job_id, dot, _step = row["JobID"].partition(".")
        if dot:
            steps.setdefault(job_id, []).append(row)
            continue
        order.append(job_id)
        jobs[job_id] = AcctRecord(
            job_id=job_id,
            name=row["JobName"],
            state=normalise_state(row["State"]),
            partition=row["Partition"],
            account=row["Account"],
            alloc_tres=parse_tres(row["AllocTRES"]),
            elapsed_s=_int(row["ElapsedRaw"]),
            timelimit_s=_int(row["TimelimitRaw"]) * 60 if row["TimelimitRaw"].isdigit() else None,
            total_cpu_s=parse_duration(row["TotalCPU"]),
            max_rss_mb=parse_size_mb(row["MaxRSS"]),
            exit_code=row["ExitCode"],
            submit=row["Submit"],
            start=row["Start"],
            end=row["End"],
            ncpus=_int(row["NCPUS"]),
            nnodes=_int(row["NNodes"]),
            req_mem=row["ReqMem"],
        )
    result = []
    for job_id in order:
        record = jobs[job_id]
        rows = steps.get(job_id, [])
        rss = [r for r in (parse_size_mb(s["MaxRSS"]) for s in rows) if r is not None]
        peak = max(rss + ([record.max_rss_mb] if record.max_rss_mb is not None else []), default=None)
        step_cpu = sum(parse_duration(s["TotalCPU"]) for s in rows)
        result.append(
            AcctRecord(
                **{
                    **record.__dict__,
                    "state": oom_state(record.state, peak, record.alloc_tres),
                    "max_rss_mb": peak,
                    "total_cpu_s": max(record.total_cpu_s, step_cpu),
                    "steps": [s["JobID"] for s in rows],
                }
            )
        )
    return result


def oom_state(state: str, peak_mb: float | None, alloc_tres: dict[str, str]) -> str:
    """FAILED with a peak above the reserved memory is OUT_OF_MEMORY.

    With cgroups (Delta) SLURM says OUT_OF_MEMORY itself; without them (JobAcctGatherParams=
    OverMemoryKill, as on minidelta) it kills the step and the job only shows FAILED.
    """
    reserved = parse_size_mb(alloc_tres.get("mem", ""))
    if state == "FAILED" and peak_mb is not None and reserved and peak_mb > reserved:
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


# -- calls ----------------------------------------------------------------------------------------


def squeue(user: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[QueueRecord]:
    return parse_squeue(run(squeue_argv(user), timeout=timeout))


def sacct(job_ids: Iterable[str] = (), timeout: float = DEFAULT_TIMEOUT, **kwargs: str | None) -> list[AcctRecord]:
    return parse_sacct(run(sacct_argv(job_ids, **kwargs), timeout=timeout))


def scancel(job_ids: Iterable[str], timeout: float = DEFAULT_TIMEOUT) -> None:
    run(scancel_argv(job_ids), timeout=timeout)


def ping(timeout: float = 10.0) -> None:
    """Raise SlurmError unless slurmctld answers (sbatch alone would retry for minutes)."""
    try:
        out = run(["scontrol", "ping"], timeout=timeout)
    except SlurmError as err:
        raise SlurmError(f"slurmctld is not answering ({err}); nothing was submitted") from None
    if "UP" not in out:
        raise SlurmError(f"slurmctld is not answering ({out.strip()}); nothing was submitted")


def parse_config_value(text: str, key: str) -> str | None:
    """A value from `scontrol show config` output (`Key = value` lines)."""
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def cluster_name() -> str | None:
    return parse_config_value(run(["scontrol", "show", "config"], timeout=5.0), "ClusterName")
