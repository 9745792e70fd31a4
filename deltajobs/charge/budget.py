"""The budget guard: before anything is submitted, refuse jobs whose worst case (their full walltime)
exceeds the user's per-job cap (`max_su_per_job` in the config) or the account's balance, unless
the user says `--yes`. A sweep is guarded as all its points together.
"""

from __future__ import annotations

from deltajobs.charge.accounting import balance
from deltajobs.charge.estimate import estimate_job
from deltajobs.config import Settings
from deltajobs.errors import BudgetError
from deltajobs.spec import ResolvedJob


def check_budget(resolved: ResolvedJob, settings: Settings, yes: bool, count: int = 1) -> float:
    """The worst-case SU of one job (`count` 1) or of `count` sweep points like `resolved`; raises
    BudgetError when one exceeds the cap or all together exceed the balance, unless `yes`."""
    per_job = estimate_job(resolved).su
    total = per_job * count
    if yes:
        return total
    cap = settings.max_su_per_job
    account = resolved.spec.account
    if cap is not None and per_job > cap:
        if count == 1:
            raise BudgetError(
                f"the estimate {per_job:.2f} SU exceeds max_su_per_job {cap:g}; pass --yes to submit anyway"
            )
        raise BudgetError(f"each point may take {per_job:.2f} SU, over max_su_per_job {cap:g}; pass --yes")
    left = balance(account) if account else None
    if left is not None and total > left:
        if count == 1:
            raise BudgetError(
                f"the estimate {total:.2f} SU exceeds the balance of {account} ({left:g} SU); "
                "pass --yes to submit anyway"
            )
        raise BudgetError(f"the sweep may take {total:.2f} SU, over the balance of {account} ({left:g} SU); pass --yes")
    return total
