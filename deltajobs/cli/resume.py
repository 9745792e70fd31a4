"""`deltajobs resume RUN`: continue a stopped run (cancelled, out of requeues, node failure, full disk,
failed after a checkpoint) as a new job in the same run directory, on the backend it ran on."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JobFlags, JsonOpt, YesOpt

# The job options that make sense on resume: where, how long and with what it runs; not what.
FLAGS: tuple[str, ...] = (
    *("sets", "account", "partition", "nodes", "gpus", "cpus", "mem", "time", "constraint", "exclude", "qos"),
    *("reservation", "mail_type", "mail_user", "after", "dependency"),
)
_ANNOTATIONS = inspect.get_annotations(JobFlags, eval_str=True)
_PARAMS = [
    inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_ANNOTATIONS[n]) for n in FLAGS
]


def resume_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give the command the job options of FLAGS (as `options.job_flags` does for all of them)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "flags"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = JobFlags(**{name: kwargs.pop(name, None) for name in FLAGS})
        return command(*args, flags=flags, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *_PARAMS])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *_PARAMS]}
    return wrapper


@app.command("resume")
@resume_flags
def resume_command(
    run: Annotated[str, typer.Argument(help="The run: a job id, `last`, or a run directory.", metavar="RUN")],
    *,
    flags: JobFlags,
    restart: Annotated[
        bool, typer.Option("--restart", help="Resubmit a run that has no checkpoint: it starts over in its run dir.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the new job to its end.")] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue a stopped run as a new job in its run directory.

    Continue a stopped run as a new job in the same run directory, on the backend it ran on, with
    the resources it had unless overridden (--time, --partition, --mem, ...); priced and guarded like
    submit. The job continues from its checkpoint (the trainer's checkpoint.pt, a script's
    DELTAJOBS_CHECKPOINT_DIR); an sbatch script is submitted again as written. The old job's row
    stays (its charge is real): `status`, `logs` and `charge` show both, `results` the run's latest."""
    from deltajobs.jobs.launch import prepare_resume
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    resume = prepare_resume(settings, run, flags.overrides, restart)
    started = resume.submit(settings, yes)
    sub, estimate, old, resolved = started.submission, started.estimate_su, resume.previous, resume.resolved
    start = str(resume.checkpoint) if resume.checkpoint is not None else None
    info = {
        **sub.to_dict(),
        "resumes": old.job_id,
        "resumes_state": old.state,
        "checkpoint": start,
        "estimate_su": round(estimate, 4) if estimate is not None else None,
    }
    if as_json and not wait:
        emit_json(info)
        return
    if not as_json:
        typer.echo(f"resumed {sub.run_dir.name} as {sub.job_id} ({sub.backend}): resumes {old.job_id} ({old.state})")
        typer.echo(f"  from:    {start or 'the start (no checkpoint; --restart)'}")
        typer.echo(f"  run dir: {sub.run_dir}")
        typer.echo(f"  log:     {sub.log_path}")
        if estimate is not None:
            res = resolved.spec.resources
            typer.echo(f"  charge:  at most {estimate:.2f} SU ({res.time} on {resolved.partition.name})")
    if resume.checkpoint is None:
        note(f"{sub.run_dir} holds no checkpoint: job {sub.job_id} starts over (--restart)")
    if wait:
        from deltajobs.cli.runs import follow_to_end

        follow_to_end(sub.job_id, info, as_json)
