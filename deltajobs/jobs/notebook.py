"""`deltajobs notebook`: JupyterLab on a compute node, priced, private, and its URL once it answers.

    job = notebook_job(settings, directory, idle_s, overrides, cluster, picked)  # on -interactive if it fits
    live = live_notebooks(settings)                 # the notebook jobs not yet ended
    ready = wait_ready(settings, row, on_state)     # until JupyterLab answers /api/status with the token
    ready.url                                       # http://ADDRESS:PORT/lab?token=...

The job runs `deltajobs.injob.notebook` (which says how the server is kept private); this side
wrote its token before submitting (`payloads.notebook`), reads where it listens from
RUN_DIR/notebook/server.json, and asks JupyterLab itself whether it answers before saying so.
A notebook job is known by its token file: the registry keeps no payload kind.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deltajobs.charge.estimate import Estimate, Request, estimate, estimate_job, format_su
from deltajobs.clusters.units import format_walltime, parse_walltime
from deltajobs.errors import DeltaJobsError, SpecError
from deltajobs.jobs.lifecycle import active_jobs, reason_words, status
from deltajobs.osutil import laptop_tunnel
from deltajobs.payloads.notebook import read_token, server_path, token_path
from deltajobs.registry.schema import JobRow
from deltajobs.spec.resolve import INTERACTIVE, Overrides, ResolvedJob, interactive_sibling, resolve_job
from deltajobs.spec.settings import Settings

DEFAULT_TIME = "01:00:00"  # the interactive partitions' limit on Delta (running_jobs.rst)
NAME = "notebook"
UNREACHABLE_S = 60.0  # a server file but no answer from here this long: not reachable from this host
CHECK_STATE_S = 3.0  # how often the wait asks SLURM for the job's state (the server file: every 0.5 s)
PENDING_CHECK_S = 15.0  # ... once it has been pending 30 s: a busy queue may take hours
# Pending reasons that never end by themselves (lifecycle.REASONS says each in words).
NEVER_STARTS = frozenset(
    {"DependencyNeverSatisfied", "QOSGrpBillingMinutes", "AssocGrpBillingMinutes", "PartitionTimeLimit",
     "JobHeldAdmin", "launch failed requeued held"}
)  # fmt: skip


def parse_idle(text: str | None) -> int | None:
    """`--idle`: 30m, 1h, 90s, 45 (minutes), 00:30:00, or 0/off (never); seconds, or None."""
    if text is None or text.strip().lower() in ("0", "off", "never", "no"):
        return None
    value = text.strip().lower()
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min|h)?", value)
    try:
        if found:
            number, unit = float(found.group(1)), found.group(2) or "m"
            seconds = int(number * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit])
        else:
            seconds = parse_walltime(value, "--idle")
    except (SpecError, ValueError):
        raise SpecError("--idle", f"{text!r}; give a time like 30m, 1h, 90s or 00:30:00 (0: never)") from None
    if seconds < 10:
        raise SpecError("--idle", f"{text!r} is under 10 s; give at least 10s, or 0 for never")
    return seconds


def notebook_spec(directory: Path, idle_s: int | None) -> dict[str, object]:
    """The raw spec of a notebook job in `directory`: one task on one node, an hour by default."""
    args = ["--idle", str(idle_s)] if idle_s else []
    root = str(directory.expanduser().absolute())
    run = {"notebook": root, "workdir": root, "args": args, "snapshot": False}
    # Never requeued (a node failure, a preemption): a new JupyterLab elsewhere, charged again, its
    # kernels gone, would be worse than the job's end.
    resources = {"time": DEFAULT_TIME, "nodes": 1, "tasks_per_node": 1, "max_requeues": 0}
    return {"name": NAME, "run": run, "resources": resources}


@dataclass(frozen=True)
class Placement:
    """The notebook job, and what its partition costs beside the other choice."""

    job: ResolvedJob
    estimate: Estimate
    batch: Estimate | None  # the batch partition's price where the job is on an -interactive one
    why_batch: str | None  # why it is on a batch partition where an -interactive one exists


def notebook_job(
    settings: Settings, directory: Path, idle_s: int | None, overrides: Overrides, cluster: str, *, picked: bool
) -> Placement:
    """The notebook job, on the -interactive sibling of its partition where the user picked none and
    the walltime fits (NCSA's partitions for interactive work), priced beside the batch partition."""
    if not directory.expanduser().is_dir():
        raise SpecError("--dir", f"{str(directory)!r} is not a directory")
    job = resolve_job(notebook_spec(directory, idle_s), overrides, settings, cluster)
    picked = picked or any(s.replace(" ", "").startswith("resources.partition=") for s in overrides.sets)
    why_batch = None
    if not picked:
        sibling = interactive_sibling(job, overrides, settings)
        name = job.partition.name + INTERACTIVE
        if sibling is not None:
            job = sibling
        elif name in job.profile.partitions and not job.partition.interactive:
            limit = job.profile.partitions[name].max_time
            why_batch = f"{job.spec.resources.time} is longer than {name} allows ({limit})"
    est = estimate_job(job)
    batch = None
    if job.partition.interactive and job.partition.name.endswith(INTERACTIVE):
        batch_name = job.partition.name.removesuffix(INTERACTIVE)
        if batch_name in job.profile.partitions:
            batch = estimate(Request.from_resources(job.spec.resources), job.profile.partitions[batch_name])
    return Placement(job, est, batch, why_batch)


def price_line(place: Placement) -> str:
    """`2.0 SU per hour on gpuA100x4-interactive (charge factor 2; at most 2.0 SU in 01:00:00)` and
    the batch partition's hourly price beside it."""
    est, job = place.estimate, place.job
    line = (
        f"{format_su(est.su_per_hour)} SU per hour on {job.partition.name} (charge factor {est.charge_factor:g}; "
        f"at most {format_su(est.su)} SU in {job.spec.resources.time})"
    )
    if place.batch is not None:
        line += (
            f"; {place.batch.partition} costs {format_su(place.batch.su_per_hour)} SU per hour "
            f"(-p {place.batch.partition}: a batch queue, slower to start)"
        )
    if place.why_batch:
        line += f"; on the batch partition: {place.why_batch}"
    return line


def is_notebook(row: JobRow) -> bool:
    return token_path(Path(row.run_dir)).is_file()


def live_notebooks(settings: Settings) -> list[JobRow]:
    """The notebook jobs not yet ended, their states fresh, newest first."""
    ids = [r.job_id for r in active_jobs(settings) if is_notebook(r)]
    if not ids:
        return []
    rows = [r for r in status(settings, ids).rows if not r.final]
    return sorted(rows, key=lambda r: r.submitted_at, reverse=True)


@dataclass(frozen=True)
class Ready:
    """A notebook that answers: where, and the URL with its token (from the login node)."""

    row: JobRow
    address: str
    port: int
    node: str
    token: str

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/lab?token={self.token}"

    @property
    def tunnel(self) -> str:
        """The laptop's command to reach it through this login node."""
        return laptop_tunnel(self.port, self.address)

    @property
    def laptop_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/lab?token={self.token}"

    def to_dict(self) -> dict[str, object]:
        return {
            "job_id": self.row.job_id,
            "node": self.node,
            "address": self.address,
            "port": self.port,
            "url": self.url,
            "tunnel": self.tunnel,
            "run_dir": self.row.run_dir,
            "partition": self.row.partition,
            "time_limit": self.row.time_limit,
        }


def server_record(row: JobRow) -> dict[str, object] | None:
    try:
        data = json.loads(server_path(Path(row.run_dir)).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("address") and data.get("port") else None


def url_of(row: JobRow) -> str | None:
    """A running notebook's URL from its files (nothing asked of the server: `status` stays quick)."""
    if row.state != "RUNNING" or not is_notebook(row):
        return None
    record, token = server_record(row), read_token(Path(row.run_dir))
    if record is None or token is None:
        return None
    return f"http://{record['address']}:{record['port']}/lab?token={token}"


def answers(address: str, port: int, token: str, timeout: float = 5.0) -> bool:
    """JupyterLab at address:port answers its /api/status to this token (200)."""
    request = urllib.request.Request(f"http://{address}:{port}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (OSError, ValueError):
        return False


def ready(row: JobRow) -> Ready | None:
    """The notebook's address once JupyterLab answers there; None before."""
    record, token = server_record(row), read_token(Path(row.run_dir))
    if record is None or token is None:
        return None
    address, port = str(record["address"]), int(str(record["port"]))
    if not answers(address, port, token):
        return None
    return Ready(row, address, port, str(record.get("node") or address), token)


def wait_ready(
    settings: Settings, row: JobRow, on_state: Callable[[JobRow], None], timeout: float | None = None
) -> Ready:
    """Until JupyterLab answers (the job's state said through `on_state` as it changes); DeltaJobsError
    where the job ends first, with the log's last lines, or `timeout` seconds pass."""
    began = time.monotonic()
    deadline = None if timeout is None else began + timeout
    last: tuple[str, str] = ("", "")
    checked = 0.0
    listening_since: float | None = None  # when its server file appeared
    while True:
        pending = row.state == "PENDING" and time.monotonic() - began > CHECK_STATE_S * 10
        if time.monotonic() - checked >= (PENDING_CHECK_S if pending else CHECK_STATE_S):
            checked = time.monotonic()
            (row,) = status(settings, [row.job_id]).rows
            reason = row.reason if row.state == "PENDING" and row.reason not in (None, "None") else ""
            if (row.state, reason or "") != last:
                last = (row.state, reason or "")
                on_state(row)
            if row.state == "PENDING" and reason and reason.split(",")[0] in NEVER_STARTS:
                raise DeltaJobsError(
                    f"notebook job {row.job_id} will not start: {reason_words(reason)} ({reason}); "
                    "`deltajobs notebook --stop` cancels it"
                )
        record = server_record(row)
        if record is not None:
            found = ready(row)
            if found is not None:
                return found
            listening_since = listening_since or time.monotonic()
            if time.monotonic() - listening_since > UNREACHABLE_S and not row.final:
                raise DeltaJobsError(
                    f"notebook job {row.job_id}'s JupyterLab listens on {record['address']}:{record['port']} "
                    f"(node {record.get('node')}) but does not answer from here after {UNREACHABLE_S:g} s; "
                    f"the job runs on: `deltajobs notebook --stop` ends it (its log: {row.err_path})"
                )
        if row.final:
            tail = log_tail(row)
            raise DeltaJobsError(
                f"notebook job {row.job_id} ended {row.state} before JupyterLab answered"
                + (f"; its log ends: {tail}" if tail else f"; its log: {row.err_path}")
            )
        if deadline is not None and time.monotonic() > deadline:
            raise DeltaJobsError(
                f"notebook job {row.job_id} is still {row.state} after {format_walltime(int(timeout or 0))}; "
                "it stays queued: `deltajobs notebook` prints its URL once it runs, `deltajobs notebook --stop` ends it"
            )
        time.sleep(0.5)


def log_tail(row: JobRow, lines: int = 3) -> str:
    for path in (row.err_path, row.log_path):
        try:
            text = Path(path).read_text(errors="replace").strip().splitlines()
        except OSError:
            continue
        if text:
            return " | ".join(line.strip() for line in text[-lines:])
    return ""
