"""Commands of a job's life: submit, status, logs, cancel, results."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import (
    JobFlags,
    JobIdArg,
    JsonOpt,
    LocalOpt,
    PayloadArg,
    PlotOpt,
    ScriptArgs,
    YesOpt,
    chosen_backend,
    job_flags,
)
from deltajobs.errors import DeltaJobsError

if TYPE_CHECKING:
    from deltajobs.jobs.lifecycle import Cancellation
    from deltajobs.registry.schema import JobRow


@app.command("submit")
@job_flags
def submit_command(
    job: PayloadArg = None,
    script_args: ScriptArgs = None,
    *,
    flags: JobFlags,
    local: LocalOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the script; submit nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job to its end.")] = False,
    after_sweep: Annotated[
        str | None,
        typer.Option(
            "--after-sweep",
            help="Wait for this sweep to end, then train its best point (--best) or its N best (--top N): "
            "their values as --set before yours.",
            metavar="SWEEP_ID",
        ),
    ] = None,
    best: Annotated[
        bool, typer.Option("--best", help="With --after-sweep: the sweep's best point (the default).")
    ] = False,
    top: Annotated[
        int | None, typer.Option("--top", help="With --after-sweep: the N best points, one job each.", metavar="N")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="With --after-sweep: rank by this result (default: the sweep's own metric)."),
    ] = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job: a spec, a script, an sbatch script or a command.

    Validate, render and submit a job: a spec, a script (`submit train.py -- --lr 1e-3`), an sbatch
    script (`submit train.sh`) or a command (`--command '...'`); prints its id, run directory and log.
    `--after-sweep SW --best -- --epochs 50` waits for sweep SW to end and trains its best point."""
    from deltajobs.jobs.launch import start_job
    from deltajobs.spec.context import new_run_dir
    from deltajobs.spec.render import render
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.best import after_sweep_request, best_jobs

    request = after_sweep_request(after_sweep, best, top, metric)  # refused before anything is read
    settings = load_settings()
    backend = chosen_backend(local, settings)
    resolved = flags.resolve(job, settings, args=script_args, require_account=backend.needs_account)
    chosen = None
    if request is not None:
        from deltajobs.spec.resolve import ResolvedJob

        def with_sets(sets: list[str]) -> ResolvedJob:
            again = dataclasses.replace(flags, sets=sets)
            return again.resolve(job, settings, args=script_args, require_account=backend.needs_account)

        try:
            say = (lambda _: None) if as_json else note
            chosen = best_jobs(settings, request, resolved, flags.sets or [], with_sets, say, wait=not dry_run)
        except KeyboardInterrupt:
            note("interrupted: nothing submitted")
            raise typer.Exit(130) from None
        if not as_json:
            for line in chosen.notes:
                note(line)
            if not chosen.ended:
                note(f"sweep {request.sweep_id} has not ended: chosen among the points that have (--dry-run waits not)")
    jobs = [(one.resolved, one) for one in chosen.jobs] if chosen is not None else [(resolved, None)]
    told: list[str] = []
    infos: list[dict[str, object]] = []
    for resolved, point in jobs:
        run_dir = new_run_dir(settings, resolved.spec.name)
        warnings = resolved.payload.warnings()  # on stderr before anything is submitted, --json too
        for line in warnings:
            if line not in told:
                note(f"warning: {line}")
                told.append(line)
        if dry_run:
            if point is not None:
                note(point.headline)
            typer.echo(render(resolved, run_dir), nl=False)
            continue
        started = start_job(resolved, settings, run_dir, backend, yes)
        sub, estimate = started.submission, started.estimate_su
        array, defaults = resolved.payload.array(), resolved.payload.defaults()
        info = {**sub.to_dict(), "estimate_su": round(estimate, 4) if estimate is not None else None}
        if array is not None:
            info["array"] = {"indices": array.text, "tasks": array.tasks, "concurrency": array.concurrency}
        if defaults:
            info["defaults"] = defaults
        if warnings:
            info["warnings"] = warnings
        if point is not None and chosen is not None:
            info.update(point.to_dict(chosen.choice.metric))
        infos.append(info)
        if as_json:
            continue
        if point is not None:
            typer.echo(point.headline)
        tasks = f": an array job of {array.tasks} tasks (--array={array.text})" if array is not None else ""
        typer.echo(f"submitted {sub.job_id} ({sub.backend}){tasks}")
        typer.echo(f"  run dir: {sub.run_dir}")
        typer.echo(f"  log:     {sub.log_path}" + (" (%a: the task id)" if array is not None else ""))
        if estimate is not None:
            res = resolved.spec.resources
            where = f"{res.time} on {resolved.partition.name}"
            if array is not None:
                from deltajobs.charge.estimate import estimate_job
                from deltajobs.charge.sbatch_price import ArrayPrice

                where = f"{where}; {ArrayPrice(array, estimate_job(resolved)).describe()}"
            typer.echo(f"  charge:  at most {estimate:.2f} SU ({where})")
        if defaults and estimate is not None:
            title = resolved.profile.title or resolved.profile.name
            typer.echo(f"  defaults: {title}'s, where the script says nothing: {', '.join(defaults)}")
    if dry_run:
        return
    if wait:
        for info in infos:
            info["state"] = follow(str(info["job_id"]), quiet=as_json)
    if as_json:
        if chosen is None:
            emit_json(infos[0])
        else:
            emit_json({**chosen.to_dict(), "jobs": infos})
    if wait:
        raise typer.Exit(0 if all(info["state"] == "COMPLETED" for info in infos) else 1)


