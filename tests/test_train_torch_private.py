"""The private torch APIs behind the hand-derived step (deltajobs/train/torch_private.py), each
called on tiny tensors against a reference computation. A failure here names the API and the torch
version: the hand-derived step must not run on that torch until torch_private.py is updated."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from deltajobs.train import torch_private  # noqa: E402

pytestmark = pytest.mark.train
TORCH = f"torch {torch.__version__}"


def test_the_installed_torch_is_in_the_supported_range() -> None:
    low, high = torch_private.SUPPORTED_TORCH
    assert torch_private.in_supported_range(torch_private.torch_version()), (
        f"{TORCH} is outside the range deltajobs/train/torch_private.py was checked on "
        f"(>={low[0]}.{low[1]},<{high[0]}.{high[1]}): if the other tests here pass, widen SUPPORTED_TORCH "
        "and the train extra's torch pin in pyproject.toml together"
    )


def test_the_version_range_reads_major_and_minor() -> None:
    (low_major, low_minor), (high_major, high_minor) = torch_private.SUPPORTED_TORCH
    assert torch_private.in_supported_range((low_major, low_minor))
    assert torch_private.in_supported_range((high_major, high_minor - 1))
    assert not torch_private.in_supported_range((low_major, low_minor - 1))
    assert not torch_private.in_supported_range((high_major, high_minor))


@pytest.mark.parametrize("name", sorted(torch_private.SCHEMAS))
def test_each_private_op_has_the_checked_schema(name: str) -> None:
    problem = torch_private.schema_problem(name)
    assert problem is None, f"{problem}; the hand-derived step expected {torch_private.SCHEMAS[name]}"


@pytest.mark.parametrize("decoupled", [False, True], ids=["_fused_adam_", "_fused_adamw_"])
def test_fused_adam_kernel_matches_adam_by_hand(decoupled: bool) -> None:
    api = "torch._fused_adamw_" if decoupled else "torch._fused_adam_"
    assert torch_private.has_fused_adam(decoupled), f"{TORCH} lacks {api}"
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,)]  # a weight and a bias
    values = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [torch.zeros(shape) for shape in shapes]
    exp_avgs, exp_avg_sqs = [torch.zeros(shape) for shape in shapes], [torch.zeros(shape) for shape in shapes]
    steps = [torch.zeros((), dtype=torch.float32) for _ in shapes]
    group = {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.05}
    update = torch_private.fused_adam_closure(group, decoupled, values, grads, exp_avgs, exp_avg_sqs, steps)
    # the reference, in float64: Adam folds weight decay into the gradient, AdamW into the weight
    expected = [v.double() for v in values]
    moments = [(torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)) for shape in shapes]
    lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    for t in range(1, 4):
        group["lr"] = lr = 0.1 / t  # the closure reads lr on every call, as a scheduler changes it
        for grad in grads:
            grad.copy_(torch.randn(grad.shape, generator=generator))
        update()
        for i, (m, v) in enumerate(moments):
            g = grads[i].double() + (0.0 if decoupled else decay * expected[i])
            if decoupled:
                expected[i] = expected[i] * (1 - lr * decay)
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denominator = (v / (1 - beta2**t)).sqrt() + eps
            expected[i] = expected[i] - lr / (1 - beta1**t) * m / denominator
    assert [step.item() for step in steps] == [3.0, 3.0], f"{TORCH}: {api} closure counts steps wrongly"
    for i, (value, want) in enumerate(zip(values, expected, strict=True)):
        assert torch.allclose(value.double(), want, rtol=1e-5, atol=1e-6), f"{TORCH}: {api} updates tensor {i} wrongly"
        assert torch.allclose(exp_avgs[i].double(), moments[i][0], rtol=1e-5, atol=1e-7), f"{TORCH}: {api} exp_avg"
        assert torch.allclose(exp_avg_sqs[i].double(), moments[i][1], rtol=1e-5, atol=1e-9), (
            f"{TORCH}: {api} exp_avg_sq"
        )


def test_relu_backward_zeroes_the_gradient_where_the_activation_was_not_positive() -> None:
    activation = torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, 0.25]])  # a ReLU's output (B, width)
    grad = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, 6.0]])
    expected = torch.where(activation > 0, grad, torch.zeros(()))
    storage = grad.data_ptr()
    torch_private.relu_backward_(grad, activation)
    assert grad.data_ptr() == storage, (
        f"{TORCH}: torch.ops.aten.threshold_backward.grad_input no longer writes in place"
    )
    assert torch.equal(grad, expected), f"{TORCH}: torch.ops.aten.threshold_backward.grad_input computes {grad}"


def test_initial_adam_state_is_the_one_torch_creates() -> None:
    # the hand-derived step creates Adam's state itself: it must be what AdamW's fused step
    # creates, so a checkpoint from either step loads into the other
    weight = torch.nn.Parameter(torch.randn(4, 3).t().contiguous().t())  # input-major, as the step lays it out
    ours, theirs = torch.optim.AdamW([weight], fused=True), torch.optim.AdamW([weight], fused=True)
    weight.grad = torch.zeros_like(weight)
    theirs.step()
    torch_private.init_adam_state(ours, [weight])
    made, want = ours.state[weight], theirs.state[weight]
    assert sorted(made) == sorted(want), f"{TORCH}: Adam's state now holds {sorted(want)}"
    for key, value in want.items():
        assert (made[key].dtype, made[key].shape, made[key].device) == (value.dtype, value.shape, value.device), (
            f"{TORCH}: Adam's state[{key!r}] is now {value.dtype} {tuple(value.shape)} on {value.device}"
        )
        assert made[key].stride() == value.stride(), f"{TORCH}: Adam's state[{key!r}] is now laid out {value.stride()}"


def test_marking_the_optimizer_stepped_is_what_lr_schedulers_read() -> None:
    def scheduler_warnings(mark: bool) -> list[str]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        if mark:
            torch_private.mark_stepped(optimizer)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scheduler.step()
        return [str(warning.message) for warning in caught if "optimizer.step()" in str(warning.message)]

    assert scheduler_warnings(mark=False), f"{TORCH}: LR schedulers no longer warn when run before the optimizer"
    assert not scheduler_warnings(mark=True), f"{TORCH}: LR schedulers no longer read Optimizer._opt_called"
