"""A sweep's metric against each swept parameter (matplotlib, the optional `plot` extra).

One column per swept key. Grid sweeps draw one line per combination of the other keys; random
sweeps draw points. The x-axis is logarithmic for `--range ...:log` keys and for grid values that
are all positive and span a decade or more (widths 2..1024, learning rates 1e-3..1e-1). Below the
chosen metric come the results table's others (test_acc, test_loss, last-epoch train_loss) where
the results have them: generalisation next to fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltajobs.errors import DeltaJobsError
from deltajobs.sweep.results import (
    TABLE_METRICS,
    PointRow,
    SweepView,
    best_point,
    format_value,
    higher_is_better,
    short_key,
)

MAX_LINES = 8  # more combinations of the other keys than this: scatter instead of lines


def numeric(value: Any) -> float | None:
    """A number to plot against: the value itself, or the one number of a one-element list ([64])."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def log_axis(view: SweepView, key: str, xs: list[float]) -> bool:
    positive = [x for x in xs if x > 0]
    return key in view.log_keys or (len(positive) == len(xs) >= 2 and max(xs) / min(xs) >= 10)


def plot_sweep(view: SweepView, metric: str, path: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DeltaJobsError("--plot needs matplotlib: pip install 'deltajobs[plot]'") from None
    done = [p for p in view.points if metric in p.metrics]
    if not done:
        raise DeltaJobsError(f"no point of {view.sweep_id} has {metric} yet; nothing to plot")
    best = best_point(done, metric)
    others = [m for m in TABLE_METRICS if m != metric and any(m in p.metrics for p in done)]
    metrics = [metric, *others]
    keys = view.keys or ["index"]
    size = (max(7.0, 5.0 * len(keys)), 2.8 * len(metrics))
    fig, axes = plt.subplots(len(metrics), len(keys), figsize=size, squeeze=False, layout="constrained")
    for col, key in enumerate(keys):
        for row, name in enumerate(metrics):
            ax = axes[row][col]
            _draw(ax, view, done, key, name, best if name == metric else None)
            ax.set_ylabel(name + (" (last epoch)" if name == "train_loss" else ""))
            ax.grid(alpha=0.3, which="both")
        axes[-1][col].set_xlabel(short_key(key))
    direction = "higher" if higher_is_better(metric) else "lower"
    which = f"best point {best.index}" if best else "no finite value"
    fig.suptitle(f"sweep {view.sweep_id} of {view.job}: {which} by {metric} ({direction} is better)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw(ax: Any, view: SweepView, points: list[PointRow], key: str, metric: str, best: PointRow | None) -> None:
    others = [k for k in view.keys if k != key]
    groups: dict[str, list[PointRow]] = {}
    for point in points:
        if metric in point.metrics:
            label = ", ".join(f"{short_key(k)}={format_value(point.params.get(k))}" for k in others)
            groups.setdefault(label, []).append(point)
    values = [point.params.get(key, point.index) for point in points]
    xs_all = [numeric(v) for v in values]
    categorical = any(x is None for x in xs_all)
    ticks = list(dict.fromkeys(format_value(v) for v in values))  # categories in order of appearance

    def x_of(point: PointRow) -> float:
        value = point.params.get(key, point.index)
        return float(ticks.index(format_value(value))) if categorical else float(numeric(value) or 0.0)

    scatter = view.random or len(groups) > MAX_LINES
    for label, members in groups.items():
        members.sort(key=x_of)
        xs, ys = [x_of(p) for p in members], [p.metrics[metric] for p in members]
        if scatter:
            ax.scatter(xs, ys, s=18, alpha=0.8, color="tab:blue")
        else:
            ax.plot(xs, ys, marker="o", label=label or None)
    if best is not None:
        ax.scatter([x_of(best)], [best.metrics[metric]], marker="*", s=220, color="gold", edgecolor="black", zorder=5)
    if categorical:
        ax.set_xticks(range(len(ticks)), ticks, rotation=30)
    elif log_axis(view, key, [x for x in xs_all if x is not None]):
        ax.set_xscale("log")
    if not scatter and len(groups) > 1:
        ax.legend(fontsize=8)
