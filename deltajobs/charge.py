"""Service Units: the estimate before submitting, the balance, and what jobs were charged after.

The pieces live in `charge_estimate` (the pure estimate), `charge_commands` (Delta's `accounts`
and `jobcharge`), and `charge_advice` (right-sizing); this module is their front door and computes
charges from sacct where `jobcharge` does not exist (`elapsed_seconds x billing / 3,600,000`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
from collections.abc import Iterable

from deltajobs import slurm
from deltajobs.charge_advice import Advice, advise
from deltajobs.charge_commands import (
    AccountBalance,
    AccountingError,
    AccountingUnavailable,
    ChargeReport,
    JobCharge,
    accounts,
    balance,
    jobcharge,
)
from deltajobs.charge_estimate import Estimate, Request, estimate, estimate_job, format_su
from deltajobs.config import Settings
from deltajobs.errors import SpecError
from deltajobs.slurm import AcctRecord
from deltajobs.spec import ResolvedJob

__all__ = [
    "AccountBalance",
    "AccountingError",
    "AccountingUnavailable",
    "Advice",
    "ChargeReport",
    "Estimate",
    "JobCharge",
    "Request",
    "accounts",
    "advise",
    "balance",
    "charge_from_acct",
    "charge_report",
    "default_since",
    "estimate",
    "estimate_job",
    "format_su",
    "typical_elapsed",
]

DEFAULT_DAYS = 30
_SINCE = re.compile(r"\d{4}-\d\d-\d\d(?:T\d\d:\d\d(?::\d\d)?)?")


def typical_elapsed(settings: Settings, resolved: ResolvedJob) -> float | None:
    """Typical seconds that earlier runs of this spec took, from the job registry, if it knows."""
    try:
        from deltajobs import registry

        return registry.typical_elapsed(settings, registry.spec_key(resolved))
    except (ImportError, AttributeError):
        return None


def default_since(today: dt.date | None = None) -> str:
    return ((today or dt.date.today()) - dt.timedelta(days=DEFAULT_DAYS)).isoformat()


def check_since(since: str) -> str:
    if not _SINCE.fullmatch(since):
        raise SpecError("--since", f"{since!r} is not a date; use YYYY-MM-DD (or YYYY-MM-DDTHH:MM)")
    try:
        dt.datetime.fromisoformat(since)
    except ValueError:
        raise SpecError("--since", f"{since!r} is not a valid date") from None
    return since


def charge_from_acct(
    records: Iterable[AcctRecord], *, account: str | None, window: str, user: str = ""
) -> ChargeReport:
    """Charges from sacct records, as jobcharge computes them; jobs that never started cost nothing."""
    jobs = [
        JobCharge(
            job_id=r.job_id,
            partition=r.partition,
            elapsed_s=r.elapsed_s,
            alloc_tres=",".join(f"{key}={value}" for key, value in r.alloc_tres.items()),
            user=user,
            name=r.name,
            start=r.start,
            billing=r.billing,
            su=r.su,
            account=r.account,
            state=r.state,
        )
        for r in records
        if r.elapsed_s > 0  # pending, or cancelled before it started: nothing charged
    ]
    totals: dict[str, float] = {}
    for job in jobs:
        totals[job.account] = totals.get(job.account, 0.0) + job.su
    return ChargeReport(
        source="sacct",
        account=account,
        window=window,
        by="Account",
        totals=totals,
        total_su=sum(totals.values()),
        jobs=jobs,
    )


def charge_report(
    account: str | None = None, since: str | None = None, detail: bool = False, user: str | None = None
) -> ChargeReport:
    """What was charged: from `jobcharge ACCOUNT` on Delta, else computed from sacct for `user`.

    `since` is a date (YYYY-MM-DD); the sacct fallback defaults to the last 30 days, jobcharge to
    its own default (the last month). Per-job rows always come back from sacct, and from
    jobcharge with `detail`.
    """
    if since is not None:
        check_since(since)
    if account:
        try:
            return jobcharge(account, since, detail)
        except AccountingUnavailable:
            pass
    start = since or default_since()
    who = user or getpass.getuser()
    records = slurm.sacct(user=who, since=start, account=account)
    return charge_from_acct(records, account=account, window=f"{who}'s jobs since {start}", user=who)


def describe(est: Estimate) -> str:
    """One line for humans: `1.0 SU on gpuA100x4 (1 node x 1 GPU-equivalent x factor 1 x 1 h)`."""
    nodes = f"{est.nodes} node{'s' if est.nodes != 1 else ''}"
    return (
        f"{format_su(est.su)} SU on {est.partition} ({nodes} x {est.units_per_node:.3g} {est.unit} "
        f"x factor {est.charge_factor:g} x {est.hours:.3g} h)"
    )
