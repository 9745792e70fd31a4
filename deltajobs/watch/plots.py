"""Training curves: a PNG with matplotlib (the optional `plot` extra), a sparkline without it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from deltajobs.errors import DeltaJobsError

_BARS = "▁▂▃▄▅▆▇█"


_NOT_FINITE = "×"  # a NaN or infinite value: a diverged run, a normal outcome of a bad learning rate


def sparkline(values: list[Any]) -> str:
    """`█▅▃▂▁  1 -> 0.2`; NaN and infinite values show as × and do not move the scale."""
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    finite = [v for v in numbers if math.isfinite(v)]
    if not numbers:
        return ""
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    span = (high - low) or 1.0
    bars = "".join(
        _BARS[int((v - low) / span * (len(_BARS) - 1))] if math.isfinite(v) else _NOT_FINITE for v in numbers
    )
    return f"{bars}  {numbers[0]:.4g} -> {numbers[-1]:.4g}"


def plot_curves(results: dict[str, Any], path: Path, title: str = "") -> Path:
    """Loss (train/val) and accuracy (val/test) per epoch, side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DeltaJobsError("--plot needs matplotlib: pip install 'deltajobs[plot]'") from None
    history = results.get("history") or []
    if not history:
        raise DeltaJobsError("the results have no per-epoch history to plot")
    if "model" not in results:  # a user's program: whatever it reported
        return plot_reports(plt, history, path, title)
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        series = [h.get(key) for h in history]
        if any(v is not None for v in series):
            loss_ax.plot(epochs, series, marker="o", label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    for key, label in (("val_acc", "validation"), ("test_acc", "test")):
        series = [h.get(key) for h in history]
        if any(v is not None for v in series):
            acc_ax.plot(epochs, [100 * v if v is not None else None for v in series], marker="o", label=label)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    acc_ax.legend()
    acc_ax.grid(alpha=0.3)
    fig.suptitle(title or results.get("model", ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reports(plt: Any, history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """A user program's reports: losses on the left, every other number on the right, against the
    record's epoch (else step, else position)."""
    steps = [h.get("epoch", h.get("step", i + 1)) for i, h in enumerate(history)]
    axis = "epoch" if "epoch" in history[0] else "step" if "step" in history[0] else "report"
    keys: dict[str, None] = {}
    for record in history:
        for key, value in record.items():
            if key not in ("epoch", "step", "time") and isinstance(value, int | float) and not isinstance(value, bool):
                keys.setdefault(key)
    if not keys:
        raise DeltaJobsError("the reports hold no numbers to plot")
    fig, (loss_ax, other_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key in keys:
        ax = loss_ax if "loss" in key else other_ax
        ax.plot(steps, [h.get(key) for h in history], marker="o", label=key)
    for ax, name in ((loss_ax, "Losses"), (other_ax, "Other metrics")):
        ax.set(xlabel=axis, title=name)
        if ax.lines:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
