"""Advice after a sweep (`sweep results`): what grouping points per array task would have saved
under the profile's minimum charge (`--per-task`), and GPUs left mostly idle by the points (`--pack`).
Priced with the estimate's own rules (`charge.advice.per_task_advice`), from what each point took."""

from __future__ import annotations

import json
from pathlib import Path

from deltajobs import backends
from deltajobs.charge.advice import Advice, pack_advice, per_task_advice
from deltajobs.charge.estimate import Estimate, Request, estimate
from deltajobs.clusters.profile import load_profile
from deltajobs.errors import DeltaJobsError
from deltajobs.registry.schema import JobRow
from deltajobs.slurm.parse import parse_size_mb
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
    est = _estimate(view.tasks[0], sum(by_index.values()))
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


def _estimate(row: JobRow, seconds: float) -> Estimate | None:
    """The charge rules of the sweep's tasks, from what the registry recorded of their request."""
    try:
        profile = load_profile(row.cluster)
        partition = profile.partition((row.partition or profile.default_partition).split(",")[0])
    except DeltaJobsError:
        return None
    request = Request(
        nodes=row.nodes or 1,
        gpus_per_node=row.gpus_per_node or 0,
        cpus_per_node=(row.ntasks_per_node or 1) * (row.cpus_per_task or 1),
        mem_mb_per_node=(parse_size_mb(row.mem) or 0.0) if row.mem else 0.0,
        seconds=max(seconds, 1.0),  # long enough for any grouping of the points priced against it
    )
    try:
        return estimate(request, partition)
    except DeltaJobsError:
        return None


def _gpu_util(run_dir: Path) -> float | None:
    try:
        gpu = json.loads((run_dir / "results.json").read_text()).get("gpu_util") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return float(gpu["mean_util"]) if gpu.get("samples") and "mean_util" in gpu else None
