"""A small ResNet for 28x28 digits: a conv stem, stages of the original basic blocks
(conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU), global average pooling, a linear head.

Under activation checkpointing each block's forward runs twice in training, so BatchNorm's running
statistics take two momentum updates per batch (a known torch caveat; accuracy is unaffected).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from deltajobs.schema import constrained


@dataclass(frozen=True)
class ResNetConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # per stage; stages 2+ halve the side
    blocks: int = constrained(1, minimum=1, maximum=16)  # basic blocks per stage
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)  # before the head
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~30% more time


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:  # 1x1 projection to the new shape
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.activation_checkpointing = config.activation_checkpointing
        width = config.channels[0]
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks = []
        for stage, channels in enumerate(config.channels):
            for index in range(config.blocks):
                stride = 2 if stage > 0 and index == 0 else 1  # 28 -> 14 -> 7
                blocks.append(BasicBlock(width, channels, stride))
                width = channels
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C0, 28, 28)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = x.mean(dim=(2, 3))  # global average pool: (B, C_last)
        return self.head(x)  # (B, 10)
