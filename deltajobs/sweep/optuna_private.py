"""Optuna's private API, in one place, for the versions pinned in pyproject.toml's `search` extra
(SUPPORTED). A test (tests/test_search.py) exercises it against the installed Optuna.

A worker that was requeued or adopts a released trial must report to and tell a trial that an
earlier process asked for. Optuna's public `optuna.trial.Trial(study, trial_id)` does that, but it
takes the storage's trial id, which only `FrozenTrial._trial_id` exposes.
"""

from __future__ import annotations

from typing import Any

SUPPORTED = (">=4.0", "<6")  # keep in step with pyproject.toml


def trial_by_number(study: Any, number: int) -> Any | None:
    """The RUNNING trial numbered `number`, to report to and tell; None if it ended meanwhile."""
    import optuna

    for frozen in study.get_trials(deepcopy=False):
        if frozen.number == number:
            if frozen.state != optuna.trial.TrialState.RUNNING:
                return None
            return optuna.trial.Trial(study, frozen._trial_id)
    return None
