"""BERT classifiers for finetuning: the BERT encoder + pooler, a dropout and one linear head on [CLS].

``Classification(config, num_outputs)``: logits [b, num_outputs] (num_outputs 1 = regression, e.g. STS-B).
``Classification(config, 1, multiple_choice=True)``: inputs [b, c, s] (c choices), one score per choice -> [b, c].
Parameter names match BertModel's (``embedding.*``, ``encoder.*``, ``pooler.*``), so a pretrained BERT state dict
loads with ``load_pretrained_bert`` (its LM/SOP heads are dropped; a checkpoint without a pooler keeps the fresh one).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from megatron.config import TransformerConfig
from megatron.model.bert_model import Pooler
from megatron.model.embedding import Embedding
from megatron.model.gpt_model import default_position_ids
from megatron.model.masks import AttentionMask
from megatron.model.transformer import TransformerBlock
from megatron.model import init

BACKBONE_PREFIXES = ("embedding.", "encoder.", "pooler.")


class Classification(nn.Module):
    """Encoder -> pooled [CLS] -> dropout -> linear: [b, s] -> [b, num_outputs], or [b, c, s] -> [b, c]."""

    def __init__(self, config: TransformerConfig, num_outputs: int, *, num_tokentypes: int = 2,
                 multiple_choice: bool = False) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"a classifier needs at least one output, got {num_outputs}")
        self.config = config
        self.multiple_choice = multiple_choice
        self.embedding = Embedding(config, num_tokentypes=num_tokentypes)
        self.encoder = TransformerBlock(config, causal=False)
        self.pooler = Pooler(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.head = nn.Linear(config.hidden_size, 1 if multiple_choice else num_outputs)
        init.normal_(self.head.weight, std=config.init_method_std)
        init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                tokentype_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [b, num_outputs] (multiple choice: [b, c] from inputs [b, c, s])."""
        choices = None
        if self.multiple_choice:
            if input_ids.dim() != 3:
                raise ValueError(f"multiple choice expects [batch, choices, seq] inputs, got {list(input_ids.shape)}")
            b, choices, s = input_ids.shape
            input_ids, padding_mask = input_ids.reshape(b * choices, s), padding_mask.reshape(b * choices, s)
            tokentype_ids = None if tokentype_ids is None else tokentype_ids.reshape(b * choices, s)
        position_ids = default_position_ids(input_ids)  # [b, s]
        hidden = self.embedding(input_ids, position_ids, tokentype_ids)  # [b, s, h]
        hidden = self.encoder(hidden, attention_mask=AttentionMask.key_padding(padding_mask),
                              position_ids=position_ids)  # [b, s, h]
        logits = self.head(self.dropout(self.pooler(hidden)))  # [b, n]
        return logits.reshape(-1, choices) if choices is not None else logits


def load_pretrained_bert(model: Classification, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy a BertModel state dict's encoder/embedding/pooler into `model`; returns the backbone keys it lacked.

    The LM and SOP heads are dropped. Missing backbone weights other than the pooler (a checkpoint trained
    with --bert-no-binary-head has none) are an error: the checkpoint is not a BERT of this shape.
    """
    backbone = {k: v for k, v in state_dict.items() if k.startswith(BACKBONE_PREFIXES)}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    missing = [k for k in missing if k.startswith(BACKBONE_PREFIXES)]
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"the pretrained weights do not fit this BERT classifier (missing {missing[:3]}, "
                         f"unexpected {list(unexpected)[:3]})")
    return missing
