"""The `deltajobs` command line: the only layer that prints errors and exits.

Each module below registers its commands on the one Typer app; heavy imports (torch, submitit,
sqlite) happen inside the commands that need them, so `--help` and `render` stay fast.
"""

from deltajobs.cli import charge as _charge  # noqa: F401
from deltajobs.cli import jobs as _jobs  # noqa: F401  (registers commands)
from deltajobs.cli import lifecycle as _lifecycle  # noqa: F401
from deltajobs.cli import setup as _setup  # noqa: F401
from deltajobs.cli import sweep as _sweep  # noqa: F401
from deltajobs.cli import train as _train  # noqa: F401
from deltajobs.cli.app import app, main

__all__ = ["app", "main"]
