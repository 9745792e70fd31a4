"""Where the packaged `templates/` and `jobs/` are: inside the wheel they sit in the package
(`deltajobs/templates`), in a source checkout at the repository's top level."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).parent


def path(name: str) -> Path:
    inside = _PACKAGE / name
    return inside if inside.is_dir() else _PACKAGE.parent / name
