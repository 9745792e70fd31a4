"""A local job submitted with `--after ID` waits for its parents as SLURM's afterok would: its
controller starts at once, its task first waits here until every parent COMPLETED, then runs.
While it waits its run directory holds WAITING_FILE, whose first line is the pending reason
`local_state` reports (PENDING, `Dependency`); a parent that ended otherwise makes it
`DependencyNeverSatisfied`, and it waits on (as a SLURM job does) until it is cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAITING_FILE = ".waiting"  # in the run directory, while the job waits for its parents
POLL_S = 1.0
WAITING = ("COMPLETED", "RUNNING", "PENDING")  # a parent that may still complete (PENDING: it waits itself)


class AfterParents:
    """Run `task` once every parent (job id -> run directory, local jobs) has COMPLETED."""

    def __init__(
        self, task: Callable[[], Any], parents: dict[str, str], run_dir: str, state_of: Callable[[str, str], str]
    ) -> None:
        self.task = task
        self.parents = parents
        self.run_dir = run_dir
        self.state_of = state_of  # (job id, run directory) -> its state (`local.parent_state`)

    def __call__(self) -> Any:
        marker = Path(self.run_dir) / WAITING_FILE
        said = ""
        while True:
            states = {job_id: self.state_of(job_id, run_dir) for job_id, run_dir in self.parents.items()}
            if all(state == "COMPLETED" for state in states.values()):
                marker.unlink(missing_ok=True)
                return self.task()
            failed = {job_id: state for job_id, state in states.items() if state not in WAITING}
            text = (
                "DependencyNeverSatisfied\n" + "".join(f"{job_id} {state}\n" for job_id, state in failed.items())
                if failed
                else "Dependency\n"
            )
            if text != said:
                marker.write_text(text)
                waiting = ", ".join(f"{job_id} ({state})" for job_id, state in states.items())
                print(f"deltajobs: waiting for {waiting}", flush=True)
                said = text
            time.sleep(POLL_S)
