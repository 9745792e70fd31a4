"""Rows brought up to date through the backend each names: one call per backend for all its rows
(on SLURM one squeue and one sacct), the changes recorded in the registry. Final states are never
asked for again. Used by the lifecycle (`status`) and by `rebuild`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from deltajobs import backends
from deltajobs.backends.base import Backend
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry


@dataclass
class Refresh:
    rows: list[JobRow]
    warning: str | None = None
    calls: list[str] = field(default_factory=list)  # which scheduler commands ran (for tests/benchmarks)
    notes: list[str] = field(default_factory=list)  # lines the scheduler printed that could not be read


def by_backend(rows: list[JobRow]) -> Iterator[tuple[Backend, list[JobRow]]]:
    """The rows grouped by the backend each was submitted with, in order of first appearance."""
    groups: dict[str, list[JobRow]] = {}
    for row in rows:
        groups.setdefault(row.backend, []).append(row)
    for name, group in groups.items():
        yield backends.get(name), group


def refresh(registry: Registry | None, rows: list[JobRow]) -> Refresh:
    """Bring the rows that are not final up to date (on SLURM: one squeue and one sacct for all);
    the changes are recorded in `registry` unless it is None (unreadable)."""
    result = Refresh(rows=rows)
    changes: dict[str, dict[str, Any]] = {}
    for backend, group in by_backend([r for r in rows if not r.final]):
        found = backend.refresh(group)
        changes.update(found.changes)
        result.calls += found.calls
        result.warning = result.warning or found.warning
        result.notes += found.notes
    if registry is not None:
        registry.update_many(changes)
    for row in rows:
        for key, value in changes.get(row.job_id, {}).items():
            setattr(row, key, value)
    return result
