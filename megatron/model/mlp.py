"""Position-wise feed-forward block: h -> ffn -> GELU -> h."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from megatron.config import TransformerConfig
from megatron.model import init


class MLP(nn.Module):
    """Two linear layers with a GELU between them (Megatron's dense_h_to_4h / dense_4h_to_h)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.ffn_size)
        self.dense_4h_to_h = nn.Linear(config.ffn_size, config.hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """normal(0, std) weights, zero biases; the output projection uses std / sqrt(2 L)."""
        std = self.config.init_method_std
        init.normal_(self.dense_h_to_4h.weight, std=std)
        init.normal_(self.dense_4h_to_h.weight, std=std / math.sqrt(2.0 * self.config.num_layers))
        init.zeros_(self.dense_h_to_4h.bias)
        init.zeros_(self.dense_4h_to_h.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[b, s, h] -> [b, s, h]."""
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(hidden_states)))  # [b, s, ffn] inside
