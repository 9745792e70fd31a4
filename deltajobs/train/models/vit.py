"""A small Vision Transformer: patches -> tokens, pre-norm encoder blocks, mean pool, linear head.

With the defaults (patch 4, dim 64, depth 4): 49 tokens of 16 pixels, ~140k parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from deltajobs.schema import constrained


@dataclass(frozen=True)
class ViTConfig:
    patch: int = constrained(4, minimum=1, maximum=28)  # side of a square patch; must divide 28
    dim: int = constrained(64, minimum=1)  # token width
    depth: int = constrained(4, minimum=1, maximum=48)  # encoder blocks
    heads: int = constrained(4, minimum=1)  # must divide dim
    mlp_ratio: int = constrained(2, minimum=1)  # the block MLP is dim -> mlp_ratio * dim -> dim
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)  # attention, MLP and residual dropout
    activation_checkpointing: bool = False  # recompute each block in backward


class RMSNorm(nn.Module):
    """x / rms(x) * gain: LayerNorm without centring or bias (cheaper, as in LLaMA)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    return RMSNorm(dim) if kind == "rmsnorm" else nn.LayerNorm(dim)


class SelfAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads, self.dropout = config.heads, config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.proj(y)


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)): the pre-norm residual block."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(config.norm, config.dim)
        self.attn = SelfAttention(config)
        self.norm2 = make_norm(config.norm, config.dim)
        self.mlp = nn.Sequential(
            nn.Linear(config.dim, config.mlp_ratio * config.dim),
            nn.GELU(),
            nn.Linear(config.mlp_ratio * config.dim, config.dim),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        from deltajobs.errors import SpecError

        if 28 % config.patch:
            raise SpecError("train.model_args.patch", f"{config.patch} must divide 28; choose 1, 2, 4, 7, 14 or 28")
        if config.dim % config.heads:
            raise SpecError("train.model_args.heads", f"{config.heads} must divide dim {config.dim}")
        self.activation_checkpointing = config.activation_checkpointing
        tokens = (28 // config.patch) ** 2
        self.embed = nn.Conv2d(1, config.dim, config.patch, stride=config.patch)  # one linear map per patch
        self.position = nn.Parameter(torch.zeros(1, tokens, config.dim))  # learned, one per patch
        nn.init.normal_(self.position, std=0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = make_norm(config.norm, config.dim)
        self.head = nn.Linear(config.dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)  # (B, T, C), T = (28 / patch)^2
        x = self.drop(x + self.position)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.norm(x).mean(dim=1)  # mean over tokens: (B, C)
        return self.head(x)  # (B, 10)
