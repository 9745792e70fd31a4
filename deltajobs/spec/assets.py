"""Where the packaged `templates/` and `jobs/` are: inside the wheel they sit beside this module
(`deltajobs/spec/templates`, `deltajobs/spec/jobs`), in a source checkout at the repository's top
level."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent
_CHECKOUT = _HERE.parents[1]


def path(name: str) -> Path:
    inside = _HERE / name
    return inside if inside.is_dir() else _CHECKOUT / name
