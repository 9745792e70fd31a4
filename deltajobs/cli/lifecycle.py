"""Commands of the job lifecycle: submit, status, logs, cancel, results."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import typer

from deltajobs.cli.app import (
    AccountOpt,
    ClusterOpt,
    CpusOpt,
    GpusOpt,
    JsonOpt,
    MemOpt,
    NodesOpt,
    PartitionOpt,
    SetOpt,
    TimeOpt,
    app,
    emit_json,
    note,
)
from deltajobs.cli.jobs import overrides
from deltajobs.errors import DeltaJobsError


def choose_backend(local: bool, settings: Any) -> str:
    if local:
        return "local"
    if shutil.which("sbatch"):
        return "slurm"
    marker = settings.home_path / ".noted-local-backend"
    if not marker.exists():
        note("no sbatch on PATH: running on this machine with the local backend (--local)")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return "local"


@app.command()
def submit(
    job: str = typer.Argument(..., help="A job name from jobs/ (e.g. mnist) or a path to a YAML spec."),
    sets: list[str] = SetOpt,
    account: str = AccountOpt,
    partition: str = PartitionOpt,
    nodes: int = NodesOpt,
    gpus: int = GpusOpt,
    cpus: int = CpusOpt,
    mem: str = MemOpt,
    time_: str = TimeOpt,
    cluster: str = ClusterOpt,
    local: bool = typer.Option(False, "--local", help="Run on this machine (submitit's local executor)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the script; submit nothing."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job to its end."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Submit even if the estimate exceeds balance or cap."),
    as_json: bool = JsonOpt,
) -> None:
    """Validate, render and submit a job; prints its id, run directory and log."""
    from deltajobs.config import load_settings
    from deltajobs.context import active_cluster, new_run_dir
    from deltajobs.render import render
    from deltajobs.spec import resolve_job

    settings = load_settings()
    backend = choose_backend(local, settings)
    resolved = resolve_job(
        job,
        overrides(sets, account, partition, nodes, gpus, cpus, mem, time_),
        settings,
        active_cluster(settings, cluster),
        require_account=backend == "slurm",
    )
    run_dir = new_run_dir(settings, resolved.spec.name)
    if dry_run:
        typer.echo(render(resolved, run_dir), nl=False)
        return
    estimate = guard_budget(resolved, settings, yes) if backend == "slurm" else None
    from deltajobs.submit import submit_job

    sub = submit_job(resolved, settings, run_dir, backend)
    info = {**sub.to_dict(), "estimate_su": round(estimate, 4) if estimate is not None else None}
    if as_json and not wait:
        emit_json(info)
        return
    if not as_json:
        typer.echo(f"submitted {sub.job_id} ({sub.backend})")
        typer.echo(f"  run dir: {sub.run_dir}")
        typer.echo(f"  log:     {sub.log_path}")
        if estimate is not None:
            res = resolved.spec.resources
            typer.echo(f"  charge:  at most {estimate:.2f} SU ({res.time} on {resolved.partition.name})")
    if wait:
        state = follow(sub.job_id, quiet=as_json)
        if as_json:
            emit_json({**info, "state": state})
        raise typer.Exit(0 if state == "COMPLETED" else 1)


def guard_budget(resolved: Any, settings: Any, yes: bool) -> float:
    """The worst-case SU; refuse when it exceeds the balance or the per-job cap, unless --yes."""
    from deltajobs.charge import balance, estimate_job
    from deltajobs.errors import BudgetError

    estimate = estimate_job(resolved)
    if yes:
        return estimate.su
    cap = settings.max_su_per_job
    if cap is not None and estimate.su > cap:
        raise BudgetError(
            f"the estimate {estimate.su:.2f} SU exceeds max_su_per_job {cap:g}; pass --yes to submit anyway"
        )
    left = balance(resolved.spec.account)
    if left is not None and estimate.su > left:
        raise BudgetError(
            f"the estimate {estimate.su:.2f} SU exceeds the balance of {resolved.spec.account} ({left:g} SU); "
            "pass --yes to submit anyway"
        )
    return estimate.su


def follow(job_id: str, quiet: bool = False, interval: float = 2.0) -> str:
    """Poll one job until it is final, printing state changes and every new line of its log."""
    from deltajobs.config import load_settings
    from deltajobs.lifecycle import LogTail, log_file, reason_words, refresh
    from deltajobs.registry import Registry

    registry = Registry.open(load_settings())
    seen_state = ""
    try:
        row = registry.get(job_id)
        tail = LogTail(log_file(row))
        while True:
            result = refresh(registry, [row])
            if result.warning and not quiet:
                note(result.warning)
            if row.state != seen_state and not quiet:
                words = reason_words(row.reason) if row.state == "PENDING" else ""
                typer.echo(f"[{time.strftime('%H:%M:%S')}] {job_id} {row.state}{': ' + words if words else ''}")
                seen_state = row.state
            for line in tail.new_lines(final=row.final):
                if not quiet:
                    typer.echo(f"    {line}")
            if row.final:
                return row.state
            time.sleep(interval)
    finally:
        registry.close()


@app.command()
def status(
    job_ids: list[str] = typer.Argument(None, help="Job ids (default: active and recent jobs)."),
    all_: bool = typer.Option(False, "--all", "-a", help="Every job in the registry."),
    detail: bool = typer.Option(False, "--detail", "-d", help="Right-sizing advice for finished jobs."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh every few seconds until all are final."),
    interval: float = typer.Option(5.0, "--interval", help="Seconds between refreshes with --watch."),
    as_json: bool = JsonOpt,
) -> None:
    """Live state of your jobs: one squeue and one sacct call for all that are not final."""
    from deltajobs.cli.tables import status_table
    from deltajobs.config import load_settings
    from deltajobs.lifecycle import refresh
    from deltajobs.registry import Registry

    registry = Registry.open(load_settings())
    try:
        while True:
            if job_ids:
                rows = registry.find(job_ids)
            else:
                rows = registry.query(recent_since=None if all_ else time.time() - 7 * 86400)
            result = refresh(registry, rows)
            records, warning = finished_usage(result.rows) if detail else ({}, None)
            warning = result.warning or warning
            if watch and not as_json and sys.stdout.isatty():
                typer.echo("\033[2J\033[H", nl=False)
            if as_json:
                emit_json([status_dict(r, detail, records.get(r.job_id)) for r in result.rows])
            else:
                typer.echo(status_table(result.rows, detail, records))
            if warning:
                note(warning)
                raise typer.Exit(3)
            if not watch or all(r.final for r in result.rows):
                return
            time.sleep(interval)
    finally:
        registry.close()


def finished_usage(rows: list[Any]) -> tuple[dict[str, Any], str | None]:
    """sacct's records of the finished SLURM jobs (one call), or a warning if SLURM does not answer."""
    from deltajobs.errors import SlurmError
    from deltajobs.lifecycle import usage

    try:
        return usage(rows), None
    except SlurmError as err:
        return {}, f"SLURM is not answering ({err}); no usage or advice for finished jobs"


