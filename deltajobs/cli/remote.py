"""`deltajobs remote ...`: the login nodes this laptop drives over SSH. Every other command takes
`--remote NAME` (or DELTAJOBS_REMOTE, or `remote:` in the config); see deltajobs/remote/."""

from __future__ import annotations

from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JsonOpt

remote_app = typer.Typer(
    no_args_is_help=True,
    help="Drive login nodes from this laptop over SSH (--remote NAME).\n\n"
    "Login nodes driven from this laptop over your own OpenSSH: add one, set it up, then "
    "`deltajobs COMMAND --remote NAME`.",
)
app.add_typer(remote_app, name="remote")

NameArg = Annotated[str, typer.Argument(help="The remote's name, e.g. delta.", show_default=False)]


@remote_app.command("add")
def add_command(
    name: NameArg,
    host: Annotated[
        str,
        typer.Option("--host", help="ssh destination or Host alias, e.g. dt-login03.delta.ncsa.illinois.edu."),
    ],
    user: Annotated[str | None, typer.Option("--user", help="Login name there (default: ssh's).")] = None,
    workdir: Annotated[
        str,
        typer.Option("--workdir", help="Directory there for the venv and your code's mirror; relative: in its home."),
    ] = "deltajobs",
    ssh_config: Annotated[
        str | None, typer.Option("--ssh-config", help="An ssh config file for `ssh -F` (default: ~/.ssh/config).")
    ] = None,
    module: Annotated[
        list[str] | None,
        typer.Option("--module", help="Module loaded before the venv's python (repeat; default: pytorch-conda/2.8)."),
    ] = None,
    python: Annotated[str, typer.Option("--python", help="Python the venv is made with, after the modules.")] = (
        "python3"
    ),
    default: Annotated[
        bool, typer.Option("--default", help="Every command goes there without --remote (`remote:` in the config).")
    ] = False,
) -> None:
    """Record a remote; nothing is contacted.

    Then `deltajobs remote setup NAME` installs deltajobs there."""
    from deltajobs.remote.records import add_remote
    from deltajobs.remote.sync import rsync_problem
    from deltajobs.spec.settings import RemoteRecord

    modules = list(module) if module is not None else RemoteRecord(host=host).modules
    record = RemoteRecord(host=host, user=user, workdir=workdir, ssh_config=ssh_config, modules=modules, python=python)
    path = add_remote(name, record, make_default=default)
    typer.echo(f"remote {name}: {user + '@' if user else ''}{host}, workdir {workdir} (in {path})")
    if default:
        typer.echo(f"  every command now runs on {name}; --no-remote runs one here")
    typer.echo(f"  next: deltajobs remote setup {name}")
    problem = rsync_problem()  # the record is fine; `remote setup` refuses until rsync is
    if problem:
        note(problem)


@remote_app.command("list")
def list_command(as_json: JsonOpt = False) -> None:
    """The remotes recorded, the default marked with *."""
    from dataclasses import asdict

    from deltajobs.spec.settings import read_user_config

    config = read_user_config()
    if as_json:
        emit_json({"default": config.remote, "remotes": {k: asdict(v) for k, v in config.remotes.items()}})
        return
    if not config.remotes:
        typer.echo("no remotes (add one with `deltajobs remote add delta --host dt-login03.delta.ncsa.illinois.edu`)")
        return
    for name, record in sorted(config.remotes.items()):
        mark = "*" if name == config.remote else " "
        where = f"{record.user + '@' if record.user else ''}{record.host}"
        extra = f"  (ssh -F {record.ssh_config})" if record.ssh_config else ""
        typer.echo(f"{mark} {name:12} {where}  {record.workdir}{extra}")


@remote_app.command("remove")
def remove_command(name: NameArg) -> None:
    """Forget a remote; its files there stay.

    Its connection is closed unless another remote uses it."""
    from deltajobs.remote.records import get_remote, may_share_connection, remove_remote
    from deltajobs.remote.ssh import Ssh, disconnect

    record = get_remote(name)
    if not may_share_connection(name):  # a shared one stays open (it expires on its own)
        disconnect(Ssh.for_remote(name, record))
    remove_remote(name)
    typer.echo(f"removed remote {name}")


@remote_app.command("setup")
def setup_command(name: NameArg) -> None:
    """Install this deltajobs there, then run `deltajobs doctor` there.

    Install this version of deltajobs there (a wheel of it, into a venv over the module's python,
    its dependencies from pip there), then run `deltajobs doctor` there."""
    from deltajobs import __version__
    from deltajobs.remote.dispatch import forward
    from deltajobs.remote.install import install
    from deltajobs.remote.records import get_remote
    from deltajobs.remote.ssh import Ssh, connect
    from deltajobs.remote.sync import require_rsync

    ssh = Ssh.for_remote(name, get_remote(name))
    require_rsync()  # before the login: the wheel and every command's code travel by rsync
    connect(ssh)
    python = install(ssh, lambda line: note(f"{name}: {line}"))
    typer.echo(f"deltajobs {__version__} installed on {name} in {ssh.record.workdir}/venv (over {python})")
    typer.echo(f"running `deltajobs doctor` on {name}:")
    code = forward(name, ["doctor"])
    if code != 0:
        note(f"{name}: doctor found problems (above); fix them there, e.g. `deltajobs init --remote {name}`")
    raise typer.Exit(code)


@remote_app.command("connect")
def connect_command(name: NameArg) -> None:
    """Log in once and keep the connection for later commands.

    Password and Duo once; OpenSSH's ControlPersist keeps the connection."""
    from deltajobs.remote.records import get_remote
    from deltajobs.remote.ssh import PERSIST, Ssh, connect, connected

    ssh = Ssh.for_remote(name, get_remote(name))
    was = connected(ssh)
    connect(ssh)
    typer.echo(f"{name}: {'already ' if was else ''}connected; the connection stays open {PERSIST} after the last use")


@remote_app.command("disconnect")
def disconnect_command(name: NameArg) -> None:
    """Close the connection kept to a remote.

    The next command logs in again."""
    from deltajobs.remote.records import get_remote
    from deltajobs.remote.ssh import Ssh, disconnect

    closed = disconnect(Ssh.for_remote(name, get_remote(name)))
    typer.echo(f"{name}: {'disconnected' if closed else 'was not connected'}")
