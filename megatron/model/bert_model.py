"""BERT: embeddings (+ token types) -> bidirectional transformer block -> LM head and SOP head.

Padding is a key mask [b, 1, 1, s] built once per forward (``AttentionMask.key_padding``), not a [b, 1, s, s]
matrix; with labels the LM output layer and cross-entropy run in chunks (``megatron.model.cross_entropy``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.config import TransformerConfig
from megatron.model.cross_entropy import linear_cross_entropy
from megatron.model.embedding import Embedding
from megatron.model.gpt_model import default_position_ids
from megatron.model.masks import AttentionMask
from megatron.model.transformer import TransformerBlock, make_layernorm
from megatron.model import init


class Pooler(nn.Module):
    """tanh(dense(hidden of the first token [CLS])): [b, s, h] -> [b, h]."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        init.normal_(self.dense.weight, std=config.init_method_std)
        init.zeros_(self.dense.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[b, s, h] -> [b, h]."""
        return torch.tanh(self.dense(hidden_states[:, 0]))


class BertLMHead(nn.Module):
    """dense + GELU + LayerNorm, then the tied word-embedding projection plus a vocab bias."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layernorm = make_layernorm(config)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))
        init.normal_(self.dense.weight, std=config.init_method_std)
        init.zeros_(self.dense.bias)

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                *, chunk_tokens: int | None = None) -> torch.Tensor:
        """[b, s, h] -> logits [b, s, V], or the per-token fp32 loss [b, s] of ``labels`` (chunked)."""
        hidden = self.layernorm(F.gelu(self.dense(hidden_states)))  # [b, s, h]
        if labels is None:
            return F.linear(hidden, word_embeddings, self.bias)  # [b, s, V]
        return linear_cross_entropy(hidden, word_embeddings, labels, self.bias, chunk_tokens=chunk_tokens)


class BertModel(nn.Module):
    """Encoder-only masked LM with an optional binary (sentence-order) head on [CLS]."""

    def __init__(self, config: TransformerConfig, *, num_tokentypes: int = 2, add_binary_head: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embedding = Embedding(config, num_tokentypes=num_tokentypes)
        self.encoder = TransformerBlock(config, causal=False)
        self.lm_head = BertLMHead(config)
        self.pooler: Pooler | None = None
        self.binary_head: nn.Linear | None = None
        if add_binary_head:
            self.pooler = Pooler(config)
            self.binary_head = nn.Linear(config.hidden_size, 2)
            init.normal_(self.binary_head.weight, std=config.init_method_std)
            init.zeros_(self.binary_head.bias)
        self.loss_chunk_tokens: int | None = None
        """Tokens per chunk of the LM output layer + cross-entropy (None: 256 MiB of fp32 logits per chunk)."""

    def forward(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor,
        tokentype_ids: torch.Tensor | None = None,
        lm_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (per-token fp32 LM loss [b, s] if lm_labels else logits [b, s, V], binary logits [b, 2] or None)."""
        if input_ids.dim() != 2 or padding_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and padding_mask must both be [batch, seq], got {list(input_ids.shape)} "
                f"and {list(padding_mask.shape)}"
            )
        position_ids = default_position_ids(input_ids)  # [b, s]
        attention_mask = AttentionMask.key_padding(padding_mask)  # keys [b, 1, 1, s], once per forward
        hidden = self.embedding(input_ids, position_ids, tokentype_ids)  # [b, s, h]
        hidden = self.encoder(hidden, attention_mask=attention_mask, position_ids=position_ids)  # [b, s, h]
        binary_logits = None
        if self.binary_head is not None and self.pooler is not None:
            binary_logits = self.binary_head(self.pooler(hidden))  # [b, 2]
        word_embeddings = self.embedding.word_embeddings.weight  # [V, h], tied
        if lm_labels is None:
            return self.lm_head(hidden, word_embeddings), binary_logits  # [b, s, V]
        loss = self.lm_head(hidden, word_embeddings, lm_labels, chunk_tokens=self.loss_chunk_tokens)  # [b, s] fp32
        return loss, binary_logits
