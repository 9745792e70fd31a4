"""Reading a sweep back: one row per point with its parameters, state and metrics, ranked by a metric.

States come from `registry.refresh` (one squeue and one sacct call for the whole array); metrics
from each point's results.json: its top-level numbers (test_acc, test_loss, params, ...) and the
last epoch's (train_loss, ...). Accuracies rank higher-is-better, everything else lower-is-better.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deltajobs import backends
from deltajobs.errors import SpecError
from deltajobs.registry.refresh import refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import Settings

HIGHER_IS_BETTER = ("acc", "accuracy", "per_second")
TABLE_METRICS = ("test_acc", "test_loss", "train_loss")
NOT_METRICS = ("time", "exit_code")  # bookkeeping in a script's reports and results, not results


@dataclass
class PointRow:
    index: int
    job_id: str
    state: str
    params: dict[str, Any]
    run_dir: str
    elapsed_s: int | None = None
    reason: str | None = None
    waiting: bool = False  # alive but waiting for a --max-parallel slot (a local sweep)
    su: float | None = None  # what SLURM charged for it
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def shown_state(self) -> str:
        return "WAITING" if self.waiting else self.state

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.shown_state}


@dataclass
class SweepView:
    sweep_id: str
    job: str
    backend: str
    array_job_id: str | None
    sweep_dir: str
    keys: list[str]
    log_keys: list[str]
    random: bool
    points: list[PointRow]
    warning: str | None = None  # SLURM did not answer: states are the cached ones
    tasks: list[JobRow] = field(default_factory=list)  # the registry's rows: one per array task
    groups: list[list[int]] | None = None  # grouped sweeps: the points each task ran

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for point in self.points:
            counts[point.shown_state] = counts.get(point.shown_state, 0) + 1
        return counts


def load_sweep(settings: Settings, sweep_id: str) -> SweepView:
    """The sweep and its points, with states refreshed and metrics read where results exist."""
    with Registry.open(settings) as registry:
        sweep = registry.sweep(sweep_id)
        result = refresh(registry, registry.query(sweep_id=sweep_id))
    params = sweep["params"]
    values = params.get("points", [])
    points: list[PointRow] = []
    if params.get("tasks"):  # grouped (--per-task, --pack): one row per task, its points from their files
        points = grouped_points(result.rows, params["tasks"], values, Path(sweep["run_dir"]))
    for row in result.rows if not params.get("tasks") else []:
        index = row.sweep_index if row.sweep_index is not None else len(points)
        point = PointRow(
            index=index,
            job_id=row.job_id,
            state=row.state,
            params=values[index] if index < len(values) else {},
            run_dir=row.run_dir,
            elapsed_s=row.elapsed_s,
            reason=row.reason,
            waiting=backends.get(row.backend).waiting(row),
            su=row.su,
            metrics=read_metrics(Path(row.run_dir)),
        )
        points.append(point)
    return SweepView(
        sweep_id=sweep_id,
        job=sweep["job"],
        backend=sweep["backend"],
        array_job_id=sweep.get("array_job_id"),
        sweep_dir=sweep["run_dir"],
        keys=list(params.get("keys", [])),
        log_keys=list(params.get("log_keys", [])),
        random=bool(params.get("random")),
        points=sorted(points, key=lambda p: p.index),
        warning=result.warning,
        tasks=result.rows,
        groups=params.get("tasks"),
    )


def grouped_points(rows: list[JobRow], groups: list[list[int]], values: list[Any], sweep_dir: Path) -> list[PointRow]:
    """The points of a grouped sweep, each with its state from its own files and its task's state:
    done (results.json) is COMPLETED, failed.json FAILED; a started point of a running task RUNNING,
    one not yet started PENDING; a point its task left unfinished takes the task's final state
    (CANCELLED, TIMEOUT, ...). A point's SU is its task's shared evenly by the task's points."""
    from deltajobs.sweep.record import point_dir

    count = sum(len(g) for g in groups)
    tasks = {row.sweep_index: row for row in rows}
    points = []
    for t, group in enumerate(groups):
        task = tasks.get(t)
        for index in group:
            run_dir = point_dir(sweep_dir, index, count)
            state, reason = _point_state(run_dir, task)
            points.append(
                PointRow(
                    index=index,
                    job_id=task.job_id if task else "",
                    state=state,
                    params=values[index] if index < len(values) else {},
                    run_dir=str(run_dir),
                    elapsed_s=point_elapsed(run_dir),
                    reason=reason,
                    su=task.su / len(group) if task and task.su is not None else None,
                    metrics=read_metrics(run_dir),
                )
            )
    return points


