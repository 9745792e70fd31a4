"""Data parallelism: two CPU processes with gloo train like one process with the same global batch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from deltajobs.osutil import free_port  # noqa: E402
from deltajobs.train.api import run_training  # noqa: E402
from deltajobs.train.config import TrainConfig  # noqa: E402
from deltajobs.train.distributed import DistInfo, dist_info, shard  # noqa: E402
from deltajobs.train.loop import steps_per_epoch  # noqa: E402

pytestmark = pytest.mark.train


def test_rank_from_torchrun_or_slurm_or_alone() -> None:
    assert dist_info({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == DistInfo(3, 1, 4)
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
    assert dist_info(slurm) == DistInfo(5, 1, 8)
    assert dist_info({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == DistInfo()
    assert dist_info({}) == DistInfo() and not DistInfo().enabled


def test_shards_cover_the_global_batch() -> None:
    batch = torch.arange(7)
    parts = [shard(batch, DistInfo(rank, 0, 2)) for rank in range(2)]
    assert torch.equal(torch.cat(parts), batch) and [len(p) for p in parts] == [4, 3]
    assert steps_per_epoch(65, 32, 1) == 3 and steps_per_epoch(65, 32, 2) == 2  # 1 left: not enough for 2 ranks


def _worker(rank: int, world_size: int, port: int, config: dict[str, Any], run_dir: str) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size), "RANK": str(rank)}
    )
    os.environ["LOCAL_RANK"] = str(rank)
    run_training(TrainConfig(**config), Path(run_dir), log=lambda line: None)


def test_two_gloo_ranks_match_one_process(tiny_mnist: Path, tmp_path: Path) -> None:
    config = {
        "data_root": str(tiny_mnist), "val_size": 100, "batch_size": 33, "epochs": 2, "threads": 1,
        "device": "cpu", "lr": 3e-3,
    }  # fmt: skip  # 33: the ranks get uneven shards of 17 and 16
    single = run_training(TrainConfig(**config), tmp_path / "single", log=lambda line: None)
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), config, str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["status"] == "completed"
    for one, two in zip(single["history"], ddp["history"], strict=True):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert two[key] == pytest.approx(one[key], rel=1e-4), key
        for key in ("val_acc", "test_acc"):
            assert two[key] == pytest.approx(one[key], abs=0.011), key
