"""Models: the registry, shapes, a few steps that learn, parameter counts and model_args errors."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from deltajobs.errors import SpecError  # noqa: E402
from deltajobs.train.config import MODEL_NAMES, TrainConfig  # noqa: E402
from deltajobs.train.data import load_mnist  # noqa: E402
from deltajobs.train.models import REGISTRY, build_model, count_parameters, model_config  # noqa: E402

pytestmark = pytest.mark.train


def test_registry_matches_the_schema_names() -> None:
    assert tuple(REGISTRY) == MODEL_NAMES
    assert typing.get_args(typing.get_type_hints(TrainConfig)["model"]) == MODEL_NAMES


def test_mlp_is_the_courses_235146_parameters() -> None:
    model = build_model(TrainConfig(model="mlp"))
    assert count_parameters(model) == 235_146
    assert count_parameters(build_model(TrainConfig(model="mlp", model_args={"hidden": [32]}))) == 784 * 32 + 32 + 330


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_and_a_few_steps_learn(name: str, tiny_mnist: Path) -> None:
    torch.manual_seed(0)
    data = load_mnist(TrainConfig(data_root=str(tiny_mnist), val_size=0), torch.device("cpu"))
    x, y = data.train.x[:32], data.train.y[:32]  # (32, 1, 28, 28), (32,)
    small = {"resnet": {"channels": [8, 8]}, "vit": {"dim": 32, "depth": 2}, "gnn": {"grid": 7, "layers": 2}}
    model = build_model(TrainConfig(model=name, model_args=small.get(name, {})))
    assert model(x[:3]).shape == (3, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if hasattr(model, "aux_loss"):
            loss = loss + model.aux_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_activation_checkpointing_gives_the_same_gradients(name: str) -> None:
    args = {"resnet": {"channels": [4, 8]}, "vit": {"dim": 16, "depth": 2, "heads": 2}}[name]
    x = torch.randn(4, 1, 28, 28)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = build_model(TrainConfig(model=name, model_args=args, activation_checkpointing=flag))
        model(x).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_gnn_knn_edges_and_vit_rmsnorm_run() -> None:
    x = torch.randn(2, 1, 28, 28)
    gnn = build_model(TrainConfig(model="gnn", model_args={"edges": "knn", "k": 4, "grid": 7}))
    vit = build_model(TrainConfig(model="vit", model_args={"norm": "rmsnorm", "patch": 7, "dim": 16, "heads": 2}))
    assert gnn(x).shape == vit(x).shape == (2, 10)


def test_moe_routes_top_k_and_reports_expert_load() -> None:
    model = build_model(TrainConfig(model="moe", model_args={"experts": 4, "top_k": 2, "dim": 16}))
    model(torch.randn(32, 1, 28, 28))
    aux = model.aux_loss()
    assert aux.requires_grad and 0.0 < aux.item() / 0.01 <= 4.0  # E * sum f*P lies in (0, E]
    metrics = model.extra_metrics()
    assert len(metrics["expert_load"]) == 4 and sum(metrics["expert_load"]) == pytest.approx(1.0, abs=1e-3)
    assert model.extra_metrics()["expert_load"] == [0.0] * 4  # reset after reading


@pytest.mark.parametrize(
    ("model", "args", "field", "message"),
    [
        ("mlp", {"widths": [3]}, "train.model_args.widths", "valid keys: hidden, dropout"),
        ("cnn", {"channels": "many"}, "train.model_args.channels[0]", "expected an integer"),
        ("vit", {"patch": 5}, "train.model_args.patch", "must divide 28"),
        ("vit", {"dim": 30, "heads": 4}, "train.model_args.heads", "must divide dim 30"),
        ("moe", {"experts": 2, "top_k": 3}, "train.model_args.top_k", "above the 2 experts"),
        ("gnn", {"grid": 5}, "train.model_args.grid", "must divide 28"),
        ("lstm", {"hidden": 0}, "train.model_args.hidden", "below the minimum 1"),
    ],
)
def test_bad_model_args_name_the_key(model: str, args: dict, field: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        build_model(TrainConfig(model=model, model_args=args))
    assert err.value.field == field and message in str(err.value)


def test_activation_checkpointing_on_a_model_without_it_is_an_error() -> None:
    with pytest.raises(
        SpecError, match="train.activation_checkpointing: model mlp has no support; use one of: resnet, vit"
    ):
        model_config(TrainConfig(model="mlp", activation_checkpointing=True))


def test_train_dropout_reaches_the_model_unless_model_args_sets_it() -> None:
    assert model_config(TrainConfig(model="mlp", dropout=0.2)).dropout == 0.2
    assert model_config(TrainConfig(model="mlp", dropout=0.2, model_args={"dropout": 0.5})).dropout == 0.5
