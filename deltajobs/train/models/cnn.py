"""A small convnet: 3x3 conv + ReLU + 2x2 max pool per block, then a fully connected classifier.

With the default 32 and 64 channels: 28x28 -> 14x14 -> 7x7, 421k parameters, ~4M MACs per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from deltajobs.schema import constrained


@dataclass(frozen=True)
class CNNConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64])  # one conv block (and 2x pool) each
    hidden: int = constrained(128, minimum=1)  # width of the fully connected layer
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)  # before each linear layer


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels, side = 1, 28
        for out_channels in config.channels:
            blocks += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_channels, side = out_channels, side // 2  # 28 -> 14 -> 7 -> 3
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(in_channels * side * side, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, 7, 7) with the default two blocks
        return self.classifier(x)  # (B, 10)
