"""Input embeddings: word (+ learned absolute position) (+ token type) + dropout."""
from __future__ import annotations

import torch
from torch import nn

from megatron.config import ConfigError, TransformerConfig
from megatron.model import init


class Embedding(nn.Module):
    """Word embeddings [V_padded, h], optional learned positions and token types, then dropout.

    With ``position_embedding_type == "rope"`` there is no position table: positions enter
    through the rotary embedding inside attention.
    """

    def __init__(self, config: TransformerConfig, *, num_tokentypes: int = 0) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, h)
        self.position_embeddings: nn.Embedding | None = None
        if config.position_embedding_type == "learned_absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.tokentype_embeddings: nn.Embedding | None = None
        if num_tokentypes > 0:
            self.tokentype_embeddings = nn.Embedding(num_tokentypes, h)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Megatron init: every table ~ normal(0, init_method_std)."""
        std = self.config.init_method_std
        for table in (self.word_embeddings, self.position_embeddings, self.tokentype_embeddings):
            if table is not None:
                init.normal_(table.weight, std=std)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        tokentype_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed token ids [b, s] (positions [b or 1, s]) into hidden states [b, s, h]."""
        hidden = self.word_embeddings(input_ids)  # [b, s, h]
        if self.position_embeddings is not None:
            max_pos = self.config.max_position_embeddings
            if input_ids.shape[1] > max_pos:
                raise ConfigError(
                    f"sequence length {input_ids.shape[1]} exceeds --max-position-embeddings {max_pos}"
                )
            hidden = hidden + self.position_embeddings(position_ids)  # [b, s, h]
        if self.tokentype_embeddings is not None:
            if tokentype_ids is None:
                tokentype_ids = torch.zeros_like(input_ids)
            hidden = hidden + self.tokentype_embeddings(tokentype_ids)  # [b, s, h]
        elif tokentype_ids is not None:
            raise ValueError("tokentype_ids given but the model was built with num_tokentypes=0")
        return self.embedding_dropout(hidden)
