"""The course's multilayer perceptron: 784 -> 256 -> 128 -> 10 with ReLU (235,146 parameters)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from deltajobs.schema import constrained


@dataclass(frozen=True)
class MLPConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # widths of the hidden layers
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)  # after each hidden ReLU


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]  # (B, 1, 28, 28) -> (B, 784)
        width = 28 * 28
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 10)
