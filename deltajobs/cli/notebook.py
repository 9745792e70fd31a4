"""`deltajobs notebook`: JupyterLab on a compute node in the job's environment, one URL, a price."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JobFlags, JsonOpt, YesOpt, chosen_backend, job_flags
from deltajobs.errors import DeltaJobsError, SpecError

if TYPE_CHECKING:
    from deltajobs.jobs.notebook import Placement, Ready
    from deltajobs.registry.schema import JobRow


@app.command("notebook")
@job_flags
def notebook_command(
    *,
    flags: JobFlags,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="JupyterLab's root directory (default: this one).")
    ] = None,
    idle: Annotated[
        str | None,
        typer.Option("--idle", help="End it after this long idle (no kernel busy, nothing connected): 30m, 1h."),
    ] = None,
    stop: Annotated[bool, typer.Option("--stop", help="End the running notebook(s) and say what they cost.")] = False,
    new: Annotated[bool, typer.Option("--new", help="Start another even where one runs.")] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the URL in this machine's browser.")] = False,
    timeout: Annotated[
        int | None, typer.Option("--timeout", help="Seconds to wait for it to start (default: until it does).")
    ] = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """JupyterLab on a compute node: priced, private, one URL.

    Submit a batch job that runs JupyterLab on a compute node in the job's own environment (modules,
    then your venv or conda env), on the partition's -interactive sibling where the walltime fits,
    then wait until it answers and print its URL (with its token: others get 403), the `ssh -L` line
    for a laptop, the SU per hour and how to end it. With a notebook already running, print its URL
    again (--new starts another). From a laptop, `--remote NAME` opens the tunnel through the
    existing SSH connection and keeps it until Ctrl-C."""
    from deltajobs.jobs.notebook import live_notebooks
    from deltajobs.spec.settings import load_settings

    if flags.command is not None:
        raise SpecError("--command", "is for submit; a notebook runs JupyterLab")
    settings = load_settings()
    if stop:
        _stop(settings, as_json)
        return
    idle_s = _idle(idle)
    live = [] if new else live_notebooks(settings)
    if live:
        row = live[0]
        if not as_json:
            typer.echo(f"a notebook is already running: job {row.job_id} ({row.state}); --new starts another")
        _wait_and_show(settings, row, None, timeout, open_browser, as_json)
        return
    place = _place(settings, flags, directory, idle_s)
    row = _submit(settings, place, yes, as_json)
    _wait_and_show(settings, row, place, timeout, open_browser, as_json)


def _idle(text: str | None) -> int | None:
    from deltajobs.jobs.notebook import parse_idle

    return parse_idle(text)


def _place(settings: object, flags: JobFlags, directory: Path | None, idle_s: int | None) -> Placement:
    from deltajobs.jobs.notebook import notebook_job
    from deltajobs.spec.settings import Settings

    assert isinstance(settings, Settings)
    root = directory if directory is not None else Path.cwd()
    cluster = flags.cluster_name(settings)
    return notebook_job(settings, root, idle_s, flags.overrides, cluster, picked=flags.partition is not None)


def _submit(settings: object, place: Placement, yes: bool, as_json: bool) -> JobRow:
    from deltajobs.jobs.launch import start_job
    from deltajobs.jobs.lifecycle import status
    from deltajobs.jobs.notebook import price_line
    from deltajobs.spec.context import new_run_dir
    from deltajobs.spec.settings import Settings

    assert isinstance(settings, Settings)
    backend = chosen_backend(False, settings)
    if not backend.compute_nodes:
        raise DeltaJobsError(
            "deltajobs notebook runs JupyterLab on a compute node, and there is no SLURM here (sbatch not found); "
            "from a laptop: deltajobs notebook --remote NAME"
        )
    run_dir = new_run_dir(settings, place.job.spec.name)
    started = start_job(place.job, settings, run_dir, backend, yes)
    sub = started.submission
    if not as_json:
        typer.echo(f"submitted notebook job {sub.job_id} ({sub.backend}): {place.job.payload.describe()}")
        if backend.charges:
            typer.echo(f"  price:   {price_line(place)}")
        typer.echo(f"  log:     {sub.log_path}")
    (row,) = status(settings, [sub.job_id]).rows
    return row


def _wait_and_show(
    settings: object, row: JobRow, place: Placement | None, timeout: int | None, open_browser: bool, as_json: bool
) -> None:
    from deltajobs.jobs.notebook import wait_ready
    from deltajobs.spec.settings import Settings

    assert isinstance(settings, Settings)

    def on_state(current: JobRow) -> None:
        if as_json:
            return
        if current.state == "PENDING":
            from deltajobs.jobs.lifecycle import reason_words

            words = reason_words(current.reason) if current.reason and current.reason != "None" else ""
            why = f" ({words})" if words else ""
            note(f"job {current.job_id} is waiting for a node{why}; Ctrl-C stops waiting (the job stays queued)")
        elif current.state == "RUNNING":
            note(f"job {current.job_id} runs; waiting for JupyterLab to answer")

    try:
        ready = wait_ready(settings, row, on_state, timeout)
    except KeyboardInterrupt:
        note(f"stopped waiting; job {row.job_id} stays: `deltajobs notebook` prints its URL, --stop ends it")
        raise typer.Exit(130) from None
    if as_json:
        emit_json(ready.to_dict())
    else:
        _show(ready, place)
    if open_browser:
        _open(ready.url)


def _show(ready: Ready, place: Placement | None) -> None:
    """The URL from here, the laptop's way in, the price and the ways it ends."""
    import time as clock

    from deltajobs.clusters.units import parse_walltime

    row = ready.row
    gpus = f", {row.gpus_per_node} GPU{'s' if (row.gpus_per_node or 0) != 1 else ''}" if row.gpus_per_node else ""
    typer.echo(f"notebook job {row.job_id} on {ready.node} ({row.partition}{gpus}): JupyterLab answers")
    typer.echo(f"  open:    {ready.url}")
    typer.echo(f"  laptop:  {ready.tunnel}   (then open {ready.laptop_url})")
    if place is not None and place.job.partition.name == row.partition:
        from deltajobs.jobs.notebook import price_line

        typer.echo(f"  price:   {price_line(place)}")
    ends = ["deltajobs notebook --stop", f"deltajobs cancel {row.job_id}"]
    if row.started_at and row.time_limit:
        try:
            from datetime import datetime

            start = datetime.fromisoformat(row.started_at).timestamp()
            end = clock.strftime("%H:%M", clock.localtime(start + parse_walltime(row.time_limit)))
            ends.append(f"at {end} (its walltime; a warning in the log and open terminals before)")
        except (ValueError, SpecError):
            pass
    idle = _idle_of(row)
    if idle:
        ends.append(f"after {idle} s idle")
    typer.echo(f"  ends:    {'; '.join(ends)}")


