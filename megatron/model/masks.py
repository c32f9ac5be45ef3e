"""Attention masks prepared once per model forward (``AttentionMask``), for SDPA or FlexAttention.

Callers keep Megatron's conventions: a bool ``attention_mask`` [b or 1, 1, s or 1, s] with True meaning "may NOT
attend", or ``None`` for plain causal (decoder) / full (encoder) attention, which stays on SDPA's ``is_causal``
path. Two compact sources avoid the dense [b, 1, s, s] matrix altogether:

* BERT padding, ``AttentionMask.key_padding(padding_mask)``: a broadcast key mask [b, 1, 1, s] (its Megatron
  form for wrappers is the same [b, 1, 1, s] tensor, inverted). Real tokens see exactly what Megatron's mask lets
  them see (the real keys); a padding query sees the real keys too (``bert_extended_attention_mask`` adds the pad
  token itself), which changes nothing a loss reads.
* GPT documents (``--reset-attention-mask``), ``AttentionMask.documents(document_ids)``: causal attention within a
  document. On CUDA it is a FlexAttention ``BlockMask`` (fully masked blocks are skipped, no [s, s] matrix); on
  other devices, or with attention dropout in training (FlexAttention has none), one bool [b, 1, s, s] matrix.

The transformer block builds one ``AttentionMask`` per forward and hands it to every ``TransformerLayer``;
attention uses it as is (nothing is inverted or rebuilt per layer). A layer wrapper that changes the token set
(random-LTD gathers the kept tokens) is given ``megatron()`` instead: the Megatron bool tensor, which it can index
(built lazily, once per forward).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F


def check_attention_mask(mask: torch.Tensor, batch: int, seq: int, keys: int | None = None) -> None:
    """Raise ValueError unless mask is a bool [b or 1, 1, s (or 1), keys] tensor (True = may NOT attend)."""
    keys = seq if keys is None else keys
    if mask.dtype != torch.bool:
        raise ValueError(
            f"attention_mask must be a bool tensor (True = not allowed to attend), got dtype {mask.dtype}"
        )
    if (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] not in (1, seq) or mask.shape[3] != keys
            or mask.shape[0] not in (1, batch)):
        raise ValueError(
            f"attention_mask must have shape [{batch} or 1, 1, {seq}, {keys}], got {list(mask.shape)}"
        )


def document_ids_from_eod(tokens: torch.Tensor, eod_token: int) -> torch.Tensor:
    """Document index of every token [b, s] (int64): the number of EOD tokens strictly before it in its row.

    An EOD token belongs to the document it ends, as in Megatron's ``--reset-attention-mask``.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, seq], got shape {list(tokens.shape)}")
    eod = (tokens == eod_token).long()  # [b, s]
    return torch.cumsum(eod, dim=1) - eod  # [b, s]


def flex_attention_supported(device: torch.device) -> bool:
    """FlexAttention block masks are used on CUDA with a torch that has them (compiled kernels); else SDPA."""
    if device.type != "cuda":
        return False
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


_COMPILED_FLEX: Callable[..., torch.Tensor] | None = None


def _flex_attention() -> Callable[..., torch.Tensor]:
    """flex_attention compiled once per process (uncompiled it would materialise the scores)."""
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED_FLEX = torch.compile(flex_attention)
    return _COMPILED_FLEX


def document_block_mask(document_ids: torch.Tensor) -> Any:
    """FlexAttention BlockMask for causal attention within documents: query q sees key k iff k <= q, same doc."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, s = document_ids.shape
    docs = document_ids

    def same_document_causal(batch: torch.Tensor, head: torch.Tensor, q: torch.Tensor, k: torch.Tensor
                             ) -> torch.Tensor:
        return (docs[batch, q] == docs[batch, k]) & (q >= k)

    return create_block_mask(same_document_causal, B=b, H=None, Q_LEN=s, KV_LEN=s, device=document_ids.device)


def dense_document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Bool [b, 1, s, s], True = may attend: causal within the document of each query."""
    s = document_ids.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=document_ids.device).tril()  # [s, s]
    same = document_ids.unsqueeze(2) == document_ids.unsqueeze(1)  # [b, s(query), s(key)]
    return (same & causal).unsqueeze(1)  # [b, 1, s, s]


