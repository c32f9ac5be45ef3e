"""Self-attention through torch's scaled_dot_product_attention (fused qkv projection)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from megatron.config import TransformerConfig
from megatron.model.kv_cache import KVCache
from megatron.model.masks import AttentionMask, check_attention_mask
from megatron.model.rope import apply_rotary, rotary_cos_sin
from megatron.model import init

__all__ = ["SelfAttention", "check_attention_mask"]


class SelfAttention(nn.Module):
    """Multi-head self-attention on [b, s, h]; causal (decoder) or bidirectional (encoder).

    Mask convention (Megatron): ``attention_mask`` is bool [b or 1, 1, s (or 1), s] with True meaning
    "may NOT attend", or an ``AttentionMask`` the transformer block prepared once for all layers
    (``megatron.model.masks``); when given it fully defines visibility (it must already contain the
    causal part for a decoder). ``None`` means plain causal (decoder) or full (encoder)
    attention; the decoder then takes SDPA's ``is_causal`` fast path.

    Incremental decoding (inference only): with ``kv_cache`` the s new tokens' keys/values are appended to
    the t cached ones and the queries attend over all t + s keys; a given mask is then [b or 1, 1, s, t + s],
    and ``None`` lets new token i see every cached key and the new keys up to itself.
    """

    def __init__(self, config: TransformerConfig, layer_number: int, *, causal: bool = True) -> None:
        super().__init__()
        self.config = config
        self.layer_number = layer_number
        self.causal = causal
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.use_rope = config.position_embedding_type == "rope"
        self.query_key_value = nn.Linear(h, 3 * h)
        self.dense = nn.Linear(h, h)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """normal(0, std) weights, zero biases; the output projection uses std / sqrt(2 L)."""
        std = self.config.init_method_std
        init.normal_(self.query_key_value.weight, std=std)
        init.normal_(self.dense.weight, std=std / math.sqrt(2.0 * self.config.num_layers))
        init.zeros_(self.query_key_value.bias)
        init.zeros_(self.dense.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | AttentionMask | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend over hidden_states [b, s, h] (after the cached tokens, if any); return the output [b, s, h]."""
        b, s, h = hidden_states.shape
        qkv = self.query_key_value(hidden_states).view(b, s, self.num_heads, 3, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=3))  # each [b, nh, s, d]
        past = 0 if kv_cache is None else kv_cache.length
        if self.use_rope:
            if position_ids is None:
                position_ids = torch.arange(past, past + s, device=hidden_states.device).unsqueeze(0)  # [1, s]
            cos, sin = rotary_cos_sin(position_ids, self.head_dim, self.config.rotary_base, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # [b, nh, s, d]
        dropout_p = self.config.attention_dropout if self.training else 0.0
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_number - 1, k, v)  # [b, nh, past + s, d]
            context = self._cached_attention(q, k, v, attention_mask, past, dropout_p)  # [b, nh, s, d]
        elif attention_mask is None:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal)
        else:
            if not isinstance(attention_mask, AttentionMask):  # a bare Megatron mask: checked and inverted here
                attention_mask = AttentionMask.from_megatron(attention_mask, b, s)
            context = attention_mask.attend(q, k, v, dropout_p=dropout_p)  # [b, nh, s, d]
        context = context.transpose(1, 2).reshape(b, s, h)  # [b, s, h]
        return self.dense(context)  # [b, s, h]

    def _cached_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attention_mask: torch.Tensor | AttentionMask | None,
        past: int,
        dropout_p: float,
    ) -> torch.Tensor:
        """Queries q [b, nh, s, d] of positions past..past+s-1 over keys/values [b, nh, past + s, d]."""
        b, _, s, _ = q.shape
        keys = k.shape[2]
        if attention_mask is not None:
            if not isinstance(attention_mask, AttentionMask):
                attention_mask = AttentionMask.from_megatron(attention_mask, b, s, keys)
            return attention_mask.attend(q, k, v, dropout_p=dropout_p)
        if not self.causal or s == 1:  # one new token may see every key
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        if past == 0:  # prefill: plain causal attention
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        # s > 1 new tokens after cached ones: query i sees keys 0..past+i (is_causal would align top-left)
        allowed = torch.ones(s, keys, dtype=torch.bool, device=q.device).tril(diagonal=past)  # [s, past + s]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
