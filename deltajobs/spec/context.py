"""Choices that depend on the machine: which cluster profile is active, where a run goes."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from pathlib import Path

from deltajobs.clusters.profile import load_profile, profile_for_cluster_name
from deltajobs.errors import DeltaJobsError
from deltajobs.spec.settings import Settings

DEFAULT_CLUSTER = "delta"


def active_cluster(settings: Settings, flag: str | None = None) -> str:
    """--cluster > DELTAJOBS_CLUSTER/config > the reachable SLURM's ClusterName > delta."""
    name = flag or settings.cluster or detect_cluster() or DEFAULT_CLUSTER
    load_profile(name)  # unknown names fail here, listing the profiles
    return name


def detect_cluster() -> str | None:
    """The profile matching the ClusterName of the SLURM on this machine, if one answers."""
    if shutil.which("scontrol") is None:
        return None
    from deltajobs.slurm import commands as slurm

    try:
        name = slurm.cluster_name()
    except DeltaJobsError:
        return None
    return profile_for_cluster_name(name) if name else None


def new_run_dir(settings: Settings, job_name: str) -> Path:
    """A fresh, sortable run directory path (not created)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (settings.runs_path / f"{job_name}-{stamp}-{secrets.token_hex(2)}").absolute()
