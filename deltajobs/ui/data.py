"""What the dashboard shows, read through the functions the CLI uses (no second way to compute a
state, a charge or a curve): `lifecycle.status` for states, `charge.estimate` for an estimate while a
job runs, `lifecycle.finished_usage`/`right_sizing` for what a finished job used and the advice,
`jobs.logs` for logs and results, `sweep.results.load_sweep` for a sweep's points.

Plain dicts of JSON types, so that the pages and the API share them.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from deltajobs.charge.estimate import estimate_row
from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.injob.progress import nodes_text
from deltajobs.jobs.lifecycle import (
    STATE_ADVICE,
    attempts_text,
    cancel_jobs,
    finished_usage,
    reason_words,
    right_sizing,
    status,
)
from deltajobs.jobs.logs import log_file, results
from deltajobs.registry.schema import JobRow
from deltajobs.spec.settings import Settings

PER_PAGE = 50
FRESH_S = 5.0  # SLURM is asked at most this often for the same view, however many tabs poll
_lock = threading.Lock()
_cache: dict[tuple[str, ...], tuple[float, Any]] = {}


def cached(key: tuple[str, ...], compute: Any) -> Any:
    """`compute()`, or its value from under FRESH_S ago: one squeue/sacct pair serves every poll of
    every open page meanwhile (a run page polls each second; slurmctld is shared)."""
    with _lock:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < FRESH_S:
            return hit[1]
        value = compute()
        _cache[key] = (time.monotonic(), value)
        if len(_cache) > 256:
            _cache.clear()
        return value


def clear_cache() -> None:
    with _lock:
        _cache.clear()


STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
LOG_CHUNK = 256 * 1024  # the most of a log one request returns


def payload_kind(run_dir: Path) -> str:
    """trainer, script, command, sbatch, function or notebook: from the run's spec.yaml (read once
    per version of the file: the runs page asks every 2 s)."""
    path = run_dir / "spec.yaml"
    try:
        return _payload_kind(str(path), path.stat().st_mtime_ns)
    except OSError:
        return "?"


@functools.lru_cache(maxsize=4096)
def _payload_kind(path: str, mtime_ns: int) -> str:
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return "?"
    run = spec.get("run") if isinstance(spec, dict) else None
    if not isinstance(run, dict):
        return "trainer"
    return next((k for k in ("notebook", "script", "command", "sbatch", "function") if run.get(k)), "?")


def gpu_util(run_dir: Path) -> float | None:
    """The mean GPU utilisation results.json recorded (the trainer's and a program's wrapper's)."""
    try:
        gpu = json.loads((run_dir / "results.json").read_text()).get("gpu_util") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return float(gpu["mean_util"]) if gpu.get("samples") and "mean_util" in gpu else None


def elapsed_now(row: JobRow) -> int | None:
    """Seconds it ran: SLURM's figure once recorded, else since it started (a running job)."""
    if row.elapsed_s is not None:
        return row.elapsed_s
    if row.state == "RUNNING" and row.started_at:
        try:
            return max(0, int(time.time() - datetime.fromisoformat(row.started_at).timestamp()))
        except ValueError:
            return None
    return None


def su_of(row: JobRow) -> tuple[float | None, bool]:
    """(SU, estimated): SLURM's charge once recorded; while it runs, the estimate for the time so far."""
    if row.su is not None:
        return row.su, False
    seconds = elapsed_now(row)
    if row.state == "RUNNING" and seconds:
        est = estimate_row(row, seconds)
        return (est.su if est is not None else None), True
    return None, False


def row_dict(row: JobRow, full: bool = True) -> dict[str, Any]:
    """One job as the runs page shows it; `full`: with what is read from its run directory."""
    su, estimated = su_of(row)
    data: dict[str, Any] = {
        "job_id": row.job_id,
        "name": row.name,
        "state": row.state,
        "reason": reason_words(row.reason) if row.state == "PENDING" else "",
        "account": row.account,
        "partition": row.partition,
        "gpus": (row.nodes or 1) * (row.gpus_per_node or 0),
        "elapsed_s": elapsed_now(row),
        "su": round(su, 4) if su is not None else None,
        "su_estimated": estimated,
        "sweep_id": row.sweep_id,
        "submitted_at": row.submitted_at,
        "final": row.final,
    }
    if full:
        run_dir = Path(row.run_dir)
        data["payload"] = payload_kind(run_dir)
        data["gpu_util"] = gpu_util(run_dir)
    return data


def matches(row: JobRow, state: str | None, account: str | None, text: str | None, since: float | None) -> bool:
    if state and (row.state != state if state != "ACTIVE" else row.final):
        return False
    if account and row.account != account:
        return False
    if since is not None and row.submitted_at < since:
        return False
    if text:
        needle = text.lower()
        return any(needle in (v or "").lower() for v in (row.job_id, row.name, row.partition, row.sweep_id))
    return True


def runs(
    settings: Settings,
    *,
    state: str | None = None,
    account: str | None = None,
    text: str | None = None,
    since: float | None = None,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> dict[str, Any]:
    """Every job of the registry, newest first, filtered, one page of it (states fresh: `status`)."""
    view = cached(("all",), lambda: status(settings, None, every=True))
    rows = sorted(
        (r for r in view.rows if matches(r, state, account, text, since)), key=lambda r: r.submitted_at, reverse=True
    )
    pages = max(1, -(-len(rows) // per_page))
    page = min(max(1, page), pages)
    shown = rows[(page - 1) * per_page : page * per_page]
    return {
        "rows": [row_dict(r) for r in shown],
        "total": len(rows),
        "page": page,
        "pages": pages,
        "accounts": sorted({r.account for r in view.rows if r.account}),
        "warning": view.warning,
        "updated": time.time(),
    }


def find_row(settings: Settings, job_id: str) -> JobRow:
    """The job, its state at most FRESH_S old."""
    view = cached(("job", job_id), lambda: status(settings, [job_id]))
    if len(view.rows) != 1:
        raise NotFoundError(f"{job_id} names {len(view.rows)} jobs; open one of them")
    return view.rows[0]


def submitted_script(row: JobRow) -> str:
    """The sbatch script exactly as submitted (submitit's copy, else deltajobs' rendered one)."""
    run_dir = Path(row.run_dir)
    for path in (run_dir / "submitit" / f"{row.job_id.split('_')[0]}_submission.sh", run_dir / "job.sh"):
        try:
            return path.read_text(errors="replace")
        except OSError:
            continue
    return ""


def history(row: JobRow) -> list[dict[str, Any]]:
    """What it reported, epoch by epoch or step by step (`results`: the CLI's reading)."""
    metrics = Path(row.run_dir) / "metrics.jsonl"
    if metrics.exists():
        from deltajobs.payloads.runner import read_metrics

        return read_metrics(metrics)
    try:
        data = results(row)
    except (NotFoundError, DeltaJobsError):
        return []
    found = data.get("history") or data.get("epochs") or []
    return [h for h in found if isinstance(h, dict)]


def run_detail(settings: Settings, job_id: str) -> dict[str, Any]:
    row = find_row(settings, job_id)
    records, warning = finished_usage([row]) if row.final else ({}, None)
    record = records.get(row.job_id)
    try:
        spec = (Path(row.run_dir) / "spec.yaml").read_text()
    except OSError:
        spec = ""
    attempts = [
        {"state": a.state, "start": a.start, "end": a.end, "elapsed_s": a.elapsed_s, "su": round(a.su, 4)}
        for a in (record.attempts if record is not None else [])
    ]
    return {
        **row_dict(row),
        "run_dir": row.run_dir,
        "time_limit": row.time_limit,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "exit_code": row.exit_code,
        "spec": spec,
        "script": submitted_script(row),
        "attempts": attempts,
        "nodes": nodes_text(Path(row.run_dir)),
        "charged": attempts_text(record) if record is not None and len(record.attempts) > 1 else "",
        "advice": [a.message for a in right_sizing(row, record)] if row.final else [],
        "state_advice": STATE_ADVICE.get(row.state, "").replace("JOBID", row.job_id),
        "warning": warning,
        "metric_keys": metric_keys(history(row)),
    }


def metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for item in rows:
        for key, value in item.items():
            if key not in keys and key not in ("epoch", "step", "time") and isinstance(value, int | float):
                if not isinstance(value, bool):
                    keys.append(key)
    return keys


def finite(value: Any) -> float | None:
    """A number JSON can carry: NaN and infinities (a diverged loss) become gaps."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def curves(row: JobRow) -> dict[str, Any]:
    """Every metric it reported as a series against its epoch (or step, or report number)."""
    found = history(row)
    keys = metric_keys(found)
    xs = []
    for index, item in enumerate(found):
        x = item.get("epoch", item.get("step", index + 1))
        xs.append(x if isinstance(x, int | float) and not isinstance(x, bool) else index + 1)
    series = {k: [finite(item.get(k)) for item in found] for k in keys}
    return {"x": xs, "series": series, "x_label": "epoch" if any("epoch" in h for h in found) else "step"}


def log_chunk(row: JobRow, offset: int, err: bool = False, task: int = 0) -> dict[str, Any]:
    """Task `task`'s log (a rank's) from byte `offset` (at most LOG_CHUNK), the next offset, whether
    the job has ended."""
    try:
        path = log_file(row, err=err, task=max(0, task))
    except (DeltaJobsError, OSError):
        return {"text": "", "offset": offset, "final": row.final}
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, offset))
            data = handle.read(LOG_CHUNK)
            end = handle.tell()
    except OSError:
        data, end = b"", offset
    cut = data.rfind(b"\n") + 1 if not row.final else len(data)  # whole lines while it writes
    if cut == 0 and len(data) == LOG_CHUNK:
        cut = len(data)  # a chunk without a newline (a progress bar's \r): sent whole, not never
    text = data[:cut].decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line for line in text.splitlines() if not line.startswith("submitit ")]
    offset = end - (len(data) - cut)
    more = len(data) == LOG_CHUNK  # not at the end yet: ask again at once
    return {"text": "\n".join(lines) + ("\n" if lines else ""), "offset": offset, "final": row.final, "more": more}


_acting = threading.Lock()  # one cancel or resume at a time: two clicks or two tabs never submit twice


def cancel(settings: Settings, job_id: str) -> dict[str, Any]:
    with _acting:
        done = cancel_jobs(settings, [job_id])
        clear_cache()
    return {
        "cancelled": done.cancelled,
        "gone": done.gone,
        "refused": done.refused,
        "states": {r.job_id: r.state for r in done.rows},
    }


def spend(settings: Settings, days: int = 30) -> dict[str, Any]:
    """SU per day per account, the dearest runs and what was wasted, over the last `days` days."""
    since = time.time() - days * 86400
    view = cached(("all",), lambda: status(settings, None, every=True))
    rows = [r for r in view.rows if r.submitted_at >= since]
    per_day: dict[str, dict[str, float]] = {}
    for row in rows:
        su, _ = su_of(row)
        if not su:
            continue
        day = time.strftime("%Y-%m-%d", time.localtime(row.submitted_at))
        account = row.account or "(local)"
        per_day.setdefault(day, {})[account] = per_day.get(day, {}).get(account, 0.0) + su
    dearest = sorted((r for r in rows if su_of(r)[0]), key=lambda r: su_of(r)[0] or 0.0, reverse=True)[:10]
    finished = sorted((r for r in rows if r.final), key=lambda r: r.submitted_at, reverse=True)[:200]  # newest
    records, warning = finished_usage(finished)
    waste = []
    for row in finished:
        for advice in right_sizing(row, records.get(row.job_id)):
            waste.append({"job_id": row.job_id, "name": row.name, "message": advice.message})
    from deltajobs.charge.accounting import accounts

    try:  # `deltajobs accounts`' figures: Delta's `accounts`, else SLURM's limits
        balances = {b.account: b.to_dict() for b in accounts()}
    except (DeltaJobsError, OSError) as err:
        balances, warning = {}, warning or f"no balances: {err}"
    return {
        "period_days": days,
        "balances": balances,
        "days": dict(sorted(per_day.items())),
        "accounts": sorted({a for d in per_day.values() for a in d}),
        "total": round(sum(sum(d.values()) for d in per_day.values()), 4),
        "dearest": [row_dict(r, full=False) for r in dearest],
        "waste": waste[:50],
        "warning": warning or view.warning,
    }


def resume(settings: Settings, job_id: str) -> dict[str, Any]:
    """`deltajobs resume ID`: the same guards (budget, the environment), a new job in the run directory."""
    from deltajobs.jobs.launch import prepare_resume
    from deltajobs.spec.resolve import Overrides

    with _acting:  # resumable() then submit: nothing may resume the run in between
        started = prepare_resume(settings, job_id, Overrides(), restart=False).submit(settings, yes=False)
        clear_cache()
    return {"job_id": started.submission.job_id, "estimate_su": started.estimate_su}


def sweep_detail(settings: Settings, sweep_id: str) -> dict[str, Any]:
    """A sweep's (or search's) points with their parameters and metrics, the best by its metric, and
    every point's curve of that metric (`sweep results`' reading)."""
    from deltajobs.payloads.runner import read_metrics
    from deltajobs.sweep.results import best_point, default_metric, higher_is_better, load_sweep, short_key

    view = load_sweep(settings, sweep_id)
    metric = default_metric(view.points)
    best = best_point(view.points, metric) if metric else None
    metrics = sorted({k for p in view.points for k in p.metrics})
    curves_by_point = {}
    for point in view.points:
        path = Path(point.run_dir) / "metrics.jsonl"
        found = read_metrics(path) if path.exists() else []
        if not found:
            try:
                found = json.loads((Path(point.run_dir) / "results.json").read_text()).get("history") or []
            except (OSError, ValueError, AttributeError):
                found = []
        curves_by_point[point.index] = [finite(h.get(metric)) for h in found if isinstance(h, dict)]
    history, best_so_far, running = [], [], None
    better = higher_is_better(metric) if metric else True
    for point in sorted(view.points, key=lambda p: p.index):
        value = finite(point.metrics.get(metric)) if metric else None
        history.append(value)
        if value is not None and (running is None or (value > running if better else value < running)):
            running = value
        best_so_far.append(running)
    return {
        "sweep_id": view.sweep_id,
        "job": view.job,
        "history": {"x": sorted(p.index for p in view.points), "value": history, "best": best_so_far},
        "keys": view.keys,
        "labels": [short_key(k) for k in view.keys],
        "metric": metric,
        "higher_is_better": higher_is_better(metric) if metric else True,
        "metrics": metrics,
        "best": best.index if best is not None else None,
        "counts": view.counts,
        "points": [
            {
                **p.to_dict(),
                "metrics": {k: finite(v) for k, v in p.metrics.items()},
                "params": {k: p.params.get(k) for k in view.keys},
                "curve": curves_by_point[p.index],
            }
            for p in view.points
        ],
        "warning": view.warning,
    }


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value) if not isinstance(value, str) else value}


def compare(settings: Settings, job_ids: list[str]) -> dict[str, Any]:
    """Two or more runs: their specs side by side (the keys that differ marked) and their curves."""
    if len(job_ids) < 2:
        raise NotFoundError("compare needs two or more job ids: /compare?ids=ID,ID")
    rows = [find_row(settings, job_id) for job_id in job_ids]
    specs = []
    for row in rows:
        try:
            specs.append(flatten(yaml.safe_load((Path(row.run_dir) / "spec.yaml").read_text()) or {}))
        except (OSError, yaml.YAMLError):
            specs.append({})
    keys = sorted({k for spec in specs for k in spec if not k.endswith("workdir")})
    table = [
        {"key": k, "values": [spec.get(k, "") for spec in specs], "differs": len({spec.get(k) for spec in specs}) > 1}
        for k in keys
    ]
    return {
        "runs": [row_dict(r, full=False) for r in rows],
        "table": table,
        "curves": {r.job_id: curves(r) for r in rows},
    }


def sweeps(settings: Settings) -> list[dict[str, Any]]:
    """Every sweep and search, newest first, with its points' states counted (registry rows, fresh
    within FRESH_S: no sweep directory is read)."""
    from deltajobs.registry.store import Registry

    with Registry.open(settings) as registry:
        found = registry.sweeps()
    view = cached(("all",), lambda: status(settings, None, every=True))
    states: dict[str, dict[str, int]] = {}
    for row in view.rows:
        if row.sweep_id:
            counts = states.setdefault(row.sweep_id, {})
            counts[row.state] = counts.get(row.state, 0) + 1
    return [
        {
            "sweep_id": s["sweep_id"],
            "job": s["job"],
            "backend": s["backend"],
            "created_at": s["created_at"],
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(s["created_at"])),
            "search": bool((s.get("params") or {}).get("search")),
            "states": states.get(s["sweep_id"], {}),
        }
        for s in found
    ]