def _point_state(run_dir: Path, task: JobRow | None) -> tuple[str, str | None]:
    from deltajobs.sweep.tasks import point_state

    own = point_state(run_dir)
    if own == "done":
        return "COMPLETED", None
    if own == "failed":
        return "FAILED", None
    if task is None:
        return "UNKNOWN", "its task is not in the registry"
    if task.state == "RUNNING":
        return ("RUNNING", None) if own == "started" else ("PENDING", f"after the points before it in {task.job_id}")
    if task.final:
        return ("FAILED" if task.state == "COMPLETED" else task.state), None
    return task.state, task.reason


def point_elapsed(run_dir: Path) -> int | None:
    """Seconds from the point's first start to its results (or to now while it runs)."""
    try:
        starts = json.loads((run_dir / "attempts.json").read_text())["starts"]
        first = float(starts[0]["time"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    results = run_dir / "results.json"
    end = results.stat().st_mtime if results.exists() else time.time()
    return max(0, round(end - first))


def read_metrics(run_dir: Path) -> dict[str, float]:
    """The numbers in run_dir/results.json: top-level ones, then the last epoch's that are not there."""
    try:
        data = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    history = data.get("history") or [{}]
    merged = {**history[-1], **data}
    return {
        k: float(v)
        for k, v in merged.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in NOT_METRICS
    }


def default_metric(points: list[PointRow]) -> str:
    """test_acc (the trainer's), else what a script reported: its first *acc key, else its first
    other number (not the epoch or step)."""
    names: dict[str, None] = {}
    for point in points:
        names.update(dict.fromkeys(point.metrics))
    if not names or "test_acc" in names:
        return "test_acc"
    accuracies = [n for n in names if higher_is_better(n)]
    others = [n for n in names if n not in ("epoch", "step", "elapsed_seconds")]
    return (accuracies or others or list(names))[0]


def higher_is_better(metric: str) -> bool:
    return metric.endswith(HIGHER_IS_BETTER)


def rank(points: list[PointRow], metric: str) -> list[PointRow]:
    """Points with a finite metric, best first; then those whose metric is NaN or infinite (diverged),
    then the others (not finished, failed), each by index."""
    known = [p for p in points if metric in p.metrics]
    if not known and any(p.metrics for p in points):
        names = sorted({name for p in points for name in p.metrics})
        raise SpecError("--metric", f"{metric!r} is not in the results; choose one of: {', '.join(names)}")
    finite = [p for p in known if math.isfinite(p.metrics[metric])]
    sign = -1.0 if higher_is_better(metric) else 1.0
    finite.sort(key=lambda p: (sign * p.metrics[metric], p.index))
    return finite + [p for p in known if p not in finite] + [p for p in points if metric not in p.metrics]


def best_point(points: list[PointRow], metric: str) -> PointRow | None:
    """The best point by a finite value of `metric`, if any point has one."""
    ranked = rank(points, metric)
    top = ranked[0] if ranked else None
    return top if top is not None and math.isfinite(top.metrics.get(metric, math.nan)) else None


def short_key(key: str) -> str:
    """Column names: train.model_args.hidden -> model_args.hidden."""
    return key.removeprefix("train.")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)
