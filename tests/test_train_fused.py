"""The MLP's hand-derived training step against autograd: gradients, optimizer steps, whole runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from deltajobs.train.api import run_training  # noqa: E402
from deltajobs.train.config import TrainConfig  # noqa: E402
from deltajobs.train.fused_mlp import FusedMLPStep, fused_adam_update, supports  # noqa: E402
from deltajobs.train.models import build_model  # noqa: E402
from deltajobs.train.models.mlp import MLP, MLPConfig  # noqa: E402
from deltajobs.train.optim import build_optimizer, match_state_layout  # noqa: E402

pytestmark = pytest.mark.train
CPU = torch.device("cpu")


def batches(n: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 1, 28, 28, generator=generator), torch.randint(0, 10, (size,), generator=generator))
        for _ in range(n)
    ]


def autograd_step(model: MLP, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, clip: Any) -> float:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip, foreach=True)
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("hidden", [[256, 128], [], [32, 16, 8]])
@pytest.mark.parametrize("size", [64, 7])
def test_gradients_equal_autograd(hidden: list[int], size: int) -> None:
    torch.manual_seed(0)
    model = MLP(MLPConfig(hidden=hidden))
    twin = copy.deepcopy(model)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # leaves the weights, keeps the gradients
    step = FusedMLPStep(model, frozen, max_batch=64)
    (x, y) = batches(1, size)[0]
    loss = step.step(x, y)
    expected = F.cross_entropy(twin(x), y)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        assert ours.grad is not None and theirs.grad is not None
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "adamw", "weight_decay": 0.05},
        {"optimizer": "adam", "weight_decay": 0.01, "grad_clip": 0.5},
        {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.01},
        {"optimizer": "rmsprop", "lr": 1e-3, "grad_clip": 1.0},
    ],
)
def test_optimizer_steps_track_autograd(settings: dict[str, Any]) -> None:
    config = TrainConfig(**settings)
    torch.manual_seed(0)
    model = build_model(config)
    twin = copy.deepcopy(model)
    optimizer, twin_optimizer = build_optimizer(model, config, CPU), build_optimizer(twin, config, CPU)
    step = FusedMLPStep(model, optimizer, max_batch=32, grad_clip=config.grad_clip)
    direct = config.optimizer in ("adam", "adamw")
    assert (step.update != optimizer.step) == direct  # Adam(W) calls the fused kernel itself
    for x, y in batches(25, 32) + batches(1, 9, seed=1):  # a short last batch too
        loss = step.step(x, y).item()
        assert loss == pytest.approx(autograd_step(twin, twin_optimizer, x, y, config.grad_clip), rel=1e-4)
    # float rounding differs (summation order), and the adaptive optimizers' g / sqrt(mean g^2)
    # turns it into a whole step of lr where a gradient is ~0: rare elements may differ by ~lr
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        diff = (ours - theirs).abs()
        assert diff.mean() < 1e-5 and (diff > 1e-4).float().mean() < 0.01 and diff.max() < 20 * config.lr
    # the optimizer's state is torch's own: it loads into the autograd side and the two go on alike
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # not the same tensors
    match_state_layout(twin_optimizer)  # as AutogradStep.after_load does: ours are input-major
    twin.load_state_dict(model.state_dict())
    (x, y) = batches(1, 32, seed=2)[0]
    step.step(x, y)
    autograd_step(twin, twin_optimizer, x, y, config.grad_clip)
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_rebinding_after_loading_optimizer_state() -> None:
    config = TrainConfig()
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = build_optimizer(model, config, CPU)
    step = FusedMLPStep(model, optimizer, max_batch=16)
    for x, y in batches(3, 16):
        step.step(x, y)
    saved = copy.deepcopy(optimizer.state_dict())
    optimizer.load_state_dict(saved)  # new state tensors: the closure must follow them
    step.after_load()
    step.step(*batches(1, 16)[0])
    assert all(optimizer.state[p]["step"].item() == 4 for p in model.parameters())


def test_fused_adam_update_declines_what_it_does_not_do() -> None:
    model = MLP(MLPConfig())
    params = list(model.parameters())
    assert fused_adam_update(torch.optim.AdamW(params, fused=True), params) is None  # no .grad yet
    for p in params:
        p.grad = torch.zeros_like(p)
    assert fused_adam_update(torch.optim.AdamW(params, fused=True, amsgrad=True), params) is None
    assert fused_adam_update(torch.optim.AdamW(params, foreach=True), params) is None
    assert fused_adam_update(torch.optim.SGD(params, lr=0.1), params) is None
    assert fused_adam_update(torch.optim.AdamW(params[:2], fused=True), params) is None
    assert fused_adam_update(torch.optim.AdamW(params, fused=True), params) is not None


@pytest.mark.parametrize(
    ("settings", "model_name", "distributed", "bf16", "reason"),
    [
        ({}, "mlp", False, False, None),
        ({"fused_step": False}, "mlp", False, False, "train.fused_step is false"),
        ({"dropout": 0.1}, "mlp", False, False, "dropout"),
        ({"compile": True}, "mlp", False, False, "train.compile"),
        ({}, "mlp", True, False, "several ranks (DDP)"),
        ({}, "mlp", False, True, "bf16 autocast"),
        ({}, "cnn", False, False, "model cnn is not mlp"),
    ],
)
def test_supports_names_why_not(settings: dict, model_name: str, distributed: bool, bf16: bool, reason: Any) -> None:
    config = TrainConfig(model=model_name, **settings)  # type: ignore[arg-type]
    assert supports(config, build_model(config), distributed, bf16) == reason


def test_whole_runs_match_autograd(tiny_mnist: Path, tmp_path: Path) -> None:
    common = {
        "data_root": str(tiny_mnist), "val_size": 100, "batch_size": 24, "epochs": 3, "threads": 1,
        "device": "cpu", "schedule": "warmup_cosine", "warmup_steps": 5, "grad_clip": 1.0,
    }  # fmt: skip
    fused = run_training(TrainConfig(**common), tmp_path / "fused", log=lambda line: None)
    plain = run_training(TrainConfig(**common, fused_step=False), tmp_path / "autograd", log=lambda line: None)
    assert (fused["step"], plain["step"]) == ("fused", "autograd")
    for ours, theirs in zip(fused["history"], plain["history"], strict=True):
        for key in ("train_loss", "val_loss", "test_loss", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4), key
        assert ours["test_acc"] == pytest.approx(theirs["test_acc"], abs=0.011)  # at most 2 of 200 flip


@pytest.mark.parametrize("first", [True, False])
def test_a_checkpoint_resumes_on_the_other_path(first: bool, tiny_mnist: Path, tmp_path: Path) -> None:
    # the two paths lay the optimizer's moments out differently; a resume may switch paths
    common = {
        "data_root": str(tiny_mnist), "val_size": 100, "batch_size": 24, "epochs": 2, "threads": 1, "device": "cpu",
    }  # fmt: skip
    straight = run_training(TrainConfig(**common), tmp_path / "straight", log=lambda line: None)
    steps = iter(range(30))
    stopped = run_training(
        TrainConfig(**common, fused_step=first), tmp_path / "run", should_stop=lambda: next(steps, None) is None,
        log=lambda line: None,
    )  # fmt: skip
    assert stopped["status"] == "interrupted"
    final = run_training(TrainConfig(**common, fused_step=not first), tmp_path / "run", resume=True, log=print)
    assert final["status"] == "completed"
    for ours, theirs in zip(final["history"], straight["history"], strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
        assert ours["test_loss"] == pytest.approx(theirs["test_loss"], rel=1e-4)
