"""The price of an sbatch script as written: one job, or one array task and the whole array.

An array's tasks are jobs of their own, each reserving what the script asks (sbatch(1), --array), so
the array costs tasks x the per-task charge; `%N` caps how many run at once, which changes when the
array ends, not what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltajobs.charge.accounting import balance
from deltajobs.charge.estimate import Estimate, Request, estimate, format_su
from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.payloads.sbatch_file import SbatchFile
from deltajobs.payloads.sbatch_lint import Finding
from deltajobs.payloads.sbatch_request import JobArray, SbatchRequest, where
from deltajobs.slurm.commands import SlurmBusy


@dataclass(frozen=True)
class ArrayPrice:
    array: JobArray
    per_task: Estimate

    @property
    def su_total(self) -> float:
        """Every task at its full walltime, as billed (a profile's per-task minimum included)."""
        return self.per_task.array_su(self.array.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "indices": self.array.text,
            "tasks": self.array.tasks,
            "concurrency": self.array.concurrency,
            "su_per_task": self.per_task.su,
            "su_total": self.su_total,
        }

    def describe(self) -> str:
        """`97 tasks x 4.29 SU = 417 SU in all; at most 3 at a time (%3 caps concurrency, not cost)`."""
        tasks = f"{self.array.tasks} task{'s' if self.array.tasks != 1 else ''}"
        text = f"{tasks} ({self.array.text}) x {format_su(self.per_task.su)} SU = {format_su(self.su_total)} SU in all"
        limit = self.array.concurrency
        if limit is not None:
            text += f"; at most {limit} at a time (%{limit} caps concurrency, not cost)"
        return text


def price(request: SbatchRequest) -> Estimate:
    """One job's (one task's) worst case: its full walltime on the dearest partition it lists."""
    charged = Request(
        nodes=request.nodes,
        gpus_per_node=request.gpus_per_node,
        cpus_per_node=request.cpus_per_node,
        mem_mb_per_node=request.mem_mb_per_node,
        seconds=request.seconds,
        exclusive=request.exclusive,
    )
    estimates = [estimate(charged, partition) for partition in request.partitions]
    return max(estimates, key=lambda est: (est.su, est.formula_su))


def price_array(request: SbatchRequest, per_task: Estimate) -> ArrayPrice | None:
    return ArrayPrice(request.array, per_task) if request.array is not None else None


def account_membership(parsed: SbatchFile, account: str | None) -> list[Finding]:
    """Where `accounts` (or SLURM's limits) can be read: an error if `account` is not one of the
    user's, naming the ones that are; nothing where it is, or where nothing can be read. An `accounts`
    that fails or does not answer is a warning that says so, never a refusal: the script is not wrong."""
    if not account:
        return []
    directive = next((d for d in reversed(parsed.directives) if d.option == "account"), None)
    line = directive.line or None if directive else None
    try:
        balance(account)
    except NotFoundError as err:  # `accounts` answered, without it
        return [Finding("error", line, where(directive) + str(err))]
    except DeltaJobsError as err:  # failed, timed out or unreadable: a passing fault of the service
        reason = err.reason if isinstance(err, SlurmBusy) else str(err)
        message = f"could not check that {account} is one of your accounts ({reason}); `deltajobs accounts` tries again"
        return [Finding("warning", line, where(directive) + message)]
    return []
