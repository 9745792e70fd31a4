"""`deltajobs rerun RUN`: the same code snapshot, spec and arguments submitted again as a new run
(`deltajobs.jobs.rerun`), priced and guarded like submit; flags change only what they name."""

from __future__ import annotations

from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JobFlags, JsonOpt, YesOpt
from deltajobs.cli.resume import resume_flags


@app.command("rerun")
@resume_flags
def rerun_command(
    run: Annotated[str, typer.Argument(help="The run: a job id, `last`, or a run directory.", metavar="RUN")],
    *,
    flags: JobFlags,
    local: Annotated[bool, typer.Option("--local", help="Run it on this machine instead.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the new job to its end.")] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a run again: the same code, spec and arguments.

    Submit the run again as a new run: the same code snapshot (a script's RUN_DIR/code, the sbatch
    script as submitted, the trainer's config, a function's pickled call), spec and arguments, on
    the backend it ran on (--local: here); flags change only what they name (--set train.epochs=5,
    --time, -p). `status` and `results` say "rerun of RUN"; `deltajobs diff RUN NEW` compares them."""
    from deltajobs.jobs.launch import start_job
    from deltajobs.jobs.rerun import prepare_rerun
    from deltajobs.spec.context import new_run_dir
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    rerun = prepare_rerun(settings, run, flags.overrides_for(settings), local)
    resolved, old = rerun.resolved, rerun.previous
    for line in rerun.notes:
        note(f"note: {line}")
    with rerun.call():
        started = start_job(resolved, settings, new_run_dir(settings, resolved.spec.name), rerun.backend, yes)
    sub, estimate = started.submission, started.estimate_su
    info = {
        **sub.to_dict(),
        "rerun_of": old.job_id,
        "estimate_su": round(estimate, 4) if estimate is not None else None,
    }
    if as_json and not wait:
        emit_json(info)
        return
    if not as_json:
        typer.echo(f"submitted {sub.job_id} ({sub.backend}): rerun of {old.job_id} ({resolved.payload.describe()})")
        typer.echo(f"  run dir: {sub.run_dir}")
        typer.echo(f"  log:     {sub.log_path}")
        if estimate is not None:
            res = resolved.spec.resources
            typer.echo(f"  charge:  at most {estimate:.2f} SU ({res.time} on {resolved.partition.name})")
    if wait:
        from deltajobs.cli.runs import follow_to_end

        follow_to_end(sub.job_id, info, as_json)
