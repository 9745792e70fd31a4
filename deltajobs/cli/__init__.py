"""The `deltajobs` command line: the only layer that prints errors and exits.

Each module below registers its commands on the one Typer app (`app.py`), whose FIRST_SCREEN
places each in a panel of `deltajobs --help` (a new command gets its line there); options shared by
commands are declared once in `options.py`, text views in `views.py`. Commands parse options, make
one call into the domain and format its answer; heavy imports (torch, submitit, sqlite) happen
inside the commands that need them, so `--help` and `render` stay fast.
May import every package below it (pyproject.toml's layers: remote ... errors).
"""

from deltajobs.cli import accounting as _accounting  # noqa: F401  (registers commands)
from deltajobs.cli import board as _board  # noqa: F401
from deltajobs.cli import clusters as _clusters  # noqa: F401
from deltajobs.cli import environment as _environment  # noqa: F401
from deltajobs.cli import notebook as _notebook  # noqa: F401
from deltajobs.cli import provenance as _provenance  # noqa: F401
from deltajobs.cli import registry as _registry  # noqa: F401
from deltajobs.cli import remote as _remote  # noqa: F401
from deltajobs.cli import rerun as _rerun  # noqa: F401
from deltajobs.cli import resume as _resume  # noqa: F401
from deltajobs.cli import runs as _runs  # noqa: F401
from deltajobs.cli import setup as _setup  # noqa: F401
from deltajobs.cli import specs as _specs  # noqa: F401
from deltajobs.cli import sweep_views as _sweep_views  # noqa: F401
from deltajobs.cli import sweeps as _sweeps  # noqa: F401
from deltajobs.cli import training as _training  # noqa: F401
from deltajobs.cli.app import app, main

__all__ = ["app", "main"]
