"""GPT: embeddings -> causal transformer block -> output layer tied to the word embeddings.

Inference can decode incrementally with a key/value cache (``megatron.model.kv_cache.KVCache``): see
``GPTModel.forward``. With labels the output layer and the cross-entropy run chunk by chunk
(``megatron.model.cross_entropy``): no [b, s, V] fp32 logits are kept for the backward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron.config import ConfigError, TransformerConfig
from megatron.model.cross_entropy import linear_cross_entropy
from megatron.model.embedding import Embedding
from megatron.model.kv_cache import KVCache
from megatron.model.masks import AttentionMask, flex_attention_supported
from megatron.model.transformer import TransformerBlock


def default_position_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """Positions 0..s-1 for every row: [b, s] (an expanded view, no copy)."""
    b, s = input_ids.shape
    return torch.arange(s, device=input_ids.device).unsqueeze(0).expand(b, s)


def vocab_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in fp32: logits [b, s, V], labels [b, s] -> loss [b, s]."""
    b, s, v = logits.shape
    loss = F.cross_entropy(logits.float().reshape(b * s, v), labels.reshape(b * s), reduction="none")
    return loss.view(b, s)


class GPTModel(nn.Module):
    """Decoder-only language model built from a TransformerConfig (batch-first [b, s, h])."""

    def __init__(self, config: TransformerConfig, *, parallel_output: bool = True) -> None:
        super().__init__()
        del parallel_output  # accepted for Megatron call compatibility; no tensor parallelism here
        self.config = config
        self.embedding = Embedding(config)
        self.encoder = TransformerBlock(config, causal=True)
        self.loss_chunk_tokens: int | None = None
        """Tokens per chunk of the output layer + cross-entropy (None: 256 MiB of fp32 logits per chunk)."""

    @property
    def output_weight(self) -> nn.Parameter:
        """The output projection [V, h]: the same Parameter as the word embedding table."""
        return self.embedding.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        document_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """input_ids [b, s] -> logits [b, s, V], or per-token fp32 loss [b, s] when labels are given.

        ``document_ids`` [b, s] (``megatron.model.masks.document_ids_from_eod``): causal attention within
        documents, as Megatron's --reset-attention-mask, without a dense mask on CUDA (FlexAttention); give it
        instead of ``attention_mask``.

        ``kv_cache`` (inference only, model in eval mode): input_ids are the s tokens that follow the
        ``kv_cache.length`` cached ones; the result covers only them, the cache grows by s. Default positions
        are the absolute ones (length .. length + s - 1); ``attention_mask`` is then bool [b or 1, 1, s,
        length + s] (True = blocked) and ``None`` means causal over cached + new tokens.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {list(input_ids.shape)}")
        if document_ids is not None:
            if attention_mask is not None or kv_cache is not None:
                raise ValueError("document_ids replaces attention_mask and does not work with kv_cache")
            if document_ids.shape != input_ids.shape:
                raise ValueError(f"document_ids must have the shape of input_ids {list(input_ids.shape)}, "
                                 f"got {list(document_ids.shape)}")
            dropout = self.training and self.config.attention_dropout > 0  # FlexAttention has no dropout
            use_flex = flex_attention_supported(input_ids.device) and not dropout
            mask: torch.Tensor | AttentionMask | None = AttentionMask.documents(document_ids, use_flex=use_flex)
        else:
            mask = attention_mask  # prepared by the block, once per forward
        if position_ids is None and kv_cache is not None and kv_cache.length:
            b, s = input_ids.shape
            max_pos = self.config.max_position_embeddings
            if self.embedding.position_embeddings is not None and kv_cache.length + s > max_pos:
                raise ConfigError(
                    f"sequence length {kv_cache.length + s} exceeds --max-position-embeddings {max_pos}"
                )
            position_ids = torch.arange(kv_cache.length, kv_cache.length + s, device=input_ids.device)
            position_ids = position_ids.unsqueeze(0).expand(b, s)  # [b, s]: absolute positions
        elif position_ids is None:
            position_ids = default_position_ids(input_ids)  # [b, s]
        else:
            position_ids = position_ids.expand_as(input_ids)  # [b, s]
        hidden = self.embedding(input_ids, position_ids)  # [b, s, h]
        if kv_cache is None:
            hidden = self.encoder(hidden, attention_mask=mask, position_ids=position_ids)  # [b, s, h]
        else:
            hidden = self.encoder(
                hidden, attention_mask=mask, position_ids=position_ids, kv_cache=kv_cache
            )  # [b, s, h]
        if labels is None:
            return F.linear(hidden, self.output_weight)  # [b, s, V]
        return linear_cross_entropy(hidden, self.output_weight, labels, chunk_tokens=self.loss_chunk_tokens)
