"""Data parallelism across processes: who am I, the process group, and the few collectives we need.

The rank comes from torchrun (WORLD_SIZE, RANK, LOCAL_RANK) or from SLURM (SLURM_NTASKS,
SLURM_PROCID, SLURM_LOCALID under srun or submitit); the rendezvous address from MASTER_ADDR and
MASTER_PORT, which the rendered job script exports. One process per GPU (nccl) or per CPU task
(gloo). Every rank draws the same permutation and takes its slice of each global batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deltajobs.errors import DeltaJobsError

TEARDOWN_BARRIER_S = 60  # how long ranks that ended together wait for each other before tearing down


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info(env: dict[str, str] | None = None) -> DistInfo:
    """This process's place in the job, from torchrun's variables, else SLURM's, else alone."""
    env = dict(os.environ) if env is None else env
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return DistInfo(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), int(env["WORLD_SIZE"]))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return DistInfo(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), int(env["SLURM_NTASKS"]))
    return DistInfo()


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """auto: this rank's GPU if there is one, else the CPU."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from deltajobs.errors import SpecError

        raise SpecError("train.device", "cuda, but no GPU is visible to this process; use auto or cpu")
    return torch.device("cuda", info.local_rank % torch.cuda.device_count())


def init_distributed(info: DistInfo, device: torch.device) -> None:
    if not info.enabled or dist.is_initialized():
        return
    missing = [var for var in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(var)]
    if missing:
        raise DeltaJobsError(
            f"{info.world_size} ranks but {' and '.join(missing)} not set; the job script exports them "
            "(or launch with torchrun)"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
    )


def shutdown(together: bool = False) -> None:
    """Tear the process group down. `together`: every rank is here at the same point (training ended,
    or a stop all ranks agreed on, such as a full disk): meet at a barrier first, so that no rank (rank
    0 hosts the rendezvous store) exits and closes its connections while another is still tearing
    down or in its last collective: gloo's threads then end the late rank with SIGABRT ("terminate
    called without an active exception", seen in the suite under load, issue 24 section 7). Not after
    a rank's own error: the others would never reach the barrier (gloo's is bounded all the same)."""
    if not dist.is_initialized():
        return
    if together and dist.get_world_size() > 1:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=TEARDOWN_BARRIER_S))
            else:
                dist.barrier()
        except RuntimeError:  # a rank that never came: tear down anyway
            pass
    dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `tensor` over ranks in place (a no-op alone)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any: so all ranks stop at the same step."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(tensor, info).item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous part of a global batch of indices (sizes differ by at most one)."""
    if not info.enabled:
        return batch
    return torch.tensor_split(batch, info.world_size)[info.rank]
