"""A mixture of MLP experts: a router sends each image to its top-k experts (Switch-style).

    x (B, 784) -> embed (B, D) -> h = h + sum_k gate_k * expert_k(h) -> LayerNorm -> logits (B, 10)

The router's softmax picks the top-k experts per input; their probabilities, renormalised over the
k, weight the expert outputs. A load-balancing loss (Switch Transformer, Fedus et al. 2021),
    aux = E * sum_e fraction_e * mean_prob_e,
is 1 when routing is uniform and grows as it collapses; `aux_loss()` returns it times
`aux_loss_weight` for the trainer to add. `extra_metrics()` reports each expert's share of the
routed training inputs since the last call (`expert_load`, summing to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltajobs.errors import SpecError
from deltajobs.schema import constrained


@dataclass(frozen=True)
class MoEConfig:
    dim: int = constrained(256, minimum=1)  # width of the embedding the router sees
    experts: int = constrained(4, minimum=1, maximum=256)
    top_k: int = constrained(2, minimum=1)  # experts per input; at most `experts`
    expert_hidden: int = constrained(256, minimum=1)  # each expert: dim -> expert_hidden -> dim
    aux_loss_weight: float = constrained(0.01, minimum=0.0)  # Switch uses 0.01
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)  # in the experts and before the head


class MoE(nn.Module):
    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        if config.top_k > config.experts:
            raise SpecError("train.model_args.top_k", f"{config.top_k} is above the {config.experts} experts")
        self.config = config
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, config.dim), nn.ReLU())
        self.router = nn.Linear(config.dim, config.experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(config.dim, config.expert_hidden),
                nn.ReLU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.expert_hidden, config.dim),
            )
            for _ in range(config.experts)
        )
        self.head = nn.Sequential(nn.LayerNorm(config.dim), nn.Dropout(config.dropout), nn.Linear(config.dim, 10))
        self._aux: torch.Tensor | None = None
        self._load = torch.zeros(config.experts)  # routed inputs per expert, on the device, not a buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, D)
        probs = F.softmax(self.router(h), dim=-1)  # (B, E)
        top_probs, top_experts = probs.topk(self.config.top_k, dim=-1)  # (B, k) each
        gates = top_probs / top_probs.sum(-1, keepdim=True)  # renormalised over the chosen k
        mixed = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            # inputs routed to expert e and the slot (0..k-1) it holds for them; an expert with no
            # inputs still runs on an empty batch, so DDP sees every parameter used
            rows, slot = (top_experts == e).nonzero(as_tuple=True)
            out = expert(h[rows])  # (n_e, D)
            mixed = mixed.index_add(0, rows, out * gates[rows, slot].unsqueeze(-1))
        h = h + mixed  # residual around the expert layer

        if self.training:  # balancing loss and load statistics are about training batches
            routed = F.one_hot(top_experts, self.config.experts).sum(1).float()  # (B, E): 1 where chosen
            fraction = routed.mean(0) / self.config.top_k  # (E,) share of the routed inputs, sums to 1
            self._aux = self.config.experts * (fraction * probs.mean(0)).sum()
            self._load = self._load.to(routed.device) + routed.sum(0)
        return self.head(h)  # (B, 10)

    def aux_loss(self) -> torch.Tensor:
        assert self._aux is not None, "aux_loss() is defined after a forward pass"
        return self.config.aux_loss_weight * self._aux

    def extra_metrics(self) -> dict[str, Any]:
        load = self._load / self._load.sum().clamp(min=1)
        self._load = torch.zeros_like(self._load)
        shares = [round(v, 4) for v in load.tolist()]
        mean = 1.0 / self.config.experts
        return {"expert_load": shares, "expert_load_max_over_mean": round(max(shares) / mean, 3)}
