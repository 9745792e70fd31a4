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


@app.command("ui")
def ui_command(
    port: Annotated[int | None, typer.Option("--port", help="Port on 127.0.0.1 (default: a free one).")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open it in this machine's browser.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """A web dashboard of your runs, live, behind a private URL.

    Serve a web dashboard on 127.0.0.1 until Ctrl-C: every run with its state, curves, logs and
    cost, sweeps, spend per account, compare runs; cancel and resume from the page. Only the printed
    URL's token opens it (others get 403); from a laptop, `--remote NAME` forwards it."""
    import importlib.util

    from deltajobs.errors import DeltaJobsError
    from deltajobs.spec.settings import load_settings

    if importlib.util.find_spec("flask") is None:
        raise DeltaJobsError("the dashboard needs Flask: pip install 'deltajobs[ui]' (or flask>=3,<4)")
    from deltajobs.ui.serve import make_server, new_token, plan_ui

    settings = load_settings()
    plan = plan_ui(port, new_token())
    server = make_server(plan, settings)  # bound before the URL is printed: it answers at once
    if as_json:
        emit_json(plan.to_dict())
    else:
        typer.echo("deltajobs dashboard")
        typer.echo(f"  open:    {plan.url}")
        typer.echo(f"  laptop:  {plan.tunnel}   (then open {plan.url})")
        typer.echo("  private: only this URL's token opens it; others on this machine get 403 Forbidden")
        typer.echo("serving; Ctrl-C to stop")
    private = None
    if open_browser:  # once it serves (a console browser would wait on it), through a 0600 redirect file
        import tempfile
        import threading
        from pathlib import Path

        from deltajobs.remote.tunnel import open_privately

        private = tempfile.TemporaryDirectory(prefix="deltajobs-open-")
        threading.Timer(0.5, open_privately, (plan.url, Path(private.name))).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if private is not None:
            private.cleanup()
    typer.echo("stopped", err=True)
