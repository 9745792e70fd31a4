"""Which task of the job this process is: the one rank helper (stdlib only).

    task_ranks()    # TaskRanks(rank, local_rank, world_size, local_world_size)
    global_rank()   # task_ranks().rank: 0 writes the run's files, the others only compute

Where from, the first that is set:
    RANK LOCAL_RANK WORLD_SIZE LOCAL_WORLD_SIZE   torchrun's, or what the task wrapper gave the program
    SLURM_PROCID SLURM_LOCALID SLURM_NTASKS SLURM_NNODES   srun's task (submitit's SLURM jobs too)
    SUBMITIT_LOCAL_GLOBALID _LOCALID _NTASKS     submitit's local executor
and else a job of one task: (0, 0, 1, 1). A variable that is not a number counts as unset. A
launcher's RANK wins over SLURM's: under `torchrun` on one node every process has SLURM_PROCID 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskRanks:
    rank: int = 0  # RANK: this process among all of the job's
    local_rank: int = 0  # LOCAL_RANK: among those on this node
    world_size: int = 1  # WORLD_SIZE
    local_world_size: int = 1  # LOCAL_WORLD_SIZE: processes on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def as_env(self) -> dict[str, str]:
        """As torchrun sets them, for a program the wrapper starts."""
        return {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
        }


def task_ranks(env: Mapping[str, str] | None = None) -> TaskRanks:
    """This process's ranks, from `env` (default: this process's environment)."""
    env = os.environ if env is None else env
    found = _scheduler_ranks(env)
    rank = _number(env, "RANK")
    if rank is None:
        return found
    world = _number(env, "WORLD_SIZE")
    return TaskRanks(
        rank,
        _int(env, "LOCAL_RANK", found.local_rank),
        found.world_size if world is None else world,
        _int(env, "LOCAL_WORLD_SIZE", found.local_world_size if world is None else world),
    )


def global_rank(env: Mapping[str, str] | None = None) -> int:
    """RANK, else SLURM_PROCID, else SUBMITIT_LOCAL_GLOBALID, else 0."""
    return task_ranks(env).rank


def _scheduler_ranks(env: Mapping[str, str]) -> TaskRanks:
    """What SLURM (or submitit's local executor) says of this task."""
    procid = _number(env, "SLURM_PROCID")
    if procid is not None:
        world = _int(env, "SLURM_NTASKS", 1)
        nodes = _int(env, "SLURM_NNODES", _int(env, "SLURM_JOB_NUM_NODES", 1))
        return TaskRanks(procid, _int(env, "SLURM_LOCALID", 0), world, max(1, world // max(1, nodes)))
    globalid = _number(env, "SUBMITIT_LOCAL_GLOBALID")
    if globalid is not None:
        world = _int(env, "SUBMITIT_LOCAL_NTASKS", 1)
        return TaskRanks(globalid, _int(env, "SUBMITIT_LOCAL_LOCALID", 0), world, world)
    return TaskRanks()


def _number(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "")
    return int(value) if value.isdigit() else None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    found = _number(env, name)
    return default if found is None else found
