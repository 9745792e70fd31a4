"""Recurrent models that read an image as a sequence: 28 time steps of 28 pixels (one row each)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deltajobs.schema import constrained


@dataclass(frozen=True)
class RNNConfig:
    hidden: int = constrained(128, minimum=1)
    layers: int = constrained(1, minimum=1, maximum=8)
    bidirectional: bool = False
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)  # between stacked layers and before the head


class RowRNN(nn.Module):
    """`cell` is "lstm" or "gru"; the registry makes one model name of each."""

    def __init__(self, config: RNNConfig, cell: str = "lstm") -> None:
        super().__init__()
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_class(
            input_size=28,
            hidden_size=config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        directions = 2 if config.bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(directions * config.hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.squeeze(1)  # (B, 28 steps, 28 pixels)
        out, _ = self.rnn(rows)  # (B, 28, directions * hidden)
        # the last step's output: forward direction has read every row; a backward direction's
        # final state sits at step 0, so take each direction's own end
        if self.rnn.bidirectional:
            hidden = self.rnn.hidden_size
            last = torch.cat([out[:, -1, :hidden], out[:, 0, hidden:]], dim=1)  # (B, 2 * hidden)
        else:
            last = out[:, -1]  # (B, hidden)
        return self.head(last)  # (B, 10)
