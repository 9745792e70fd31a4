"""Helpers for integration tests against minidelta and the local backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


needs_slurm = pytest.mark.skipif(not slurm_up(), reason="minidelta is not up (scripts/minidelta up)")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m deltajobs ARGS` with this interpreter (jobs then run it too), in `cwd` (the repo)."""
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=cwd or REPO,
    )


def cli_json(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    """`cli(ARGS --json)`, parsed; arguments after `--` stay last."""
    if "--" in args:
        split = args.index("--")
        args = (*args[:split], "--json", *args[split:])
    else:
        args = (*args, "--json")
    proc = cli(*args, env=env, cwd=cwd)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return json.loads(proc.stdout)


def wait_for_state(
    job_id: str, states: set[str], timeout: float = 240, env: dict[str, str] | None = None
) -> dict[str, Any]:
    deadline = time.time() + timeout
    seen: list[str] = []
    while time.time() < deadline:
        row = cli_json("status", job_id, env=env)[0]
        if not seen or seen[-1] != row["state"]:
            seen.append(row["state"])
        if row["state"] in states:
            return {**row, "seen": seen}
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} never reached {states}; states seen: {seen}")


REQUEUE_SETTLE_S = 3  # slurmd refuses a start within the second of a requeue ("Job credential revoked": FAILED)


def release_begin_time(job_id: str) -> None:
    """A requeued job waits ~2 minutes on minidelta (BeginTime); let it start now, but not within
    the second of its requeue: slurmd then kills it as non-startable and the job ends FAILED
    (slurmctld.log: "Killing non-startable batch JobId=N: Job credential revoked")."""
    time.sleep(REQUEUE_SETTLE_S)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
