"""The budget guard: before anything is submitted, refuse jobs whose worst case (their full walltime)
exceeds the user's per-job cap (`max_su_per_job` in the config) or the account's balance, unless
the user says `--yes`. A sweep is guarded as all its points together.

The guard uses the figures as billed: where the profile has a minimum charge (`charge_minimum`),
a job costs at least that, and so does each array task of a sweep (`array_tasks: each`) or the
array once (`whole`). Its messages name the formula's figure too where the minimum raised it.
Where the profile's whole units read two ways (DeltaAI's GH200s: NCSA's worked example and its
stated rule), the guard takes the larger, and its messages name the other.
"""

from __future__ import annotations

from deltajobs.charge.accounting import balance
from deltajobs.charge.estimate import Estimate, estimate_job, format_su
from deltajobs.errors import BudgetError
from deltajobs.spec.resolve import ResolvedJob
from deltajobs.spec.settings import Settings


def check_budget(
    resolved: ResolvedJob, settings: Settings, yes: bool, count: int = 1, nouns: tuple[str, str] = ("point", "sweep")
) -> float:
    """The worst-case SU, as billed, of one job (`count` 1) or of `count` array tasks like `resolved`
    (a sweep's points; `nouns` ("task", "array") for an array job); raises BudgetError when one
    exceeds the cap or all together exceed the balance, unless `yes`. The messages name the values
    the cluster's defaults filled in (`payload.defaults()`)."""
    est = estimate_job(resolved)
    part, whole = nouns
    said = resolved.payload.defaults()
    title = resolved.profile.title or resolved.profile.name
    priced = f"; priced with {title}'s defaults where the script is silent: {', '.join(said)}" if said else ""
    total = est.su if count == 1 else est.array_su(count)
    if yes:
        return total
    cap = settings.max_su_per_job
    account = resolved.spec.account
    per_job = est.su if count == 1 or est.minimum.array_tasks == "each" else est.formula_su
    if cap is not None and per_job > cap:
        if count == 1:
            raise BudgetError(
                f"the estimate {per_job:.2f} SU{_why(est)} exceeds max_su_per_job {cap:g}; pass --yes to submit anyway"
                + priced
            )
        why = _why(est) if per_job == est.su else ""
        raise BudgetError(
            f"each {part} may take {per_job:.2f} SU{why}, over max_su_per_job {cap:g}; pass --yes{priced}"
        )
    left = balance(account) if account else None
    if left is not None and total > left:
        if count == 1:
            raise BudgetError(
                f"the estimate {total:.2f} SU{_why(est)} exceeds the balance of {account} ({left:g} SU); "
                "pass --yes to submit anyway" + priced
            )
        raise BudgetError(
            f"the {whole} may take {total:.2f} SU{_why(est, count)}, over the balance of {account} ({left:g} SU); "
            "pass --yes" + priced
        )
    return total


def _why(est: Estimate, count: int = 1) -> str:
    """` (at least 1 SU per job; 0.083 SU by the formula)` where the minimum raised the figure;
    ` (by NCSA's stated rule; 2.0 SU by NCSA's worked example ...)` where the readings differ."""
    formula = est.formula_su * count
    billed = est.su if count == 1 else est.array_su(count)
    if billed > formula:
        return f" (at least {est.minimum.su:g} SU per job; {format_su(formula)} SU by the formula)"
    if est.readings_differ:
        headline = est.readings[0]
        return f" (by {est.worst_reading.name}; {format_su(est.reading_su(headline) * count)} SU by {headline.name})"
    return ""
