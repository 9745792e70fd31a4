"""The MLP's training step derived by hand: forward, cross-entropy, backward and the optimizer
on buffers allocated once, with no autograd graph. A `deltajobs.train.steps.Step`, chosen by
`make_step` there; `train.fused_step=false` turns it off.

Why: at batch 64 on two CPU cores the MLP's matrix products take ~0.5 ms a step, and autograd plus
`torch.optim` add ~0.4 ms of bookkeeping around them (a graph of ~20 nodes, fresh gradient tensors
every step, the optimizer's Python). This step does the same mathematics in ~25 tensor ops, 1.45x
the steps per second (BENCHMARKS.md). Gradients land in each parameter's `.grad`, as after
`backward()`, so clipping and any torch optimizer work unchanged; Adam/AdamW with the fused kernel
are called directly (the kernel `torch.optim` itself calls, minus ~40 us of Python per step), and
the optimizer's state stays torch's own, so checkpoints are interchangeable with the autograd step.
The private torch APIs this needs are reached through `torch_private.py` only.

For hidden layers h_i = relu(h_{i-1} W_i^T + b_i) and logits z, with p = softmax(z) and the batch
mean of -log p[y] as the loss, the backward pass is
    dz = (p - onehot(y)) / B
    dW_i = d_i^T h_{i-1},   db_i = sum_batch d_i,   d_{i-1} = (d_i W_i) * [h_{i-1} > 0]
`tests/test_train_fused.py` checks it against autograd step by step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deltajobs.train import torch_private
from deltajobs.train.config import TrainConfig
from deltajobs.train.models.mlp import MLP
from deltajobs.train.optim import match_state_layout


def supports(config: TrainConfig, core: nn.Module, distributed: bool, bf16: bool) -> str | None:
    """Why the hand-derived step cannot train this setup, or None when it can."""
    if not config.fused_step:
        return "train.fused_step is false"
    if not isinstance(core, MLP):
        return f"model {config.model} is not mlp"
    if any(isinstance(module, nn.Dropout) for module in core.modules()):
        return "dropout"
    if config.compile:
        return "train.compile"
    if distributed:
        return "several ranks (DDP)"
    if bf16:
        return "bf16 autocast"
    return torch_private.schema_problem("threshold_backward.grad_input")


class FusedMLPStep:
    """`step(x, y) -> mean loss` for one batch: one optimizer step of `mlp` with `optimizer`.

    It stores each weight input-major (`weight.t()` contiguous; the values and `state_dict()` keys
    are unchanged): the weight gradient x^T d then lands straight in `weight.grad.t()`, a product
    MKL runs faster than d^T x; steps are 1.2x faster than with row-major weights. `after_load()`
    re-binds the optimizer's state, which loading a checkpoint replaces.
    """

    name = "fused"  # results.json's "step"

    def __init__(
        self, mlp: MLP, optimizer: torch.optim.Optimizer, max_batch: int, grad_clip: float | None = None
    ) -> None:
        self.linears = [module for module in mlp.modules() if isinstance(module, nn.Linear)]
        self.optimizer, self.max_batch, self.grad_clip = optimizer, max_batch, grad_clip
        for linear in self.linears:
            linear.weight.data = linear.weight.data.t().contiguous().t()  # input-major, same Parameter
        device = self.linears[0].weight.device
        widths = [linear.out_features for linear in self.linears]
        # activations after each layer (post-ReLU for hidden ones, log-probabilities for the last)
        self.acts = [torch.empty(max_batch, width, device=device) for width in widths]  # (B, width_i)
        self.deltas = [torch.empty(max_batch, width, device=device) for width in widths]  # dLoss/d(pre-activation)
        self.picked = torch.empty(max_batch, 1, device=device)  # (B, 1) log p[y]
        self.minus_one = torch.full((max_batch, 1), -1.0, device=device)
        self.params = [p for linear in self.linears for p in (linear.weight, linear.bias)]
        self.update: Callable[[], None] = optimizer.step
        self.bind()

    def describe(self) -> str:
        return "hand-derived step"

    def after_load(self) -> None:
        self.bind()

    def bind(self) -> None:
        """(Re)attach gradient buffers and the optimizer's state, laid out like the parameters: at
        the start and after loading a checkpoint (which replaces the optimizer's state tensors)."""
        for p in self.params:
            if p.grad is None or p.grad.stride() != p.stride():
                p.grad = torch.zeros_like(p)  # zeros_like keeps p's strides
        match_state_layout(self.optimizer)  # the checkpoint may come from the autograd step
        direct = fused_adam_update(self.optimizer, self.params)
        if direct is not None:  # what optimizer.step() marks, else the LR scheduler warns it never ran
            torch_private.mark_stepped(self.optimizer)
        self.update = direct or self.optimizer.step
        # per layer: bias, weight^T (in, out) and weight (out, in) to multiply by, grad^T and bias grad to write
        self.layers = [
            (linear.bias, linear.weight.t(), linear.weight, linear.weight.grad.t(), linear.bias.grad)  # type: ignore[union-attr]
            for linear in self.linears
        ]

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, *, share: float = 1.0) -> torch.Tensor:
        """Forward, backward, (clip), update on x (B, 1, 28, 28) and y (B,); the mean loss, 0-dim.
        `share` is always 1: this step trains on one rank only (see `supports`)."""
        b = x.shape[0]
        inputs = x.reshape(b, -1)  # (B, 784)
        acts, deltas, picked, minus_one = self.acts, self.deltas, self.picked, self.minus_one
        if b != self.max_batch:  # the last, short batch of an epoch
            acts, deltas, picked, minus_one = [a[:b] for a in acts], [d[:b] for d in deltas], picked[:b], minus_one[:b]
        last = len(self.layers) - 1
        for i, (bias, weight_t, _, _, _) in enumerate(self.layers):
            torch.addmm(bias, inputs if i == 0 else acts[i - 1], weight_t, out=acts[i])
            if i < last:
                acts[i].relu_()
        logp = torch.log_softmax(acts[last], dim=1, out=acts[last])  # (B, 10), in place
        labels = y.view(b, 1)
        loss = torch.gather(logp, 1, labels, out=picked).sum().div_(-b)
        delta = torch.exp(logp, out=deltas[last])  # softmax
        delta.scatter_add_(1, labels, minus_one).div_(b)  # (p - onehot(y)) / B
        for i in range(last, -1, -1):
            _, _, weight, grad_t, bias_grad = self.layers[i]
            previous = inputs if i == 0 else acts[i - 1]
            torch.mm(previous.t(), deltas[i], out=grad_t)  # dW^T = h^T d, straight into weight.grad
            torch.sum(deltas[i], dim=0, out=bias_grad)
            if i > 0:
                torch.mm(deltas[i], weight, out=deltas[i - 1])
                torch_private.relu_backward_(deltas[i - 1], previous)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.update()
        return loss


