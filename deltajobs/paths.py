"""Where deltajobs keeps its files on this machine: the user config and the state directory.

The one home of the XDG rules, below every package that needs them (settings, cluster profiles,
remote results); imports nothing from deltajobs.
"""

from __future__ import annotations

import os
from pathlib import Path


def config_path() -> Path:
    """The user config file: $XDG_CONFIG_HOME/deltajobs/config.yaml (default ~/.config)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "deltajobs" / "config.yaml"


def state_home() -> Path:
    """DELTAJOBS_HOME, else $XDG_STATE_HOME/deltajobs (default ~/.local/state): registry, runs, data."""
    if os.environ.get("DELTAJOBS_HOME"):
        return Path(os.environ["DELTAJOBS_HOME"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "deltajobs"
