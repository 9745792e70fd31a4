"""Optimizers and learning-rate schedules.

A schedule is a pure function `lr_at(step, total_steps, config)`, easy to test and to plot; a
`LambdaLR` applies it once per optimizer step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deltajobs.errors import SpecError
from deltajobs.train.config import TrainConfig

WARMUP_SCHEDULES = ("warmup_cosine", "onecycle")
ONECYCLE_DIV = 25.0  # onecycle starts at lr / 25 (torch's OneCycleLR default)
ONECYCLE_FINAL_DIV = 1e4  # and ends at lr / 25 / 1e4 unless min_lr is set


def check_optim(config: TrainConfig) -> None:
    """Reject combinations the schema cannot see; names the field."""
    if config.nesterov and (config.optimizer != "sgd" or config.momentum == 0):
        raise SpecError("train.nesterov", "needs optimizer sgd with momentum > 0")
    if len(config.betas) != 2 or not all(0.0 <= b < 1.0 for b in config.betas):
        raise SpecError("train.betas", f"{config.betas} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
    if config.warmup_steps and config.schedule not in WARMUP_SCHEDULES:
        raise SpecError(
            "train.warmup_steps", f"is used by {' and '.join(WARMUP_SCHEDULES)} only, not {config.schedule}"
        )
    if config.min_lr > config.lr:
        raise SpecError("train.min_lr", f"{config.min_lr:g} is above train.lr {config.lr:g}")


def warmup_steps(total_steps: int, config: TrainConfig) -> int:
    """warmup_steps, or by default 5% of training (warmup_cosine) or 30% (onecycle, as OneCycleLR)."""
    if config.warmup_steps:
        return config.warmup_steps
    return max(1, round((0.3 if config.schedule == "onecycle" else 0.05) * total_steps))


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """The learning rate for optimizer step `step` (0-based) of `total_steps`.

    constant       lr
    step           lr * gamma ** (step // step_size)
    exponential    lr * gamma ** (step / step_size)      (smooth: x gamma every step_size steps)
    inverse_time   lr / (1 + decay_rate * step)
    cosine         min_lr + (lr - min_lr) * (1 + cos(pi * step / total)) / 2
    warmup_cosine  lr * (step + 1) / warmup for step < warmup, then cosine from lr to min_lr over
                   the remaining total - warmup steps
    onecycle       linear from lr/25 up to lr over warmup steps, then cosine down to min_lr
                   (or lr/25/1e4 if min_lr is 0)
    """
    lr, schedule = config.lr, config.schedule
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * config.gamma ** (step // config.step_size)
    if schedule == "exponential":
        return lr * config.gamma ** (step / config.step_size)
    if schedule == "inverse_time":
        return lr / (1.0 + config.decay_rate * step)
    if schedule == "cosine":
        return cosine(step, total_steps, lr, config.min_lr)
    warmup = warmup_steps(total_steps, config)
    if schedule == "warmup_cosine":
        if step < warmup:
            return lr * (step + 1) / warmup
        return cosine(step - warmup, total_steps - warmup, lr, config.min_lr)
    if schedule == "onecycle":
        start = lr / ONECYCLE_DIV
        if step < warmup:
            return start + (lr - start) * step / warmup
        end = config.min_lr or start / ONECYCLE_FINAL_DIV
        return cosine(step - warmup, total_steps - warmup, lr, end)
    raise SpecError("train.schedule", f"{schedule!r} is unknown")


def cosine(step: int, steps: int, high: float, low: float) -> float:
    progress = min(1.0, step / max(1, steps))
    return low + (high - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over all of `model`'s parameters, as torch defines it: weight_decay is
    decoupled for adamw and an L2 term in the gradient for sgd, rmsprop and adam.

    adam/adamw use the fused kernel (one kernel for all tensors; CPU since torch 2.4): on a batch-64
    MLP the optimizer is a third of a step, and fused is twice as fast as foreach there.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    lr, decay, name = config.lr, config.weight_decay, config.optimizer
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay, foreach=True
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=decay, foreach=True)
    if name not in ("adam", "adamw"):
        raise SpecError("train.optimizer", f"{name!r} is unknown; choose one of: sgd, rmsprop, adam, adamw")
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    betas = (config.betas[0], config.betas[1])
    try:
        return cls(params, lr=lr, betas=betas, weight_decay=decay, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):  # an older torch without the fused kernel for this device
        return cls(params, lr=lr, betas=betas, weight_decay=decay, foreach=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    if config.schedule in WARMUP_SCHEDULES and config.warmup_steps >= total_steps:
        raise SpecError("train.warmup_steps", f"{config.warmup_steps} >= the {total_steps} steps of the whole run")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, total_steps, config) / config.lr)


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (exp_avg, momentum_buffer, ...) its parameter's strides.

    Needed after `load_state_dict` when the checkpoint's layout differs from the parameters' (the
    MLP's hand-derived step stores weights input-major; a resume may take the autograd path, or the
    reverse): torch's fused Adam kernels walk the raw storage and silently compute wrong updates when
    a parameter and its moments are laid out differently (seen on torch 2.13 and 2.14).
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
