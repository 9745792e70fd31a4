"""What jobs were charged: from Delta's `jobcharge` where it exists, else computed from sacct as
jobcharge computes it (`elapsed_seconds x billing / 3,600,000`, every attempt of a requeued job).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import re
from collections.abc import Iterable
from typing import Any

from deltajobs.charge.accounting import AccountingUnavailable, ChargeReport, JobCharge
from deltajobs.charge.estimate import format_su
from deltajobs.charge.jobcharge import jobcharge
from deltajobs.clusters.profile import load_profile
from deltajobs.errors import DeltaJobsError, SpecError
from deltajobs.slurm import commands as slurm
from deltajobs.slurm.parse import AcctRecord
from deltajobs.spec.context import active_cluster
from deltajobs.spec.settings import Settings

DEFAULT_DAYS = 30
_SINCE = re.compile(r"\d{4}-\d\d-\d\d(?:T\d\d:\d\d(?::\d\d)?)?")


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
    report = charge_from_acct(records, account=account, window=f"{who}'s jobs since {start}", user=who)
    return dataclasses.replace(report, warnings=[records.warning] if records.warning else [])


def under_minimum(report: ChargeReport, settings: Settings) -> dict[str, Any] | None:
    """The jobs charged under the active profile's minimum charge, or None (no minimum, no per-job rows,
    or none under it): what was really billed, against what estimates assume."""
    try:
        profile = load_profile(active_cluster(settings))
    except DeltaJobsError:  # a side note: an unknown cluster is for the commands that need one to say
        return None
    minimum = profile.charge_minimum
    below = [job for job in report.jobs if job.su < minimum.su]
    if not below:
        return None
    with_minimum = sum(max(job.su, minimum.su) for job in report.jobs)
    where = f"the {minimum.su:g} SU minimum per job of the {profile.name} profile ({minimum.source})"
    if report.source == "jobcharge":
        note = (
            f"{len(below)} of {len(report.jobs)} jobs were billed under {where}: jobcharge shows what NCSA "
            "billed; estimates keep the minimum as their worst case"
        )
    else:
        note = (
            f"{len(below)} of {len(report.jobs)} jobs cost under {where}; with it the total would be "
            f"{format_su(with_minimum)} SU (sacct's billing has no minimum; jobcharge shows what NCSA billed)"
        )
    return {"su": minimum.su, "source": minimum.source, "jobs_below": len(below), "note": note}
