"""Advice after a sweep (`sweep results`): what grouping points per array task would have saved
under the profile's minimum charge (`--per-task`), and GPUs left mostly idle by the points (`--pack`).
Priced with the estimate's own rules (`charge.advice.per_task_advice`), from what each point took."""

from __future__ import annotations

import json
from pathlib import Path

from deltajobs import backends
from deltajobs.charge.advice import Advice, pack_advice, per_task_advice
from deltajobs.charge.estimate import estimate_row
from deltajobs.sweep.results import SweepView


def sweep_advice(view: SweepView) -> list[Advice]:
    """Advice for a sweep whose points finished (none while any runs, or without a charge model)."""
    done = [p for p in view.points if p.state == "COMPLETED" and p.elapsed_s]
    if not done or len(done) < len(view.points) or not view.tasks or not backends.get(view.backend).charges:
        return []
    advice = []
    by_index = {p.index: float(p.elapsed_s or 0) for p in done}
    groups = view.groups or [[p.index] for p in view.points]
    tasks = [[by_index[i] for i in group if i in by_index] for group in groups]
    est = estimate_row(view.tasks[0], sum(by_index.values()))
    if est is not None:
        known = [t.su for t in view.tasks]
        accounted = sum(s for s in known if s is not None) if all(s is not None for s in known) else None
        grouping = per_task_advice(est, [t for t in tasks if t], accounted)
        if grouping is not None:
            advice.append(grouping)
    packing = pack_advice([u for p in done if (u := _gpu_util(Path(p.run_dir))) is not None])
    if packing is not None:
        advice.append(packing)
    return advice


def _gpu_util(run_dir: Path) -> float | None:
    try:
        gpu = json.loads((run_dir / "results.json").read_text()).get("gpu_util") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return float(gpu["mean_util"]) if gpu.get("samples") and "mean_util" in gpu else None