def follow_to_end(job_id: str, info: dict[str, Any], as_json: bool) -> None:
    """`--wait`: follow the job to its end (the submit's `info` with its final state, with --json);
    exit 0 if it COMPLETED, else 1."""
    state = follow(job_id, quiet=as_json)
    if as_json:
        emit_json({**info, "state": state})
    raise typer.Exit(0 if state == "COMPLETED" else 1)


def follow(job_id: str, quiet: bool = False, interval: float = 2.0) -> str:
    """Print a job's state changes and every new log line until it is final; returns its final state.

    On a terminal a progress line (epoch x/N, time left, last metrics) stays below the log lines.
    """
    from deltajobs.injob.progress import LiveLine, bar_text, parse_epoch_line
    from deltajobs.jobs.logs import follow as events
    from deltajobs.spec.settings import load_settings

    live = LiveLine(_terminal_write) if sys.stdout.isatty() and not quiet else None
    try:
        for event in events(load_settings(), job_id, interval):
            if event.kind == "end":
                return event.text
            if quiet:
                continue
            if event.kind == "warning":
                note(event.text)
                continue
            stamp = f"[{time.strftime('%H:%M:%S')}] {job_id} "
            line = stamp + event.text if event.kind == "state" else f"    {event.text}"
            if live is None:
                typer.echo(line)
                continue
            live.print(line)
            progress = parse_epoch_line(event.text) if event.kind == "line" else None
            if progress is not None:
                live.show(bar_text(progress))
    finally:
        if live is not None:
            live.clear()
    raise DeltaJobsError(f"internal: following {job_id} ended without its final state")


def _terminal_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("status")
def status_command(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids (default: active and recent jobs).")] = None,
    every: Annotated[bool, typer.Option("--all", "-a", help="Every job in the registry.")] = False,
    detail: Annotated[bool, typer.Option("--detail", "-d", help="Right-sizing advice for finished jobs.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh every few seconds until all are final.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes with --watch.")] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """The live state of your jobs, active and recent.

    Live state of your jobs: one squeue and one sacct call for all that are not final. Without ids or
    --all: every unfinished job and the newest finished ones of the last 7 days, 30 rows at most."""
    from deltajobs.cli.views import STATUS_ROWS, progress_lines, status_dict, status_table
    from deltajobs.jobs.lifecycle import status
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    while True:
        view = status(settings, job_ids, every, detail)
        if watch and not as_json and sys.stdout.isatty():
            typer.echo("\033[2J\033[H", nl=False)
        if as_json:
            emit_json(
                [status_dict(r, detail, view.records.get(r.job_id), view.blocked.get(r.job_id)) for r in view.rows]
            )
        else:
            limit = None if every or job_ids else STATUS_ROWS  # the rest: one line naming --all
            typer.echo(status_table(view.rows, detail, view.records, limit, view.blocked))
            if watch and sys.stdout.isatty():
                typer.echo(progress_lines(view.rows), nl=False)
        for line in view.notes:
            note(f"warning: {line}")
        if view.warning:
            note(view.warning)
            raise typer.Exit(3)
        if not watch or all(r.final for r in view.rows):
            return
        time.sleep(interval)


@app.command("logs")
def logs_command(
    job_id: Annotated[str, typer.Argument(help="Job id, `last`, sweep id, or a sweep's array job id.")],
    err: Annotated[bool, typer.Option("--err", help="Show stderr (tracebacks) instead of stdout.")] = False,
    keep_following: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as the log grows, until the job ends.")
    ] = False,
    rank: Annotated[int | None, typer.Option("--rank", help="Only this rank's log (default: every rank).")] = None,
    task: Annotated[
        int | None, typer.Option("--task", help="Only this array task of a sweep (of a single job: its rank).")
    ] = None,
    lines: Annotated[int, typer.Option("--tail", "-n", help="Only the last N lines (0: all).")] = 0,
) -> None:
    """Print a job's or a sweep's log, every rank and task merged.

    Print a job's log; with several ranks, or for a sweep (SWEEP_ID or its array job id), every
    rank's and task's lines, each labelled like `srun --label` ("0: ...") and merged as they arrive."""
    from deltajobs.jobs.logmerge import job_logs
    from deltajobs.spec.settings import load_settings

    logs = job_logs(load_settings(), job_id, err=err, rank=rank, task=task, follow=keep_following)
    if lines and not keep_following:
        logs = iter(["\n".join("".join(logs).splitlines()[-lines:]) + "\n"])
    for text in logs:
        sys.stdout.write(text)
        sys.stdout.flush()


