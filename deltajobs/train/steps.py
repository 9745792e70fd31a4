"""The training step behind one small interface, and the one place that chooses it.

    step, why_not_fused = make_step(config, model, core, optimizer, info, device)
    loss = step.step(x, y, share=1.0)  # one optimizer step on a batch; the mean loss, on device
    step.after_load()                # after loading model and optimizer state from a checkpoint

Two steps implement `Step`: `AutogradStep` (forward, backward, clip, optimizer; any model, any
setup) and the MLP's hand-derived `FusedMLPStep` (`fused_mlp.py`: no autograd graph, 1.45x the
steps per second on CPU, gradients equal to autograd's). The hand-derived step is the default
where it applies (one rank, no dropout, compile or bf16, the private torch APIs it needs as
checked) and `train.fused_step=false` turns it off; the loop calls whichever it is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from deltajobs.train.config import TrainConfig, uses_bf16
from deltajobs.train.distributed import DistInfo
from deltajobs.train.fused_mlp import FusedMLPStep, supports
from deltajobs.train.models.mlp import MLP
from deltajobs.train.optim import match_state_layout


class Step(Protocol):
    """One optimizer step on a batch, however it is computed."""

    @property
    def name(self) -> str:
        """What results.json's "step" says: "autograd" or "fused"."""
        ...

    def step(self, x: torch.Tensor, y: torch.Tensor, *, share: float = 1.0) -> torch.Tensor:
        """Train on x (B, ...) and y (B,); return the batch's mean loss, 0-dim, left on the device.

        `share` is this rank's part of the global batch times the world size: 1 unless the last
        batch splits unevenly over ranks (then the loss is weighted so DDP's mean is the global one).
        """
        ...

    def after_load(self) -> None:
        """Called once the model's and optimizer's state were loaded from a checkpoint, which
        may come from the other step: lay out or re-attach what the step keeps."""
        ...

    def describe(self) -> str | None:
        """What the first log line says about the step, or None when there is nothing to say."""
        ...


class AutogradStep:
    """Forward (autocast if bf16), cross-entropy plus the model's `aux_loss()`, backward, clip,
    optimizer step. `fallback` is why a faster step for this model was not taken, for the log."""

    name = "autograd"

    def __init__(
        self,
        model: nn.Module,  # what to call: maybe DDP-wrapped or compiled
        core: nn.Module,  # the plain model: its parameters and optional aux_loss hook
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        bf16: bool = False,  # forward in bf16 autocast
        grad_clip: float | None = None,
        fallback: str | None = None,
    ) -> None:
        self.model, self.optimizer, self.grad_clip, self.fallback = model, optimizer, grad_clip, fallback
        self.params = [p for p in core.parameters() if p.requires_grad]
        self.aux_loss: Callable[[], torch.Tensor] | None = getattr(core, "aux_loss", None)
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def describe(self) -> str | None:
        return None if self.fallback is None else f"autograd ({self.fallback})"

    def after_load(self) -> None:
        match_state_layout(self.optimizer)  # the checkpoint may come from the hand-derived step

    def step(self, x: torch.Tensor, y: torch.Tensor, *, share: float = 1.0) -> torch.Tensor:
        with self.autocast():
            loss = F.cross_entropy(self.model(x), y)  # logits (B, 10)
            objective = loss if self.aux_loss is None else loss + self.aux_loss()
        if share != 1:  # DDP averages gradients over ranks; weight uneven shards so that is the global mean
            objective = objective * share
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        return loss


def make_step(
    config: TrainConfig,
    model: nn.Module,
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    info: DistInfo,
    device: torch.device,
) -> tuple[Step, str | None]:
    """The step to train with, and why it is not the hand-derived one (None when it is).

    Building the hand-derived step lays the MLP's weights out input-major (same values, same
    Parameters) and binds the optimizer's state: call this after the optimizer is built.
    """
    bf16 = uses_bf16(config, device.type)
    why_not_fused = supports(config, core, info.enabled, bf16)
    if why_not_fused is None:
        assert isinstance(core, MLP)
        return FusedMLPStep(core, optimizer, config.batch_size, config.grad_clip), None
    fallback = why_not_fused if isinstance(core, MLP) else None  # only the MLP has a faster step to miss
    autograd = AutogradStep(
        model, core, optimizer, device=device, bf16=bf16, grad_clip=config.grad_clip, fallback=fallback
    )
    return autograd, why_not_fused
