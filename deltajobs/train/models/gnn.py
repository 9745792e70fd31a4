"""A graph neural network over a graph built from each image, in plain torch.

Nodes: the image average-pooled to grid x grid cells (14x14 = 196 by default), each with features
(intensity, row, column). Edges: "grid" links every cell to its 8 neighbours (the same graph for
every image); "knn" links every node to its k nearest nodes in (row, column, intensity) space (a
graph per image, so strokes connect along the ink). Both become a row-normalised dense adjacency
(1 or B, N, N), so a round of GraphSAGE-style mean aggregation is one batched matmul (at N = 196 that
beats gather/scatter on CPU and GPU alike). Then mean+max pooling over nodes and an MLP head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deltajobs.errors import SpecError
from deltajobs.schema import constrained


@dataclass(frozen=True)
class GNNConfig:
    grid: int = constrained(14, minimum=1, maximum=28)  # nodes per side; must divide 28
    edges: Literal["grid", "knn"] = "grid"
    k: int = constrained(8, minimum=1)  # neighbours per node for knn
    hidden: int = constrained(64, minimum=1)  # node feature width
    layers: int = constrained(4, minimum=1, maximum=32)  # rounds of message passing
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)  # before the head


def grid_adjacency(side: int) -> torch.Tensor:
    """(N, N) row-normalised adjacency of a side x side grid where each cell links to its (up to) 8
    neighbours: row i averages node i's neighbours."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)  # (N,)
    near = ((rows[:, None] - rows[None, :]).abs() <= 1) & ((cols[:, None] - cols[None, :]).abs() <= 1)
    adjacency = (near & ~torch.eye(side * side, dtype=torch.bool)).float()  # (N, N), no self loops
    return adjacency / adjacency.sum(1, keepdim=True)


class SageLayer(nn.Module):
    """h <- LayerNorm(h + ReLU(W_self h + W_neigh mean_{j in N(i)} h_j))."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.self_linear = nn.Linear(hidden, hidden)
        self.neigh_linear = nn.Linear(hidden, hidden, bias=False)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        neigh = adjacency @ h  # (1 or B, N, N) @ (B, N, C) -> (B, N, C): mean over neighbours
        return self.norm(h + F.relu(self.self_linear(h) + self.neigh_linear(neigh)))


class GNN(nn.Module):
    position: torch.Tensor  # (1, N, 2) buffers, registered below
    grid: torch.Tensor  # (1, N, N)

    def __init__(self, config: GNNConfig) -> None:
        super().__init__()
        if 28 % config.grid:
            raise SpecError("train.model_args.grid", f"{config.grid} must divide 28; choose 4, 7, 14 or 28")
        if config.edges == "knn" and config.k >= config.grid**2:
            raise SpecError("train.model_args.k", f"{config.k} must be below the {config.grid**2} nodes")
        self.config = config
        side = config.grid
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        position = torch.stack([rows, cols], -1).reshape(1, side * side, 2).float() / max(1, side - 1)
        self.register_buffer("position", position, persistent=False)  # (1, N, 2) in [0, 1]
        self.register_buffer("grid", grid_adjacency(side).unsqueeze(0), persistent=False)  # (1, N, N)
        self.embed = nn.Linear(3, config.hidden)
        self.layers = nn.ModuleList(SageLayer(config.hidden) for _ in range(config.layers))
        self.head = nn.Sequential(
            nn.Linear(2 * config.hidden, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 10),
        )

    def knn_adjacency(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, N) row-normalised: each node averages its k nearest other nodes in feature space."""
        distance = torch.cdist(features, features)  # (B, N, N)
        distance.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # not its own neighbour
        nearest = distance.topk(self.config.k, dim=-1, largest=False).indices  # (B, N, k)
        adjacency = torch.zeros_like(distance).scatter_(-1, nearest, 1.0 / self.config.k)
        return adjacency

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        side = self.config.grid
        intensity = F.adaptive_avg_pool2d(x, side).reshape(B, side * side, 1)  # (B, N, 1)
        features = torch.cat([intensity, self.position.expand(B, -1, -1)], dim=-1)  # (B, N, 3)
        if self.config.edges == "knn":
            with torch.no_grad():  # the graph is data, not a function to differentiate
                adjacency = self.knn_adjacency(features)
        else:
            adjacency = self.grid
        h = self.embed(features)  # (B, N, C)
        for layer in self.layers:
            h = layer(h, adjacency)
        pooled = torch.cat([h.mean(1), h.amax(1)], dim=-1)  # (B, 2C): graph-level readout
        return self.head(pooled)  # (B, 10)