def _idle_of(row: JobRow) -> int | None:
    """The --idle the notebook job was started with (its spec.yaml in the run directory)."""
    import yaml

    try:
        data = yaml.safe_load((Path(row.run_dir) / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    run = data.get("run") if isinstance(data, dict) else None
    args = [str(a) for a in (run.get("args") or [])] if isinstance(run, dict) else []
    if "--idle" in args and args.index("--idle") + 1 < len(args):
        value = args[args.index("--idle") + 1]
        return int(value) if value.isdigit() else None
    return None


def _open(url: str) -> None:
    """A browser on a login node would show the token to every user there (its command line, or
    xdg-open's), and its window crosses ssh -X: the laptop opens it (`--remote NAME --open`)."""
    note(
        "--open opens a browser on your laptop: run `deltajobs notebook --remote NAME --open` there; "
        "here, open the URL above"
    )


def _stop(settings: object, as_json: bool) -> None:
    from deltajobs.jobs.lifecycle import cancel_jobs
    from deltajobs.jobs.notebook import live_notebooks
    from deltajobs.spec.settings import Settings

    assert isinstance(settings, Settings)
    live = live_notebooks(settings)
    if not live:
        emit_json([]) if as_json else typer.echo("no notebook is running")
        return
    done = cancel_jobs(settings, [r.job_id for r in live])
    if as_json:
        emit_json([{"job_id": r.job_id, "cancelled": r.job_id in done.cancelled, "state": r.state} for r in done.rows])
    else:
        for row in done.rows:
            what = "stopped" if row.job_id in done.cancelled else f"already {row.state}"
            typer.echo(f"notebook job {row.job_id}: {what}; `deltajobs status {row.job_id} --detail` shows its charge")
    for job_id, why in done.refused.items():
        typer.echo(f"deltajobs: error: {job_id}: not stopped: {why}", err=True)
    if done.refused:
        raise DeltaJobsError("some notebooks were not stopped")