class AttentionMask:
    """Which keys each query may see, in the form the attention kernel takes; built once per forward.

    Exactly one of ``allowed`` (bool [b or 1, 1, s or 1, keys], True = may attend: SDPA's convention) and
    ``block_mask`` (a FlexAttention BlockMask) is set. ``megatron()`` gives the Megatron bool tensor (True = may
    NOT attend) for layer wrappers that gather tokens.
    """

    def __init__(self, *, seq_length: int, allowed: torch.Tensor | None = None, block_mask: Any = None,
                 megatron: torch.Tensor | None = None,
                 make_megatron: Callable[[], torch.Tensor] | None = None) -> None:
        if (allowed is None) == (block_mask is None):
            raise ValueError("AttentionMask needs exactly one of allowed / block_mask")
        self.seq_length = seq_length
        self.allowed = allowed
        self.block_mask = block_mask
        self._megatron = megatron
        self._make_megatron = make_megatron

    @classmethod
    def from_megatron(cls, mask: torch.Tensor, batch: int, seq: int, keys: int | None = None) -> "AttentionMask":
        """From Megatron's bool mask [b or 1, 1, s or 1, keys] (True = may NOT attend), checked and inverted once.

        A query that may attend to no key at all (a padding query among the tokens random-LTD kept, Megatron's
        own BERT mask on padding rows) attends to every key instead: its output is meaningless either way, but
        fused CUDA kernels return NaN for such rows, which would spread through the masked values later.
        """
        check_attention_mask(mask, batch, seq, keys)
        allowed = ~mask
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # no fully blocked row
        return cls(seq_length=seq, allowed=allowed, megatron=mask)

    @classmethod
    def key_padding(cls, padding_mask: torch.Tensor) -> "AttentionMask":
        """BERT padding [b, s] (1 = real token) -> a key mask [b, 1, 1, s]; no [s, s] matrix.

        A row without any real token (never produced by the BERT datasets) may attend everywhere, so no query
        is ever fully blocked (some fused kernels return NaN there).
        """
        if padding_mask.dim() != 2:
            raise ValueError(f"padding_mask must be [batch, seq], got shape {list(padding_mask.shape)}")
        real = padding_mask.bool()  # [b, s]
        allowed = (real | ~real.any(dim=1, keepdim=True))[:, None, None, :]  # [b, 1, 1, s]
        return cls(seq_length=padding_mask.shape[1], allowed=allowed, megatron=~allowed)

    @classmethod
    def documents(cls, document_ids: torch.Tensor, *, use_flex: bool | None = None) -> "AttentionMask":
        """Causal attention within documents from document ids [b, s] (``document_ids_from_eod``).

        ``use_flex`` None: a FlexAttention block mask where ``flex_attention_supported`` (CUDA), else a bool
        [b, 1, s, s] matrix built here, once.
        """
        if document_ids.dim() != 2:
            raise ValueError(f"document_ids must be [batch, seq], got shape {list(document_ids.shape)}")
        if use_flex is None:
            use_flex = flex_attention_supported(document_ids.device)

        def megatron() -> torch.Tensor:
            return ~dense_document_mask(document_ids)  # [b, 1, s, s], True = may NOT attend

        s = document_ids.shape[1]
        if use_flex:
            return cls(seq_length=s, block_mask=document_block_mask(document_ids), make_megatron=megatron)
        return cls(seq_length=s, allowed=dense_document_mask(document_ids))  # megatron(): ~allowed

    def megatron(self) -> torch.Tensor:
        """Megatron's bool mask (True = may NOT attend), [b or 1, 1, s or 1, keys]; built on first use."""
        if self._megatron is None:
            self._megatron = self._make_megatron() if self._make_megatron is not None else ~self.allowed
        return self._megatron

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, dropout_p: float = 0.0) -> torch.Tensor:
        """Attention of q [b, nh, s, d] over k, v [b, nh, keys, d] under this mask: [b, nh, s, d]."""
        if q.shape[2] != self.seq_length:
            raise ValueError(f"attention mask prepared for {self.seq_length} tokens used on {q.shape[2]} "
                             "(a layer wrapper that changes the tokens must be given mask.megatron())")
        if self.block_mask is not None:
            if dropout_p:
                raise ValueError("FlexAttention has no attention dropout: build the mask with use_flex=False")
            return _flex_attention()(q, k, v, block_mask=self.block_mask)
        # A fully blocked query row (Megatron's own BERT mask on padding rows) gives zeros on CPU, not NaN.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.allowed, dropout_p=dropout_p)
