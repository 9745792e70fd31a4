"""What there is to run, and where: the job specs in jobs/, the trainer's models and a cluster's
partitions, as `deltajobs list` shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltajobs.clusters.profile import load_profile
from deltajobs.spec.context import active_cluster
from deltajobs.spec.resolve import find_job, job_names, read_job
from deltajobs.spec.settings import Settings
from deltajobs.train.config import MODEL_NAMES


@dataclass(frozen=True)
class Catalogue:
    cluster: str
    jobs: list[dict[str, Any]]  # job, model, description
    models: list[str]
    partitions: list[dict[str, Any]]  # partition, kind, gpus, cpus, mem_gb, max_time, ..., default

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "jobs": self.jobs, "models": self.models, "partitions": self.partitions}


def catalogue(settings: Settings, cluster: str | None = None) -> Catalogue:
    """The job specs, the models and the partitions of `cluster` (else the active cluster)."""
    profile = load_profile(active_cluster(settings, cluster))
    jobs = []
    for name in job_names():
        raw = read_job(find_job(name))
        train = raw.get("train") or {}
        jobs.append({"job": name, "model": train.get("model", "mlp"), "description": raw.get("description", "")})
    partitions = [
        {
            "partition": p.name,
            "kind": p.kind,
            "gpus": p.gpus,
            "cpus": p.cpus,
            "mem_gb": p.mem_gb,
            "max_time": p.max_time,
            "charge_factor": p.charge_factor,
            "gpu_type": p.gpu_type,
            "interactive": p.interactive,
            "preempt": p.preempt,
            "default": p.name == profile.default_partition,
        }
        for p in profile.partitions.values()
    ]
    return Catalogue(profile.name, jobs, list(MODEL_NAMES), partitions)
