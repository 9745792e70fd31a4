"""Exceptions of the domain layer. Only the CLI turns them into a message and an exit code."""

from __future__ import annotations


class DeltaJobsError(Exception):
    """A failure the user can act on; `str(err)` is the one line the CLI prints."""

    exit_code = 1


class SpecError(DeltaJobsError):
    """Invalid input: a job spec, an override or a flag. Names the field and the valid choices."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class SlurmError(DeltaJobsError):
    """A SLURM command failed or could not be reached."""

    exit_code = 3


class DataError(DeltaJobsError):
    """Training data is missing or corrupt."""

    exit_code = 4


class NotFoundError(DeltaJobsError):
    """An unknown job id, sweep id or run directory."""

    exit_code = 5


class BudgetError(DeltaJobsError):
    """The estimated charge exceeds the balance or the configured cap."""

    exit_code = 6