def fused_adam_update(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> Callable[[], None] | None:
    """A closure running `optimizer.step()`'s arithmetic for a fused Adam/AdamW over `params`
    (whose `.grad` buffers never change), or None for any other optimizer or setting.

    It is what `torch.optim.adam._fused_adam` does, with the per-call grouping and checks done once;
    the state is initialised as `Adam._init_group` would, so `state_dict()` is the optimizer's own.
    """
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if not group.get("fused") or group["amsgrad"] or group["maximize"] or group["differentiable"]:
        return None
    if [id(p) for p in group["params"]] != [id(p) for p in params]:
        return None
    decoupled = isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))
    if not torch_private.has_fused_adam(decoupled) or any(p.grad is None for p in params):
        return None
    torch_private.init_adam_state(optimizer, params)
    states = [optimizer.state[p] for p in params]
    quads = [(p, p.grad, state["exp_avg"], state["exp_avg_sq"]) for p, state in zip(params, states, strict=True)]
    if not all(same_layout(*quad) for quad in quads):  # type: ignore[arg-type]  # (no grad is None)
        return None
    # the kernel walks raw storage: hand it the contiguous view of each (maybe input-major) tensor
    values, grads, exp_avgs, exp_avg_sqs = ([flat(t) for t in column] for column in zip(*quads, strict=True))
    steps = [state["step"] for state in states]
    return torch_private.fused_adam_closure(group, decoupled, values, grads, exp_avgs, exp_avg_sqs, steps)


def same_layout(*tensors: torch.Tensor) -> bool:
    return len({(t.shape, t.stride()) for t in tensors}) == 1


def flat(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` itself, or its transpose where that is the contiguous one (an input-major weight)."""
    if tensor.is_contiguous() or tensor.dim() != 2 or not tensor.t().is_contiguous():
        return tensor
    return tensor.t()
