"""The Typer app, output helpers and the error boundary."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from deltajobs.errors import DeltaJobsError

# The first screen (`deltajobs --help`): the commands by what users do, the everyday ones first.
# This table is the one home of each command's panel and place; a command left out of it shows
# under "Commands" at the end (and tests/test_cli_help.py fails).
FIRST_SCREEN: dict[str, tuple[str, ...]] = {
    "Run jobs": ("submit", "cancel", "resume", "rerun", "render", "check", "shell", "notebook", "train"),
    "Watch them": ("status", "logs", "results", "show", "diff", "tensorboard", "ui"),
    "Cost in Service Units": ("estimate", "accounts", "charge"),
    "Sweeps and search": ("sweep",),
    "Set up": ("init", "doctor", "list", "cluster", "data", "registry", "remote"),
}
_PLACE = {name: place for place, name in enumerate(n for names in FIRST_SCREEN.values() for n in names)}
_PANEL = {name: panel for panel, names in FIRST_SCREEN.items() for name in names}
OTHER = "Commands"  # Typer's panel for a command that names none


class PanelGroup(TyperGroup):
    """The root group: its commands in FIRST_SCREEN's panels and order (Typer's rich help draws a
    panel per `rich_help_panel`), also for completion and in the plain help that NO_COLOR gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, command in self.commands.items():
            command.rich_help_panel = _PANEL.get(name) or getattr(command, "rich_help_panel", None)  # type: ignore[attr-defined]
        _reflow_all(self)

    def list_commands(self, ctx: Any) -> list[str]:  # ctx: typer's vendored click Context
        return sorted(super().list_commands(ctx), key=lambda name: _PLACE.get(name, len(_PLACE)))

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The plain help's command list (rich help off: NO_COLOR), one section per panel."""
        commands = [(name, self.commands[name]) for name in self.list_commands(ctx)]
        commands = [(name, command) for name, command in commands if not command.hidden]
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        for panel in [*FIRST_SCREEN, OTHER]:
            rows = [(name, c.get_short_help_str(limit)) for name, c in commands if _PANEL.get(name, OTHER) == panel]
            if rows:
                with formatter.section(panel):
                    formatter.write_dl(rows)


def reflow(text: str | None) -> str | None:
    """Help text as prose: a docstring's paragraphs with their source line breaks joined (Typer's rich
    help keeps them, so they broke lines mid-sentence at every width); a paragraph that starts with
    click's \\b marker stays as written."""
    if not text:
        return text
    paragraphs = text.split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def _reflow_all(group: Any) -> None:
    """Reflow the help of every command under `group`, sub-apps' commands included."""
    for command in group.commands.values():
        command.help = reflow(command.help)
        if hasattr(command, "commands"):
            _reflow_all(command)


app = typer.Typer(
    name="deltajobs",
    cls=PanelGroup,
    help="Take a PyTorch experiment from a laptop to the GPUs of a SLURM cluster (NCSA Delta) and back. "
    "--remote NAME (or DELTAJOBS_REMOTE) runs a command on a login node over SSH, --no-remote here; "
    "`deltajobs COMMAND --help` tells more.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None if os.environ.get("NO_COLOR") else "rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def note(message: str) -> None:
    """A line for the user on stderr (keeps stdout clean for scripts and --json)."""
    typer.echo(f"deltajobs: {message}", err=True)


def _print_version(value: bool) -> None:
    if value:
        from deltajobs import __version__

        typer.echo(f"deltajobs {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print deltajobs' version and exit."
    ),
) -> None:
    """The options before the command."""


def main() -> None:
    """The entry point: a command for a remote (--remote NAME, DELTAJOBS_REMOTE, `remote:` in the
    config) is taken out of Typer's hands and run there (deltajobs.remote.dispatch)."""
    try:
        from deltajobs.remote.dispatch import route

        args, code = route(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        app(args=args)
    except DeltaJobsError as err:
        typer.echo(f"deltajobs: error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("deltajobs: interrupted", err=True)
        sys.exit(130)
    except OSError as err:  # what the domain did not name (a backend's own write, a full disk): one line
        from deltajobs.injob.diskspace import EXIT_DISK_FULL, is_disk_full

        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"deltajobs: error: {where}{err.strerror or err}", err=True)
        sys.exit(EXIT_DISK_FULL if is_disk_full(err) else 1)
    except Exception as err:  # an SQLite error the registry did not name: still one line
        sqlite = sys.modules.get("sqlite3")  # not imported: it cannot be one (and --help stays fast)
        if sqlite is None or not isinstance(err, sqlite.Error):
            raise
        typer.echo(f"deltajobs: error: the registry failed ({type(err).__name__}: {err})", err=True)
        sys.exit(1)
