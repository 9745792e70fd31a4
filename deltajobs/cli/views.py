"""Plain-text tables for status and results (no colour codes: pipes and NO_COLOR stay clean)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from deltajobs.charge.advice import Advice
from deltajobs.clusters.units import format_duration
from deltajobs.injob.progress import nodes_text, restarts
from deltajobs.jobs.lifecycle import STATE_ADVICE, attempts_text, reason_words, right_sizing
from deltajobs.jobs.logs import ArrayResults
from deltajobs.jobs.notebook import url_of
from deltajobs.jobs.rerun import origin, rerun_of
from deltajobs.jobs.resume import resume_chain, resume_links
from deltajobs.registry.schema import JobRow
from deltajobs.slurm.parse import AcctRecord


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


STATUS_ROWS = 30  # plain `status` shows every unfinished job and the newest finished ones, this many rows in all


def restart_count(row: JobRow) -> int:
    """How often the job was restarted: recorded in the row once it ended, else from its run directory."""
    return row.restarts if row.final and row.restarts is not None else restarts(Path(row.run_dir))


def newest(rows: list[JobRow], limit: int | None) -> tuple[list[JobRow], int]:
    """Every unfinished row and the newest finished ones, `limit` rows in all (in their order), and how
    many finished rows that leaves out; every row when `limit` is None."""
    if limit is None or len(rows) <= limit:
        return rows, 0
    room = max(0, limit - sum(not r.final for r in rows))
    finished = [i for i, r in enumerate(rows) if r.final]
    dropped = set(finished[: len(finished) - room])
    return [r for i, r in enumerate(rows) if i not in dropped], len(dropped)


def status_dict(
    row: JobRow, detail: bool = False, record: AcctRecord | None = None, blocked: str | None = None
) -> dict[str, Any]:
    """One job of `status --json`: the registry row, the pending reason in words, restarts, advice,
    and for a job that can never start the parent that failed (`blocked_by`)."""
    data = row.to_dict()
    data["reason_words"] = reason_words(row.reason) if row.state == "PENDING" else disk_full_reason(row)
    data["blocked_by"] = blocked
    if blocked:
        data["reason_words"] = never_text(blocked)
    data["restarts"] = restart_count(row)
    data["advice"] = STATE_ADVICE.get(row.state, "")
    data["resumes"], data["resumed_by"] = resume_chain(row)  # `deltajobs resume`: the jobs of one run directory
    data["notebook_url"] = url_of(row)
    if detail:
        data["rerun_of"] = rerun_of(Path(row.run_dir))
        data["right_sizing"] = [a.to_dict() for a in right_sizing(row, record)]
        data["attempts"] = [dataclasses.asdict(a) for a in record.attempts] if record is not None else []
    return data


def never_text(blocked: str) -> str:
    """`parent 12 FAILED: never starts (deltajobs cancel --never-start)`."""
    return f"{blocked}: never starts (`deltajobs cancel --never-start`)"


def status_table(
    rows: list[JobRow],
    detail: bool = False,
    records: dict[str, AcctRecord] | None = None,
    limit: int | None = None,
    blocked: dict[str, str] | None = None,
) -> str:
    """The status table; with `detail`, each finished job's attempts and right-sizing advice below it
    (`records`: sacct's, from `lifecycle.usage`); with `limit`, at most that many rows (`newest`) and
    a line saying how many finished jobs it leaves out."""
    if not rows:
        return "no jobs (submit one with `deltajobs submit mnist`)"
    rows, hidden = newest(rows, limit)
    body, notes = [], []
    for row in rows:
        record = (records or {}).get(row.job_id)
        why = reason_words(row.reason) if row.state == "PENDING" else ""
        why = why or (row.reason or "" if row.state == "PENDING" and row.reason != "None" else disk_full_reason(row))
        if (blocked or {}).get(row.job_id):
            why = never_text((blocked or {})[row.job_id])
        count = restart_count(row)
        gpus = (row.nodes or 1) * (row.gpus_per_node or 0)
        body.append(
            [
                row.job_id,
                row.name,
                row.state + (f" (restarts {count})" if count else ""),
                row.partition or "",
                str(gpus),
                format_duration(row.elapsed_s) if row.elapsed_s is not None else "",
                f"{row.su:.3f}" if row.su is not None else "",
                why,
            ]
        )
        advice = STATE_ADVICE.get(row.state, "")
        if advice and (detail or len(rows) == 1):
            notes.append(f"{row.job_id}: {advice.replace('JOBID', row.job_id)}")
        url = url_of(row)
        if url:
            notes.append(f"{row.job_id}: notebook at {url} (`deltajobs notebook` for the laptop's tunnel)")
        links = resume_links(row) if detail or len(rows) == 1 else ""
        again, description = origin(Path(row.run_dir)) if detail or len(rows) == 1 else (None, "")
        if again:
            notes.append(f"{row.job_id}: rerun of {again} (`deltajobs diff {again} {row.job_id}`)")
        if description:
            notes.append(f"{row.job_id}: {description}")
        if links:
            notes.append(f"{row.job_id}: {links} (the same run directory: `deltajobs resume`)")
        if detail and record is not None and len(record.attempts) > 1:
            notes.append(f"{row.job_id}: charged for {attempts_text(record)} ({record.su:.3f} SU)")
        if detail and row.started_at and nodes_text(Path(row.run_dir)):
            notes.append(f"{row.job_id}: {nodes_text(Path(row.run_dir))}")
        if detail:
            notes += [f"{row.job_id}: {a.message}" for a in right_sizing(row, record)]
    text = table(["JOBID", "NAME", "STATE", "PARTITION", "GPUS", "ELAPSED", "SU", "REASON"], body)
    if hidden:
        text += f"\n({hidden:,} earlier finished job{'s' if hidden != 1 else ''} not shown: `deltajobs status --all`)"
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def disk_full_reason(row: JobRow) -> str:
    """A failed job that stopped on a full disk or quota (exit status 28: sacct's, or the local
    backend's from the note in the run directory): the REASON column's words; "" otherwise. From
    the row alone: status reads no file per finished job."""
    from deltajobs.injob.diskspace import EXIT_DISK_FULL

    if row.state != "FAILED" or (row.exit_code or "").split(":")[0] != str(EXIT_DISK_FULL):
        return ""
    return f"disk full / quota: `deltajobs results {row.job_id}`"


def progress_lines(rows: list[JobRow]) -> str:
    """Under `status --watch` on a terminal: a progress line per running job that has finished an
    epoch (from its run directory), after a blank line; "" when there is none."""
    from deltajobs.injob.progress import bar_text, run_progress

    lines = []
    for row in rows:
        progress = run_progress(Path(row.run_dir)) if row.state == "RUNNING" else None
        if progress is not None:
            lines.append(f"{row.job_id}  {bar_text(progress)}")
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def results_text(row: JobRow, data: dict[str, Any], advice: list[Advice], record: AcctRecord | None = None) -> str:
    if "model" not in data:  # a user's own program: what it ran and what it reported
        return program_results_text(row, data, advice, record)
    lines = [
        heading(row),
        f"  model {data.get('model', '?')}  params {data.get('params', 0):,}  device {data.get('device', '?')}"
        f"  world_size {data.get('world_size', 1)}",
        f"  test_acc {data.get('test_acc', 0):.4f}  test_loss {data.get('test_loss', 0):.4f}"
        f"  epochs {data.get('epochs', '?')}  train {data.get('train_seconds', 0):.1f}s"
        f"  {data.get('samples_per_second', 0):,.0f} samples/s",
    ]
    lines += charge_lines(row, record)
    history = data.get("history") or []
    if history:
        rows = [
            [
                str(h.get("epoch", "")),
                _num(h.get("train_loss")),
                _num(h.get("val_loss")),
                _num(h.get("val_acc")),
                _num(h.get("test_acc")),
                f"{h.get('lr', 0):.2e}",
                f"{h.get('elapsed_seconds', 0):.1f}",
            ]
            for h in history
        ]
        lines += ["", table(["EPOCH", "TRAIN_LOSS", "VAL_LOSS", "VAL_ACC", "TEST_ACC", "LR", "SECONDS"], rows)]
        from deltajobs.watch.plots import sparkline

        lines += ["", f"  train_loss {sparkline([h.get('train_loss') for h in history])}"]
        lines += [f"  test_acc   {sparkline([h.get('test_acc') for h in history])}"]
    if advice:
        lines += ["", "Right-sizing:"] + [f"  - {a.message}" for a in advice]
    return "\n".join(lines)


def heading(row: JobRow) -> str:
    """`job 1240 (mnist) COMPLETED in RUN_DIR`, and `(resumes 1234)` for a run continued by `deltajobs
    resume`: the results shown are the run directory's, its latest job's."""
    links = resume_links(row)
    return f"job {row.job_id} ({row.name}) {row.state} in {Path(row.run_dir)}" + (f" ({links})" if links else "")


METRIC_COLUMNS = 8  # a user's metrics table shows at most this many keys


def charge_lines(row: JobRow, record: AcctRecord | None) -> list[str]:
    """What a finished job was charged (every attempt where it was requeued) and where it ran."""
    lines = []
    if record is not None and len(record.attempts) > 1:
        lines.append(f"  charge {record.su:.3f} SU for {attempts_text(record)}")
    elif row.su is not None:
        lines.append(f"  charge {row.su:.3f} SU")
    ran = nodes_text(Path(row.run_dir))
    return lines + ([f"  {ran}"] if ran else [])


def program_results_text(
    row: JobRow, data: dict[str, Any], advice: list[Advice], record: AcctRecord | None = None
) -> str:
    """Results of a script, command, sbatch file or function: its command, exit, reported metrics."""
    lines = [heading(row)]
    command = data.get("command")
    if command:
        text = " ".join(command) if isinstance(command, list) else str(command)
        took = f", {format_duration(data['elapsed_seconds'])}" if data.get("elapsed_seconds") is not None else ""
        lines.append(f"  ran {text} (exit {data.get('exit_code', '?')}{took})")
    lines += charge_lines(row, record)
    history = [h for h in data.get("history") or [] if isinstance(h, dict)]
    keys = metric_keys(history)
    if not history:
        lines.append("  no metrics reported (deltajobs.report(...) or JSON lines in $DELTAJOBS_METRICS)")
    else:
        last = history[-1]
        shown = "  ".join(f"{k} {_value(last.get(k))}" for k in keys if k in last)
        lines.append(f"  last report ({len(history)} in all): {shown}")
        order = [k for k in ("epoch", "step") if any(k in h for h in history)]
        columns = (order + [k for k in keys if k not in order])[:METRIC_COLUMNS]
        rows = [[_value(h.get(k)) for k in columns] for h in history]
        lines += ["", table([c.upper() for c in columns], rows)]
        from deltajobs.watch.plots import sparkline

        lines.append("")
        for key in [k for k in keys if k not in order][:2]:
            lines.append(f"  {key:<10} {sparkline([h.get(key) for h in history])}")
    if advice:
        lines += ["", "Right-sizing:"] + [f"  - {a.message}" for a in advice]
    return "\n".join(lines)


def array_results_text(found: ArrayResults) -> str:
    """An array job's results: each task's state and charge, their sum, the reports the tasks wrote."""
    rows = found.rows
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    lines = [f"array job {found.array_job_id} ({rows[0].name}): {len(rows)} tasks ({states}) in {rows[0].run_dir}"]
    body = []
    for row in rows:
        su = found.task_su(row)
        elapsed = format_duration(row.elapsed_s) if row.elapsed_s is not None else ""
        body.append([str(row.sweep_index), row.job_id, row.state, elapsed, row.exit_code or "", _su(su)])
    lines += ["", table(["TASK", "JOBID", "STATE", "ELAPSED", "EXIT", "SU"], body), ""]
    lines.append(f"  charge {found.su:.4f} SU for {len(rows)} tasks (each task is charged as a job of its own)")
    history = [h for h in found.data.get("history") or [] if isinstance(h, dict)]
    if history:
        last = history[-1]
        shown = "  ".join(f"{k} {_value(last.get(k))}" for k in metric_keys(history) if k in last)
        lines.append(f"  last report ({len(history)} in all, from every task): {shown}")
    else:
        lines.append("  no metrics reported (deltajobs.report(...) or JSON lines in $DELTAJOBS_METRICS)")
    lines.append(f"  logs: `deltajobs logs {found.array_job_id} --task N`")
    return "\n".join(lines)


def array_results_dict(found: ArrayResults) -> dict[str, Any]:
    tasks = [
        {
            "task": row.sweep_index,
            "job_id": row.job_id,
            "state": row.state,
            "elapsed_s": row.elapsed_s,
            "exit_code": row.exit_code,
            "su": found.task_su(row),
        }
        for row in found.rows
    ]
    return {"job_id": found.array_job_id, "state": found.state, "su": found.su, "tasks": tasks, **found.data}


def _su(su: float | None) -> str:
    return f"{su:.4f}" if su is not None else ""


def metric_keys(history: list[dict[str, Any]]) -> list[str]:
    """The numeric keys of reported metrics, in first-seen order (not the timestamp)."""
    keys: dict[str, None] = {}
    for record in history:
        for key, value in record.items():
            if key != "time" and isinstance(value, int | float) and not isinstance(value, bool):
                keys.setdefault(key)
    return list(keys)


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else ""
