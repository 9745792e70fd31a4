"""The model registry: a name in `train.model` -> (its config dataclass, its constructor).

Each model file owns a small config dataclass for its `train.model_args`, next to its `nn.Module`.
Every model takes MNIST batches (B, 1, 28, 28) and returns logits (B, 10). Anything model-special
stays in the model's file, behind two optional hooks the training loop calls when present:

    aux_loss() -> Tensor          added to the cross-entropy of the last forward (MoE balancing)
    extra_metrics() -> dict       reported once per epoch, then reset (MoE expert load)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from deltajobs.errors import SpecError
from deltajobs.schema import from_dict
from deltajobs.train.config import TrainConfig
from deltajobs.train.models.cnn import CNN, CNNConfig
from deltajobs.train.models.gnn import GNN, GNNConfig
from deltajobs.train.models.mlp import MLP, MLPConfig
from deltajobs.train.models.moe import MoE, MoEConfig
from deltajobs.train.models.resnet import ResNet, ResNetConfig
from deltajobs.train.models.rnn import RNNConfig, RowRNN
from deltajobs.train.models.vit import ViT, ViTConfig

REGISTRY: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
    "cnn": (CNNConfig, CNN),
    "resnet": (ResNetConfig, ResNet),
    "lstm": (RNNConfig, partial(RowRNN, cell="lstm")),
    "gru": (RNNConfig, partial(RowRNN, cell="gru")),
    "vit": (ViTConfig, ViT),
    "gnn": (GNNConfig, GNN),
    "moe": (MoEConfig, MoE),
}


def model_config(config: TrainConfig) -> Any:
    """The model's config from `train.model_args`, with `dropout` and `activation_checkpointing`
    taken from the train config unless model_args sets them. Unknown keys are SpecErrors."""
    if config.model not in REGISTRY:
        raise SpecError("train.model", f"{config.model!r} is unknown; choose one of: {', '.join(REGISTRY)}")
    cls = REGISTRY[config.model][0]
    fields = {f.name for f in dataclasses.fields(cls)}
    args = dict(config.model_args)
    if "dropout" in fields:
        args.setdefault("dropout", config.dropout)
    if config.activation_checkpointing:
        if "activation_checkpointing" not in fields:
            supported = [name for name, (c, _) in REGISTRY.items() if _has_field(c, "activation_checkpointing")]
            raise SpecError(
                "train.activation_checkpointing",
                f"model {config.model} has no support; use one of: {', '.join(supported)}",
            )
        args.setdefault("activation_checkpointing", True)
    return from_dict(cls, args, "train.model_args")


def build_model(config: TrainConfig) -> nn.Module:
    """The model named by `config.model`, initialised per `config.init`."""
    model = REGISTRY[config.model][1](model_config(config))
    init_weights(model, config.init)
    return model


def init_weights(model: nn.Module, scheme: str) -> None:
    """xavier: Glorot uniform; he: Kaiming normal for ReLU. Linear and conv weights, zero biases;
    default keeps torch's own initialisation (and norms, embeddings and RNNs always keep theirs)."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _has_field(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))