def status_dict(row: Any, detail: bool = False, record: Any = None) -> dict[str, Any]:
    from deltajobs.job import restarts
    from deltajobs.lifecycle import STATE_ADVICE, reason_words, right_sizing

    data = row.to_dict()
    data["reason_words"] = reason_words(row.reason) if row.state == "PENDING" else ""
    data["restarts"] = restarts(Path(row.run_dir))
    data["advice"] = STATE_ADVICE.get(row.state, "")
    if detail:
        data["right_sizing"] = [a.to_dict() for a in right_sizing(row, record)]
        data["attempts"] = [dataclasses.asdict(a) for a in record.attempts] if record is not None else []
    return data


@app.command()
def logs(
    job_id: str = typer.Argument(..., help="Job id."),
    err: bool = typer.Option(False, "--err", help="Show stderr (tracebacks) instead of stdout."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing as the log grows, until the job ends."),
    task: int = typer.Option(0, "--task", help="Task (rank) whose log to show."),
    lines: int = typer.Option(0, "--tail", "-n", help="Only the last N lines (0: all)."),
) -> None:
    """Print a job's log (stdout of rank 0 by default)."""
    from deltajobs.config import load_settings
    from deltajobs.lifecycle import log_file, refresh
    from deltajobs.registry import Registry

    registry = Registry.open(load_settings())
    try:
        row = registry.get(job_id)
        path = log_file(row, err=err, task=task)
        position = 0
        while True:
            if path.exists():
                with path.open("rb") as f:
                    f.seek(position)
                    chunk = f.read()
                    position = f.tell()
                text = chunk.decode(errors="replace")
                if lines and not follow_:
                    text = "\n".join(text.splitlines()[-lines:]) + "\n"
                sys.stdout.write(text)
                sys.stdout.flush()
            elif not follow_:
                refresh(registry, [row])
                raise DeltaJobsError(f"job {job_id} is {row.state} and has no log yet ({path})")
            if not follow_:
                return
            refresh(registry, [row])
            if row.final and path.exists() and path.stat().st_size == position:
                return
            time.sleep(1.0)
    finally:
        registry.close()


@app.command()
def cancel(
    job_ids: list[str] = typer.Argument(None, help="Job ids to cancel."),
    all_: bool = typer.Option(False, "--all", help="Cancel every job that is not final."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --all."),
    as_json: bool = JsonOpt,
) -> None:
    """Cancel jobs (one scancel for all of them)."""
    from deltajobs.config import load_settings
    from deltajobs.lifecycle import cancel as cancel_rows
    from deltajobs.registry import Registry

    if not job_ids and not all_:
        raise DeltaJobsError("name the job ids to cancel, or pass --all")
    registry = Registry.open(load_settings())
    try:
        if all_:
            rows = [r for r in registry.query(recent_since=0) if not r.final]
            if not rows:
                emit_json([]) if as_json else typer.echo("no active jobs")
                return
            if not yes and not typer.confirm(f"cancel {len(rows)} job(s): {', '.join(r.job_id for r in rows)}?"):
                raise typer.Exit(1)
        else:
            rows = registry.find(job_ids)
        done = cancel_rows(registry, rows)
        if as_json:
            emit_json([{"job_id": r.job_id, "cancelled": r.job_id in done, "state": r.state} for r in rows])
            return
        for row in rows:
            typer.echo(f"{row.job_id}: {'cancelled' if row.job_id in done else 'already ' + row.state}")
    finally:
        registry.close()


@app.command()
def results(
    job_id: str = typer.Argument(..., help="Job id."),
    as_json: bool = JsonOpt,
    plot: Path = typer.Option(None, "--plot", help="Write loss/accuracy curves to this PNG (needs matplotlib)."),
) -> None:
    """The trainer's results: test accuracy, timings and a per-epoch table."""
    from deltajobs.cli.tables import results_text
    from deltajobs.config import load_settings
    from deltajobs.lifecycle import refresh, right_sizing
    from deltajobs.lifecycle import results as read_results
    from deltajobs.registry import Registry

    registry = Registry.open(load_settings())
    try:
        row = registry.get(job_id)
        refresh(registry, [row])
        data = read_results(row)
    finally:
        registry.close()
    records, warning = finished_usage([row])
    record = records.get(row.job_id)
    advice = right_sizing(row, record)
    if warning:
        note(warning)
    if plot is not None:
        from deltajobs.plots import plot_curves

        plot_curves(data, plot, title=f"{row.name} ({row.job_id})")
    if as_json:
        emit_json(
            {
                "job_id": row.job_id,
                "state": row.state,
                "su": record.su if record is not None else row.su,
                **data,
                "attempts": [dataclasses.asdict(a) for a in record.attempts] if record is not None else [],
                "right_sizing": [a.to_dict() for a in advice],
            }
        )
        return
    typer.echo(results_text(row, data, advice, record))
    if plot is not None:
        typer.echo(f"wrote {plot}")
