"""Checkpoints: one plain dict in `checkpoint.pt`, written atomically (tmp file, then rename).

The dict holds everything that decides what happens next, so a resumed run continues exactly:

    version, config        the train config it was written with (checked on resume)
    model, optimizer, scheduler   their state_dicts
    rng                    torch's CPU (and CUDA) generator states: dropout draws the same masks
    shuffle                the data generator's state after drawing this epoch's permutation
    perm                   this epoch's permutation of the training set
    epoch, step            where to continue: epoch (0-based) and optimizer step within it
    loss_sum, seen         the epoch's running training-loss sum and example count so far
    best_val_loss, bad_epochs, stopped_early   early-stopping state
    history, train_seconds, eval_seconds       what the results report so far
    done                   True once training finished (a resume then only reports)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deltajobs.errors import DataError, SpecError
from deltajobs.injob.diskspace import writing
from deltajobs.osutil import atomic_writer

CHECKPOINT = "checkpoint.pt"
VERSION = 1
# Train-config keys that may differ between the run that wrote a checkpoint and the one resuming it.
RESUMABLE_CHANGES = {
    "data_root",
    "device",
    "threads",
    "compile",
    "fused_step",
    "checkpoint_every",
    "eval_batch_size",
    "tensorboard",
}


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically: a reader (or a requeued job) sees the old file or the new.

    A write that fails (a full filesystem, a quota) removes its tmp file, so the old checkpoint is
    all that stays and no half-written file keeps filling the disk; the failure is a DiskFullError
    naming PATH.tmp (ENOSPC/EDQUOT: the words the README shows) or the error as it came (anything
    else). Durable: on the parallel file systems of clusters, fsynced before the rename."""
    with writing(path.with_name(path.name + ".tmp")), atomic_writer(path, binary=True, durable=True) as handle:
        # torch.save into a Python file object: a failed write raises OSError with its errno
        # (given a path, torch's own writer reports only "unexpected pos", and no errno)
        torch.save(state, handle)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise DataError(
            f"{path} is not a readable deltajobs checkpoint ({err.__class__.__name__}); delete it to restart"
        ) from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise DataError(f"{path} is not a deltajobs checkpoint of version {VERSION}; delete it to restart")
    return state


def check_same_config(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A resumed run must train the same thing: any other difference is a SpecError naming the key."""
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES or saved.get(key) == current.get(key):
            continue
        raise SpecError(
            f"train.{key}",
            f"is {current.get(key)!r} but the checkpoint was written with {saved.get(key)!r}; "
            "resume with the same settings or start a new run directory",
        )
