"""Reading a search back: every trial of its study (number, state, parameters, objective, epochs,
the test accuracy reported beside), ranked by the objective, the workers' states and SU spent, and
Optuna's plots (optimisation history, parameter importances, parallel coordinates).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deltajobs.errors import DeltaJobsError
from deltajobs.spec.settings import Settings
from deltajobs.sweep.results import SweepView, load_sweep
from deltajobs.sweep.search import SearchSpec, load_study

STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")  # ranking order after the objective


@dataclass
class TrialRow:
    number: int
    state: str
    params: dict[str, Any]
    value: float | None  # the objective: the last epoch's, or the last reported before pruning
    epochs: int
    test_acc: float | None
    run_dir: str | None
    retry_of: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchView:
    sweep: SweepView  # the workers: one registry row each
    search: SearchSpec
    trials: list[TrialRow]  # ranked, best first
    spent_su: float | None

    @property
    def best(self) -> TrialRow | None:
        top = self.trials[0] if self.trials else None
        return top if top is not None and top.state == "COMPLETE" and top.value is not None else None

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep.sweep_id,
            "job": self.sweep.job,
            "sweep_dir": self.sweep.sweep_dir,
            "search": self.search.sampler,
            "pruner": self.search.pruner,
            "objective": self.search.objective,
            "direction": "maximize" if self.search.maximize else "minimize",
            "trials_wanted": self.search.trials,
            "counts": self.counts,
            "spent_su": self.spent_su,
            "budget_su": self.search.budget_su,
            "workers": [p.to_dict() for p in self.sweep.points],
            "best": self.best.to_dict() if self.best else None,
            "trials": [t.to_dict() for t in self.trials],
        }


def is_search(settings: Settings, sweep_id: str) -> bool:
    from deltajobs.registry.store import Registry

    with Registry.open(settings) as registry:
        return "search" in registry.sweep(sweep_id)["params"]


def load_search(settings: Settings, sweep_id: str) -> tuple[SearchView, Any]:
    """The search's view and its Optuna study (for plots)."""
    from deltajobs.registry.store import Registry

    sweep = load_sweep(settings, sweep_id)
    with Registry.open(settings) as registry:
        search = SearchSpec.from_dict(registry.sweep(sweep_id)["params"]["search"])
    journal = Path(sweep.sweep_dir)
    study = load_study(journal, search)
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    charged = [p for p in sweep.points if p.su is not None]
    spent = sum(p.su or 0.0 for p in charged) if charged else None
    return SearchView(sweep, search, rank_trials(rows, search.maximize), spent), study


def _row(trial: Any) -> TrialRow:
    value = trial.value if trial.values else None
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        value=value,
        epochs=int(trial.user_attrs.get("epochs") or len(trial.intermediate_values)),
        test_acc=trial.user_attrs.get("test_acc"),
        run_dir=trial.user_attrs.get("run_dir"),
        retry_of=trial.user_attrs.get("retry_of"),
    )


def rank_trials(rows: list[TrialRow], maximize: bool) -> list[TrialRow]:
    """Finished trials by their objective (best first), then pruned ones, then the rest; NaN last."""
    sign = -1.0 if maximize else 1.0

    def key(row: TrialRow) -> tuple[int, int, float, int]:
        finite = row.value is not None and math.isfinite(row.value)
        order = STATES.index(row.state) if row.state in STATES else len(STATES)
        return (order, 0 if finite else 1, sign * row.value if finite and row.value is not None else 0.0, row.number)

    return sorted(rows, key=key)


def plot_search(study: Any, path: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances and parallel coordinates, one PNG each
    beside `path` (`sweep.png` -> `sweep-history.png`, ...). Importances need two finished trials."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as views
    except ImportError:
        raise DeltaJobsError("--plot needs matplotlib: pip install 'deltajobs[plot]'") from None
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not finished:
        raise DeltaJobsError("no trial has finished yet; nothing to plot")
    kinds: list[tuple[str, Any]] = [
        ("history", views.plot_optimization_history),
        ("parallel", views.plot_parallel_coordinate),
    ]
    if len(finished) >= 2 and finished[0].params:
        kinds.insert(1, ("importances", views.plot_param_importances))
    written = []
    path.parent.mkdir(parents=True, exist_ok=True)
    for kind, draw in kinds:
        with warnings.catch_warnings():  # Optuna marks its matplotlib views experimental, every call
            warnings.simplefilter("ignore")
            axes = draw(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        target = path.with_name(f"{path.stem}-{kind}{path.suffix or '.png'}")
        figure.savefig(target, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(target)
    return written
