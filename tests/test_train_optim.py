"""Learning-rate schedules as a pure function, optimizers, and hyperparameter errors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from deltajobs.errors import SpecError  # noqa: E402
from deltajobs.train.config import TrainConfig  # noqa: E402
from deltajobs.train.optim import build_optimizer, build_scheduler, check_optim, lr_at  # noqa: E402

pytestmark = pytest.mark.train


@pytest.mark.parametrize(
    ("settings", "step", "expected"),
    [
        ({"schedule": "constant"}, 500, 0.1),
        ({"schedule": "step", "step_size": 100, "gamma": 0.5}, 99, 0.1),
        ({"schedule": "step", "step_size": 100, "gamma": 0.5}, 100, 0.05),
        ({"schedule": "step", "step_size": 100, "gamma": 0.5}, 250, 0.025),
        ({"schedule": "exponential", "step_size": 100, "gamma": 0.5}, 50, 0.1 * 0.5**0.5),
        ({"schedule": "exponential", "step_size": 100, "gamma": 0.5}, 200, 0.025),
        ({"schedule": "inverse_time", "decay_rate": 0.01}, 100, 0.05),
        ({"schedule": "cosine"}, 0, 0.1),
        ({"schedule": "cosine"}, 500, 0.05),
        ({"schedule": "cosine", "min_lr": 0.02}, 500, 0.06),
        ({"schedule": "cosine", "min_lr": 0.02}, 1000, 0.02),
        ({"schedule": "warmup_cosine", "warmup_steps": 100}, 0, 0.001),
        ({"schedule": "warmup_cosine", "warmup_steps": 100}, 49, 0.05),
        ({"schedule": "warmup_cosine", "warmup_steps": 100}, 99, 0.1),
        ({"schedule": "warmup_cosine", "warmup_steps": 100}, 100, 0.1),
        ({"schedule": "warmup_cosine", "warmup_steps": 100}, 550, 0.05),
        ({"schedule": "warmup_cosine", "warmup_steps": 100, "min_lr": 0.01}, 1000, 0.01),
        ({"schedule": "warmup_cosine"}, 24, 0.05),  # default warmup: 5% of 1000 steps
        ({"schedule": "onecycle", "warmup_steps": 300}, 0, 0.004),
        ({"schedule": "onecycle", "warmup_steps": 300}, 150, 0.052),
        ({"schedule": "onecycle", "warmup_steps": 300}, 300, 0.1),
        ({"schedule": "onecycle", "warmup_steps": 300}, 650, 0.1 / 2 + 0.004e-4 / 2),
        ({"schedule": "onecycle", "warmup_steps": 300}, 1000, 0.004e-4),
        ({"schedule": "onecycle"}, 300, 0.1),  # default warmup: 30%, as torch's OneCycleLR
    ],
)
def test_lr_at(settings: dict, step: int, expected: float) -> None:
    config = TrainConfig(lr=0.1, **settings)
    assert lr_at(step, 1000, config) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_scheduler_applies_lr_at_each_step() -> None:
    config = TrainConfig(lr=0.1, schedule="warmup_cosine", warmup_steps=10, min_lr=0.001)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, 100, config)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([lr_at(step, 100, config) for step in range(100)])
    assert max(seen) == pytest.approx(0.1) and seen[-1] < 0.0011


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
    ],
)
def test_build_optimizer(name: str, cls: type) -> None:
    config = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.1, momentum=0.8, nesterov=name == "sgd")
    optimizer = build_optimizer(torch.nn.Linear(3, 2), config, torch.device("cpu"))
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.1
    if name == "sgd":
        assert group["nesterov"] and group["momentum"] == 0.8


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"optimizer": "adam", "nesterov": True}, "train.nesterov", "needs optimizer sgd with momentum > 0"),
        ({"optimizer": "sgd", "nesterov": True, "momentum": 0.0}, "train.nesterov", "momentum > 0"),
        ({"betas": [0.9]}, "train.betas", "must be two numbers in [0, 1)"),
        ({"betas": [0.9, 1.5]}, "train.betas", "must be two numbers"),
        ({"warmup_steps": 10}, "train.warmup_steps", "warmup_cosine and onecycle only, not constant"),
        ({"min_lr": 0.1, "lr": 0.01}, "train.min_lr", "above train.lr"),
    ],
)
def test_bad_hyperparameters_name_the_field(settings: dict, field: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        check_optim(TrainConfig(**settings))
    assert err.value.field == field and message in str(err.value)


def test_warmup_longer_than_the_run_is_an_error() -> None:
    config = TrainConfig(schedule="warmup_cosine", warmup_steps=500)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(SpecError, match="train.warmup_steps: 500 >= the 100 steps"):
        build_scheduler(optimizer, 100, config)


def test_cosine_is_monotone_and_ends_at_min_lr() -> None:
    config = TrainConfig(lr=1.0, schedule="cosine", min_lr=0.1)
    values = [lr_at(step, 50, config) for step in range(51)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(0.1) and not any(math.isnan(v) for v in values)
