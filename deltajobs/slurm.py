"""SLURM commands: argv builders and pure parsers for sbatch/squeue/sacct/scancel/scontrol.

Every command goes through `run()`, the single process seam that unit tests replace.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from deltajobs.errors import SlurmError

DEFAULT_TIMEOUT = 30.0


def run(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, input_text: str | None = None) -> str:
    """Run a SLURM command and return its stdout; raise SlurmError with its stderr otherwise."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input_text, check=False
        )
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is SLURM installed here? (use --local to run on this machine)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer within {timeout:g}s: is slurmctld up?") from None
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        detail = message[-1] if message else f"exit code {proc.returncode}"
        raise SlurmError(f"{argv[0]} failed: {detail}")
    return proc.stdout


def parse_config_value(text: str, key: str) -> str | None:
    """A value from `scontrol show config` output (`Key = value` lines)."""
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def cluster_name() -> str | None:
    return parse_config_value(run(["scontrol", "show", "config"], timeout=5.0), "ClusterName")
