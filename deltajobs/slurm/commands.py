"""SLURM commands: argv builders and the calls (sbatch/squeue/sacct/scancel/scontrol).

Every command goes through `run()`, the single process seam that unit tests replace. The parsers
are pure functions in `parse.py`. sbatch
runs here: `sbatch()` for sbatch files, and for everything else through submitit, whose
`_submit_command` `submitit_private.py` replaces with a call of `sbatch()`.

A busy controller: sbatch and squeue may fail with "Socket timed out on send/recv operation" or
"Unable to contact slurm controller", and a timed-out sbatch may have queued its job all the same.
`run()` raises `SlurmBusy` for such answers and `patiently()` asks again after a pause, within a
deadline (`Patience`). Every submission carries a tag in its --comment (`new_tag`), and before
sbatch runs again the tag is looked up (`find_tagged`): one submission is at most one job.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from deltajobs.errors import SlurmError, SpecError
from deltajobs.slurm.parse import (
    SACCT_FIELDS,
    SQUEUE_FIELDS,
    AcctRecord,
    Parsed,
    QueueRecord,
    parse_config_value,
    parse_sacct,
    parse_squeue,
)

DEFAULT_TIMEOUT = 30.0
SBATCH_TIMEOUT = 60.0
DEADLINE_ENV = "DELTAJOBS_SLURM_DEADLINE"  # seconds a submit or cancel keeps asking a busy SLURM

# SLURM's words for "busy, ask again", and whether the command may have taken effect all the same:
# a request sent and not answered may have been carried out; one that never reached slurmctld not.
BUSY = {
    "socket timed out on send/recv operation": True,
    "zero bytes were transmitted or received": True,
    "connection reset by peer": True,
    "unexpected missing socket error": True,  # SLURM_MISSING_SOCKET_ERROR: 100 sbatch at once on minidelta
    "unable to contact slurm controller": False,  # (connect failure): nothing was sent
    "connection refused": False,
    "temporarily unable to accept job": False,  # sbatch's own retries ran out
}


class SlurmBusy(SlurmError):
    """SLURM did not answer in time, or said it is busy. `maybe_done`: the request may have been
    carried out all the same (a timed-out sbatch may have queued its job)."""

    def __init__(self, message: str, maybe_done: bool, reason: str = "") -> None:
        super().__init__(message)
        self.maybe_done = maybe_done
        self.reason = reason or message  # SLURM's words alone, for the retry line


def run(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, input_text: str | None = None) -> str:
    """Run a SLURM command and return its stdout; raise SlurmError with its stderr otherwise, and
    SlurmBusy where it timed out or SLURM said it is busy (see BUSY).

    Bytes that are not UTF-8 (a job name or a node's Reason= typed in Latin-1) read as U+FFFD:
    SLURM passes names through as bytes, and one such job must not stop us reading the others.
    """
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            input=input_text,
            check=False,
        )
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is SLURM installed here? (--local runs on this machine)") from None
    except subprocess.TimeoutExpired:
        reason = f"{argv[0]} did not answer within {timeout:g}s"
        raise SlurmBusy(f"{reason}: is slurmctld up?", maybe_done=True, reason=reason) from None
    if proc.returncode == -signal.SIGPIPE:  # it wrote to a socket slurmctld or munged closed under load
        reason = f"{argv[0]} was killed by SIGPIPE (a connection closed under it)"
        raise SlurmBusy(reason, maybe_done=True, reason=reason)  # maybe sent: the tag is looked up
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        detail = lines[-1] if lines else f"exit code {proc.returncode}"
        message = f"{argv[0]} failed: {detail}"
        busy = [done for words, done in BUSY.items() if words in detail.lower()]
        if busy:
            raise SlurmBusy(message, maybe_done=busy[0], reason=f"{argv[0]}: {detail.split(': ')[-1]}")
        raise SlurmError(message)
    return proc.stdout


# -- asking a busy SLURM again ---------------------------------------------------------------------


@dataclass(frozen=True)
class Patience:
    """How long to keep asking a busy SLURM: a pause before each retry, and a deadline for all the
    tries together (each try's own timeout is cut to what is left). `announce`: say on stderr,
    once, that SLURM is slow (submit and cancel do; queries fall back to the cache quietly)."""

    pauses_s: tuple[float, ...]
    deadline_s: float
    announce: bool = True


# sbatch and scancel: 5 tries within 2 minutes. With Delta's MessageTimeout unknown (SLURM's default
# is 10 s, as on minidelta: a guess for Delta), a try that times out costs 10 s, so ~4 fit.
SUBMIT_PATIENCE = Patience((3.0, 6.0, 12.0, 24.0), 120.0)
# squeue/sacct: one retry, then the caller shows the cached state with one warning line.
QUERY_PATIENCE = Patience((2.0,), 20.0, announce=False)
MIN_TRY_S = 5.0  # a retry is not started with less time than this left before the deadline
SETTLE_S = 2.0  # a tag not found is looked up once more this much later before sbatch runs again


def submit_patience() -> Patience:
    """SUBMIT_PATIENCE, with its deadline from $DELTAJOBS_SLURM_DEADLINE where set (seconds)."""
    text = os.environ.get(DEADLINE_ENV)
    if text is None:
        return SUBMIT_PATIENCE
    try:
        deadline = float(text)
    except ValueError:
        deadline = -1.0
    if not 1 <= deadline <= 3600:
        raise SpecError(DEADLINE_ENV, f"{text!r} is not a number of seconds between 1 and 3600")
    return Patience(SUBMIT_PATIENCE.pauses_s, deadline)


def _say(message: str) -> None:
    print(f"deltajobs: {message}", file=sys.stderr, flush=True)


notify: Callable[[str], None] = _say  # where retries are announced (the CLI's stderr)

T = TypeVar("T")


def patiently(
    attempt: Callable[[float], T],
    patience: Patience,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    lookup: Callable[[float], T | None] | None = None,
) -> T:
    """`attempt(timeout)`, asked again after each SlurmBusy while `patience` allows.

    With `lookup`, an attempt that may have been carried out is not repeated blindly: before the
    next try `lookup(timeout)` is asked, and what it finds is the result; while it cannot answer
    either, it is asked again and the attempt is not. Past the deadline: the last SlurmBusy, with
    how often and how long SLURM was asked, and whether an attempt may have been carried out.
    """
    started = time.monotonic()
    deadline = started + patience.deadline_s
    maybe_done = False  # an attempt may have been carried out, and no lookup has said otherwise
    tries = 0
    last: SlurmBusy | None = None
    for retry in range(len(patience.pauses_s) + 1):
        if last is not None:
            pause = patience.pauses_s[retry - 1]
            if time.monotonic() + pause + MIN_TRY_S > deadline:
                break  # no time left for another try worth the name
            if retry == 1 and patience.announce:
                notify(
                    f"SLURM is slow to answer ({last.reason}); retrying (1/{len(patience.pauses_s)}), "
                    f"for {patience.deadline_s:g}s at most..."
                )
            time.sleep(pause)
        try:
            if maybe_done and lookup is not None:
                found = lookup(min(timeout, deadline - time.monotonic()))
                if found is not None:
                    return found
                maybe_done = False
            left = deadline - time.monotonic()
            if tries and left < MIN_TRY_S:
                break
            tries += 1
            return attempt(min(timeout, max(left, MIN_TRY_S)))
        except SlurmBusy as err:
            last = err
            maybe_done = maybe_done or err.maybe_done
    assert last is not None
    spent = time.monotonic() - started
    raise SlurmBusy(f"{last}; asked {tries} time{'s' if tries != 1 else ''} in {spent:.0f}s", maybe_done)


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
    # --duplicates: every attempt of a requeued job, each one charged (folded by parse_sacct).
    argv = ["sacct", "--noheader", "--parsable2", "--duplicates", "--format=" + ",".join(SACCT_FIELDS)]
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


def tagged_squeue_argv() -> list[str]:
    """Every job of the user slurmctld still holds, whatever its state: its id (an array's own
    id for every task) and its comment, which squeue shows as soon as sbatch has queued it."""
    return ["squeue", "--noheader", "--states=all", f"--user={getpass.getuser()}", "--format=%F|%k"]


def tagged_sacct_argv() -> list[str]:
    """The user's jobs of the last hour with their submit lines (which hold the --comment), for a
    job that already left slurmctld's memory (MinJobAge). sacct's Comment needs
    AccountingStoreFlags=job_comment; SubmitLine is stored without it (Slurm 21.08+)."""
    user = f"--user={getpass.getuser()}"
    return ["sacct", "--noheader", "--parsable2", "-X", user, "--starttime=now-1hours", "--format=JobID,SubmitLine"]


# -- submitting exactly once ------------------------------------------------------------------------


def new_tag(name: str) -> str:
    """A submission's tag, its --comment: `deltajobs:<run or sweep directory>:<nonce>`."""
    return f"deltajobs:{name}:{secrets.token_hex(4)}"


def with_tag(options: Sequence[str], tag: str) -> list[str]:
    """sbatch `options` whose --comment is `tag` (any other --comment given is replaced)."""
    return [*(o for o in options if not o.startswith("--comment=")), f"--comment={tag}"]


def find_tagged(tag: str, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """The id of the job whose comment is `tag` (an array's own id), or None: squeue first, then
    sacct's submit lines. SlurmBusy when squeue cannot answer (nothing is known then)."""
    for line in run(tagged_squeue_argv(), timeout=timeout).splitlines():
        job_id, _, comment = line.partition("|")
        if comment.strip() == tag:
            return job_id.strip()
    try:
        text = run(tagged_sacct_argv(), timeout=timeout)
    except SlurmError:
        return None  # slurmctld answered without it; slurmdbd adds nothing it would have missed
    for line in text.splitlines():
        job_id, _, submit_line = line.partition("|")
        if f"--comment={tag}" in submit_line.split():
            return job_id.split("_")[0].strip()
    return None


def sbatch(options: Sequence[str], script: str, tag: str, patience: Patience | None = None) -> str:
    """Submit `script` with `options` (which include --parsable) tagged with `tag`; its job id.

    One call is at most one job: a busy SLURM is asked again (`submit_patience()`), and after a
    try that may have queued the job, its tag is looked up before sbatch runs again.
    """
    argv = ["sbatch", *with_tag(options, tag), script]

    def attempt(timeout: float) -> str:
        out = run(argv, timeout=timeout).strip()
        # `ID` or `ID;CLUSTER` with --parsable; `Submitted batch job ID` without it
        found = re.fullmatch(r"(?:Submitted batch job )?(\d+)(?:;\S*)?", out.splitlines()[-1] if out else "")
        if found is None:
            raise SlurmError(f"sbatch did not print a job id: {out[:200]!r}")
        return found.group(1)

    def lookup(timeout: float) -> str | None:
        found = find_tagged(tag, timeout)
        if found is None:  # a submission slurmctld received before the lookup may still be in hand
            time.sleep(SETTLE_S)
            found = find_tagged(tag, timeout)
        if found is not None:
            notify(f"sbatch timed out, but SLURM had queued the job: {found} (comment {tag})")
        return found

    try:
        return patiently(attempt, patience or submit_patience(), timeout=SBATCH_TIMEOUT, lookup=lookup)
    except SlurmBusy as err:
        if not err.maybe_done:
            raise SlurmBusy(f"slurmctld is not answering: {err}; nothing was submitted", False) from None
        raise SlurmBusy(
            f"slurmctld is not answering: {err}; sbatch may yet queue the job: `squeue --me --format='%i %k'` "
            f"shows it with comment {tag}; nothing was recorded, so scancel it if it appears",
            maybe_done=True,
        ) from None


# -- calls ----------------------------------------------------------------------------------------


def squeue(user: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Parsed[QueueRecord]:
    text = patiently(lambda t: run(squeue_argv(user), timeout=t), QUERY_PATIENCE, timeout=timeout)
    return parse_squeue(text)


def sacct(job_ids: Iterable[str] = (), timeout: float = DEFAULT_TIMEOUT, **kwargs: str | None) -> Parsed[AcctRecord]:
    argv = sacct_argv(job_ids, **kwargs)
    return parse_sacct(patiently(lambda t: run(argv, timeout=t), QUERY_PATIENCE, timeout=timeout))


def scancel(job_ids: Iterable[str], timeout: float = DEFAULT_TIMEOUT, patience: Patience | None = None) -> None:
    """Cancel the jobs; a busy SLURM is asked again (cancelling twice does no harm), and then
    squeue says whether they did leave the queue."""
    ids = list(job_ids)
    busy: list[SlurmBusy] = []

    def attempt(limit: float) -> None:
        try:
            run(scancel_argv(ids), timeout=limit)
        except SlurmBusy as err:
            busy.append(err)
            raise

    try:
        patiently(attempt, patience or submit_patience(), timeout=timeout)
    except SlurmBusy as err:
        undone = "they may or may not be cancelled" if err.maybe_done else "nothing was cancelled"
        raise SlurmBusy(f"slurmctld is not answering: {err}; {undone}: cancel again later", err.maybe_done) from None
    if busy:
        still = still_queued(ids, timeout)
        if still:
            raise SlurmError(f"scancel answered, but squeue still shows {', '.join(still)}: cancel again")


def still_queued(job_ids: list[str], timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """`job_ids` that squeue shows pending or running (`ID STATE`); none where it cannot answer."""
    argv = ["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(job_ids), "--format=%i|%T"]
    try:
        text = patiently(lambda t: run(argv, timeout=t), QUERY_PATIENCE, timeout=timeout)
    except SlurmError:
        return []  # an unknown id (gone already) is an error to squeue; a busy one tells nothing
    pairs = [line.split("|", 1) for line in text.splitlines() if "|" in line]
    return [f"{job} {state}" for job, state in pairs if state.strip() in ("PENDING", "RUNNING", "SUSPENDED")]


def cluster_name() -> str | None:
    text = patiently(lambda t: run(["scontrol", "show", "config"], timeout=t), QUERY_PATIENCE, timeout=5.0)
    return parse_config_value(text, "ClusterName")
