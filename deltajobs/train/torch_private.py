"""Every private torch API the trainer uses, in one module, with the torch versions it was checked on.

Only the MLP's hand-derived step (`fused_mlp.py`) needs them; the autograd step uses public torch:

    torch._fused_adam_, torch._fused_adamw_   the one-kernel Adam(W) update that `torch.optim` runs
                                              with fused=True, called directly (saves ~40 us of
                                              Python per step)
    torch.ops.aten.threshold_backward         ReLU's backward written into a buffer (`out=` form)
    Adam's per-parameter state                what `Adam._init_group` puts in `optimizer.state[p]`
                                              (so checkpoints load into either step)
    Optimizer._opt_called                     the flag an LR scheduler reads before warning that
                                              it stepped before the optimizer did

Supported: torch >= 2.13 and < 2.15, the versions checked (2.13.0, 2.14.1). Checked means
`tests/test_train_torch_private.py` passes: it calls each API on tiny tensors against a reference
computation and fails naming the API and the torch version. At run time each op's schema is
compared with the one below, so a torch that changed one trains with autograd (the first log line
says why) rather than failing mid-job. To support another torch: run that test on it, then move
`SUPPORTED_TORCH` and the `train` extra's pin in pyproject.toml together.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch

SUPPORTED_TORCH = ((2, 13), (2, 15))  # (major, minor): at least the first, below the second

# The schemas these ops had when checked (`str(op._schema)`); the two Adam kernels share one.
ADAM_ARGS = (
    "(Tensor(a!)[] self, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, Tensor(d!)[] exp_avg_sqs, "
    "Tensor(e!)[] max_exp_avg_sqs, Tensor[] state_steps, *, float lr, float beta1, float beta2, "
    "float weight_decay, float eps, bool amsgrad, bool maximize, Tensor? grad_scale=None, "
    "Tensor? found_inf=None) -> ()"
)
SCHEMAS = {
    "_fused_adam_": "aten::_fused_adam_" + ADAM_ARGS,
    "_fused_adamw_": "aten::_fused_adamw_" + ADAM_ARGS,
    "threshold_backward.grad_input": "aten::threshold_backward.grad_input"
    "(Tensor grad_output, Tensor self, Scalar threshold, *, Tensor(a!) grad_input) -> Tensor(a!)",
}


def torch_version() -> tuple[int, int]:
    """(major, minor) of the installed torch: "2.14.1+cu130" -> (2, 14)."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def in_supported_range(version: tuple[int, int]) -> bool:
    low, high = SUPPORTED_TORCH
    return low <= version < high


@cache
def schema_problem(name: str) -> str | None:
    """Why aten op `name` ("_fused_adamw_", "threshold_backward.grad_input") cannot be relied on
    in this torch: missing, or a schema other than the checked one; None when it matches."""
    packet, _, overload = name.partition(".")
    try:
        op = getattr(getattr(torch.ops.aten, packet), overload or "default")
    except (AttributeError, RuntimeError):
        return f"torch {torch.__version__} has no torch.ops.aten.{name}"
    if str(op._schema) != SCHEMAS[name]:
        return f"torch {torch.__version__} changed torch.ops.aten.{name} to {op._schema}"
    return None


def relu_backward_(grad: torch.Tensor, activation: torch.Tensor) -> None:
    """grad *= (activation > 0), in place: ReLU's backward given its output (B, width) each."""
    torch.ops.aten.threshold_backward.grad_input(grad, activation, 0, grad_input=grad)


def init_adam_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Give each parameter without state the state a fused Adam(W) creates on its first step (a
    float32 0-dim `step` on the parameter's device; moments shaped and strided like it)."""
    for p in params:
        state = optimizer.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def has_fused_adam(decoupled: bool) -> bool:
    """Whether this torch has the checked fused Adam (or AdamW if `decoupled`) kernel."""
    return schema_problem("_fused_adamw_" if decoupled else "_fused_adam_") is None


def fused_adam_closure(
    group: dict[str, Any],
    decoupled: bool,
    values: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
) -> Callable[[], None]:
    """`update()`: one Adam (or AdamW if `decoupled`) step of `values` as `torch.optim`'s fused
    path does it, reading lr, eps and weight_decay from the param `group` on each call; check
    `has_fused_adam` first. The kernel walks raw storage, ignoring strides: every tensor must be
    contiguous, each laid out like its value's. `steps` are the 0-dim float32 step counts."""
    kernel = getattr(torch, "_fused_adamw_" if decoupled else "_fused_adam_")
    one = torch.ones((), device=values[0].device)
    beta1, beta2 = (float(beta) for beta in group["betas"])

    def update() -> None:
        for step in steps:
            step.add_(one)
        kernel(
            values, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
            beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None,
            found_inf=None,
        )  # fmt: skip

    return update


def mark_stepped(optimizer: torch.optim.Optimizer) -> None:
    """Record what `optimizer.step()` would: an LR scheduler otherwise warns that it ran first."""
    optimizer._opt_called = True  # type: ignore[attr-defined]
