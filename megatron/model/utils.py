"""Masks, position ids, parameter and FLOP counts for the GPT/BERT models."""
from __future__ import annotations

import torch
from torch import nn

from megatron.config import TransformerConfig


def get_ltor_masks_and_position_ids(
    data: torch.Tensor,
    eod_token: int,
    reset_position_ids: bool,
    reset_attention_mask: bool,
    eod_mask_loss: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Left-to-right masks for tokens [b, s]: (attention_mask | None, loss_mask [b, s] float, position_ids [b, s]).

    Megatron semantics: an EOD token ends its document; with ``reset_position_ids`` positions
    restart at 0 after each EOD, with ``reset_attention_mask`` a token cannot attend to earlier
    documents of its row, with ``eod_mask_loss`` EOD positions get loss weight 0. The mask is
    bool [b, 1, s, s] with True = not allowed to attend; it is None when
    ``reset_attention_mask`` is off, so attention takes the plain causal fast path.
    Training passes ``document_ids_from_eod(data, eod_token)`` to the model instead of this dense
    mask (``megatron.model.masks``: FlexAttention on CUDA, one bool matrix per forward elsewhere).
    """
    if data.dim() != 2:
        raise ValueError(f"tokens must be [batch, seq], got shape {list(data.shape)}")
    b, s = data.shape
    device = data.device
    is_eod = data == eod_token  # [b, s]
    loss_mask = torch.ones(b, s, dtype=torch.float32, device=device)
    if eod_mask_loss:
        loss_mask.masked_fill_(is_eod, 0.0)
    arange = torch.arange(s, device=device).unsqueeze(0).expand(b, s)  # [b, s]

    if reset_position_ids:
        # Start of the document holding token t = 1 + index of the last EOD strictly before t.
        next_start = torch.where(is_eod, arange + 1, torch.zeros_like(arange))  # [b, s]
        start_incl = torch.cummax(next_start, dim=1).values  # [b, s]
        start = torch.cat((torch.zeros_like(start_incl[:, :1]), start_incl[:, :-1]), dim=1)  # [b, s]
        position_ids = arange - start  # [b, s]
    else:
        position_ids = arange.contiguous()  # [b, s]

    attention_mask = None
    if reset_attention_mask:
        eod_int = is_eod.long()
        doc_id = torch.cumsum(eod_int, dim=1) - eod_int  # [b, s]: number of EODs strictly before t
        future = torch.ones(s, s, dtype=torch.bool, device=device).triu(diagonal=1)  # [s, s]
        other_doc = doc_id.unsqueeze(2) != doc_id.unsqueeze(1)  # [b, s(query), s(key)]
        attention_mask = (future | other_doc).unsqueeze(1)  # [b, 1, s, s]
    return attention_mask, loss_mask, position_ids


def bert_extended_attention_mask(padding_mask: torch.Tensor) -> torch.Tensor:
    """Padding mask [b, s] (1 = real token) -> bool [b, 1, s, s], True = not allowed to attend.

    Keys that are padding are blocked for every query; each token may always see itself,
    so no query row is fully blocked (padding rows stay finite, also after random-LTD
    gathers a subset of rows and columns).
    """
    if padding_mask.dim() != 2:
        raise ValueError(f"padding_mask must be [batch, seq], got shape {list(padding_mask.shape)}")
    s = padding_mask.shape[1]
    key_is_pad = ~padding_mask.bool()  # [b, s]
    eye = torch.eye(s, dtype=torch.bool, device=padding_mask.device)  # [s, s]
    blocked = key_is_pad.unsqueeze(1) & ~eye  # [b, s(query), s(key)]
    return blocked.unsqueeze(1)  # [b, 1, s, s]


def num_parameters(model: nn.Module) -> int:
    """Number of distinct parameter elements (a tied weight is counted once)."""
    return sum(p.numel() for p in model.parameters())


def gpt_flops_per_token(config: TransformerConfig, seq_length: int) -> float:
    """Training FLOPs per token (forward + backward) of GPTModel, Megatron's count.

    Per layer and token the forward matmuls cost 2 * (4 h^2 + 2 h * ffn) plus attention's
    quadratic term 4 * s * h (scores and weighted sum over all s keys); the backward costs
    twice the forward, and with activation checkpointing the layers run forward once more
    (factor 4 instead of 3). The tied output layer costs 6 * h * V (forward + backward, never
    recomputed). With ffn = 4h and checkpointing this is exactly
    96 L h^2 (1 + s / (6 h) + V / (16 L h)) of Narayanan et al. (2021).
    """
    h = config.hidden_size
    layer_forward = 8 * h * h + 4 * h * config.ffn_size + 4 * seq_length * h
    passes = 4 if config.checkpoint_activations else 3
    return float(passes * config.num_layers * layer_forward + 6 * h * config.padded_vocab_size)



def bert_flops_per_token(config: TransformerConfig, seq_length: int) -> float:
    """Training FLOPs per token of BertModel: the GPT count (same encoder, tied LM output layer) plus the LM
    head's h x h transform on every position (6 h^2, forward + backward); the pooler and binary head act on
    one position per sample and are left out."""
    h = config.hidden_size
    return gpt_flops_per_token(config, seq_length) + float(6 * h * h)