"""What past jobs say of the next one: `spec_key` groups the jobs that run alike, `typical_elapsed`
is their median runtime (charge estimates use it; sweep layouts `median_elapsed` over several
keys). The rows live in store.py, which this module reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from deltajobs.registry.store import Registry, db_path
from deltajobs.spec.settings import Settings


def spec_key(resolved: Any) -> str:
    """Jobs with the same cluster, resources and payload (training config, or script with its
    arguments) share a key (for typical runtimes)."""
    spec = resolved.spec.to_dict()
    # The walltime limit, requeue settings and data location do not change how long a job runs.
    resources = {k: v for k, v in spec["resources"].items() if k not in ("time", "max_requeues", "signal_grace")}
    payload = {"cluster": resolved.profile.name, "resources": resources}
    if "train" in spec:
        payload["train"] = {k: v for k, v in spec["train"].items() if k != "data_root"}
    else:
        payload["run"] = {k: v for k, v in spec["run"].items() if k not in ("workdir", "snapshot", "code_from")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def typical_elapsed(settings: Settings, resolved: Any) -> float | None:
    """Median elapsed seconds of the completed jobs with the same spec key as `resolved`, if any ran."""
    path = db_path(settings)
    if not path.exists():
        return None
    with Registry(path) as registry:
        return median_elapsed(registry, [spec_key(resolved)])


def median_elapsed(registry: Registry, keys: Iterable[str]) -> float | None:
    """Median elapsed seconds of the completed jobs under any of the spec `keys`, if any ran."""
    values = sorted(value for key in dict.fromkeys(keys) for value in registry.history_elapsed(key))
    if not values:
        return None
    mid = len(values) // 2
    return float(values[mid]) if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
