"""SLURM's units: walltimes and memory sizes, parsed strictly and printed canonically."""

from __future__ import annotations

import re

from deltajobs.errors import SpecError

_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<h>\d+):(?P<m>[0-5]?\d):(?P<s>[0-5]?\d)")
_MEM = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)B?", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "M": 1, "": 1, "G": 1024, "T": 1024 * 1024}


def parse_walltime(text: str, field: str = "resources.time") -> int:
    """`HH:MM:SS` or `D-HH:MM:SS` -> seconds."""
    match = _TIME.fullmatch(str(text).strip())
    if not match:
        raise SpecError(field, f"{text!r} is not a walltime; use HH:MM:SS or D-HH:MM:SS")
    days = int(match["days"] or 0)
    return ((days * 24 + int(match["h"])) * 60 + int(match["m"])) * 60 + int(match["s"])


def format_walltime(seconds: int) -> str:
    """Seconds -> `HH:MM:SS` (hours may exceed 24, as sbatch accepts)."""
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def parse_mem_mb(text: str | int, field: str = "resources.mem") -> float:
    """`16G`, `16g`, `500M`, `2T`, `16GB` or a bare number of megabytes -> megabytes."""
    match = _MEM.fullmatch(str(text).strip())
    if not match:
        raise SpecError(field, f"{text!r} is not a memory size; use e.g. 16G, 500M or 1T")
    return float(match["n"]) * _MB_PER_UNIT[match["unit"].upper()]


def format_mem(text: str | int) -> str:
    """Canonical sbatch form: integer and lower-case unit (`16g`, `500m`)."""
    match = _MEM.fullmatch(str(text).strip())
    if not match or "." in match["n"]:
        mb = parse_mem_mb(text)
        return f"{int(round(mb))}m"
    return f"{int(match['n'])}{(match['unit'] or 'M').lower()}"


def format_duration(seconds: float) -> str:
    """Human duration for tables: `42s`, `3m05s`, `2h01m`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
