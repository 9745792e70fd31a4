"""The packaged trainer as a payload: each task runs `trainer_job.TrainJob` on the spec's `train:`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltajobs.errors import SpecError
from deltajobs.payloads.base import Payload


class TrainerPayload(Payload):
    kind = "train"
    requeue_from_batch = False

    def describe(self) -> str:
        train = self.job.spec.train
        return f"the packaged trainer: {train.model} on {train.dataset}, {train.epochs} epochs"

    def task(self, run_dir: Path) -> Callable[[], Any]:
        from deltajobs.payloads.trainer_job import TrainJob

        return TrainJob.of(self.job, run_dir)

    def bind_paths(self, run_dir: Path) -> list[str]:
        root = self.job.spec.train.data_root
        return [str(Path(root).expanduser())] if root else []

    def sweep_key(self, key: str) -> str:
        key = key if "." in key else f"train.{key}"
        if not key.startswith("train."):
            raise SpecError(
                key, "only train.* keys can be swept (resources are shared by the array); e.g. train.lr=1e-3,3e-3"
            )
        return key