@app.command("cancel")
def cancel_command(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids to cancel.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Cancel every job that is not final.")] = False,
    never_start: Annotated[
        bool, typer.Option("--never-start", help="Cancel every job waiting for a parent that failed.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --all.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Cancel jobs (one scancel for all of them)."""
    from deltajobs.jobs.lifecycle import active_jobs, cancel_jobs, cancel_never_starting
    from deltajobs.spec.settings import load_settings

    if sum([bool(job_ids), every, never_start]) > 1:
        raise DeltaJobsError("name job ids, or pass --all, or --never-start: one of them")
    if not job_ids and not every and not never_start:
        raise DeltaJobsError("name the job ids to cancel, or pass --all or --never-start")
    settings = load_settings()
    if never_start:
        done = cancel_never_starting(settings)
        if not done.rows and not as_json:
            typer.echo("no job waits for a parent that failed")
    elif every:
        active = active_jobs(settings)
        if not active:
            emit_json([]) if as_json else typer.echo("no active jobs")
            return
        if not yes and not typer.confirm(f"cancel {len(active)} job(s): {', '.join(r.job_id for r in active)}?"):
            raise typer.Exit(1)
        job_ids = [r.job_id for r in active]
        done = cancel_jobs(settings, job_ids)
    else:
        done = cancel_jobs(settings, job_ids or [])
    if as_json:
        emit_json([_cancelled_dict(row, done) for row in done.rows])
    else:
        for row in done.rows:
            if row.job_id not in done.refused:
                typer.echo(f"{row.job_id}: {_cancelled_text(row, done)}")
    for job_id, why in done.refused.items():
        typer.echo(f"deltajobs: error: {job_id}: not cancelled: {why}", err=True)
    if done.refused:
        raise typer.Exit(1)


def _cancelled_text(row: JobRow, done: Cancellation) -> str:
    """What cancel did to a row it did not refuse, in words."""
    if row.job_id in done.cancelled:
        return "cancelled"
    if row.job_id in done.gone:
        return f"was no longer running: {row.state}"
    return f"already {row.state}"


def _cancelled_dict(row: JobRow, done: Cancellation) -> dict[str, object]:
    reason = done.refused.get(row.job_id) or (None if row.job_id in done.cancelled else _cancelled_text(row, done))
    return {"job_id": row.job_id, "cancelled": row.job_id in done.cancelled, "state": row.state, "reason": reason}


@app.command("results")
def results_command(job_id: JobIdArg, as_json: JsonOpt = False, plot: PlotOpt = None) -> None:
    """A run's results: metrics, epochs and right-sizing advice.

    The trainer's results: test accuracy, timings, a per-epoch table and right-sizing advice."""
    from deltajobs.cli.views import array_results_dict, array_results_text, results_text
    from deltajobs.jobs.logs import ArrayResults, job_results
    from deltajobs.spec.settings import load_settings

    found = job_results(load_settings(), job_id)
    if isinstance(found, ArrayResults):  # an array job: its tasks, and their charges added up
        if found.warning:
            note(found.warning)
        emit_json(array_results_dict(found)) if as_json else typer.echo(array_results_text(found))
        return
    row, data, record, advice = found.row, found.data, found.record, found.advice
    if found.warning:
        note(found.warning)
    if plot is not None:
        from deltajobs.watch.plots import plot_curves

        plot_curves(data, plot, title=f"{row.name} ({row.job_id})")
    from pathlib import Path

    from deltajobs.jobs.provenance import read_record, summary, summary_dict
    from deltajobs.jobs.rerun import origin

    ran = read_record(Path(row.run_dir), row, files=False)  # what it ran with (RUN_DIR/env)
    again, description = origin(Path(row.run_dir))
    if as_json:
        emit_json(
            {
                "job_id": row.job_id,
                "state": row.state,
                "su": record.su if record is not None else row.su,
                **data,
                "attempts": [dataclasses.asdict(a) for a in record.attempts] if record is not None else [],
                "right_sizing": [a.to_dict() for a in advice],
                "env": summary_dict(ran),
                "rerun_of": again,
                "description": description,
            }
        )
        return
    typer.echo(results_text(row, data, advice, record))
    for line in ([f"rerun of {again} (`deltajobs diff {again} {row.job_id}`)"] if again else []) + (
        [description] if description else []
    ):
        typer.echo(line)
    if ran.env is not None or ran.git is not None:  # an older run recorded nothing: no line says so
        typer.echo("\n" + "\n".join(summary(ran)))
    if plot is not None:
        typer.echo(f"wrote {plot}")
