"""`deltajobs tensorboard`: serve a run's or a sweep's TensorBoard and say how to reach it.

TensorBoard runs as a child process behind a token (`python -m deltajobs.watch.tbproxy`, which says why
and how): the CLI itself never imports tensorboard or torch.
"""

from __future__ import annotations

from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JsonOpt


@app.command("tensorboard")
def tensorboard_command(
    ident: Annotated[str, typer.Argument(help="Job id, `last`, sweep id, or a sweep's array job id.")] = "last",
    port: Annotated[int | None, typer.Option("--port", help="Port on 127.0.0.1 (default: a free one).")] = None,
    print_only: Annotated[
        bool, typer.Option("--print-only", help="Print the log directory, URL and SSH tunnel; start nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Serve a run's or a sweep's TensorBoard behind a private URL.

    Serve TensorBoard for a run (its run directory) or a sweep (all its points) on 127.0.0.1 until
    Ctrl-C, behind a random token that only the printed URL carries (others on the login node get
    403); prints that URL and the `ssh -L` line that reaches it from a laptop."""
    from deltajobs.spec.settings import load_settings
    from deltajobs.watch.tbserve import new_token, plan_with_reports, require_tensorboard, serve

    token = "" if print_only else new_token()  # nothing served, no token
    plan = plan_with_reports(load_settings(), ident, port, token)
    if as_json:
        emit_json(plan.to_dict())
    else:
        typer.echo(f"TensorBoard for {plan.label}: {plan.logdir}")
        typer.echo(f"  open:    {plan.url}")
        typer.echo(f"  laptop:  {plan.tunnel}   (then open {plan.url})")
        if token:
            typer.echo("  private: only this URL's token opens it; others on this login node get 403 Forbidden")
    if not plan.has_events:
        note(f"no TensorBoard event files under {plan.logdir} yet (they appear as epochs end)")
    if print_only:
        return
    require_tensorboard()
    if not as_json:
        typer.echo("serving; Ctrl-C to stop")
    serve(plan)  # until Ctrl-C
    typer.echo("stopped", err=True)
