"""Self-attention through torch's scaled_dot_product_attention (fused qkv projection)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from megatron.config import TransformerConfig
from megatron.model.rope import apply_rotary, rotary_cos_sin


def check_attention_mask(mask: torch.Tensor, batch: int, seq: int) -> None:
    """Raise ValueError unless mask is a bool [b or 1, 1, s, s] tensor (True = may NOT attend)."""
    if mask.dtype != torch.bool:
        raise ValueError(
            f"attention_mask must be a bool tensor (True = not allowed to attend), got dtype {mask.dtype}"
        )
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (seq, seq) or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"attention_mask must have shape [{batch} or 1, 1, {seq}, {seq}], got {list(mask.shape)}"
        )


class SelfAttention(nn.Module):
    """Multi-head self-attention on [b, s, h]; causal (decoder) or bidirectional (encoder).

    Mask convention (Megatron): ``attention_mask`` is bool [b or 1, 1, s, s] with True meaning
    "may NOT attend"; when given it fully defines visibility (it must already contain the
    causal part for a decoder). ``None`` means plain causal (decoder) or full (encoder)
    attention; the decoder then takes SDPA's ``is_causal`` fast path.
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
        nn.init.normal_(self.query_key_value.weight, mean=0.0, std=std)
        nn.init.normal_(self.dense.weight, mean=0.0, std=std / math.sqrt(2.0 * self.config.num_layers))
        nn.init.zeros_(self.query_key_value.bias)
        nn.init.zeros_(self.dense.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over hidden_states [b, s, h]; return the projected output [b, s, h]."""
        b, s, h = hidden_states.shape
        qkv = self.query_key_value(hidden_states).view(b, s, self.num_heads, 3, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=3))  # each [b, nh, s, d]
        if self.use_rope:
            if position_ids is None:
                position_ids = torch.arange(s, device=hidden_states.device).unsqueeze(0)  # [1, s]
            cos, sin = rotary_cos_sin(position_ids, self.head_dim, self.config.rotary_base, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # [b, nh, s, d]
        dropout_p = self.config.attention_dropout if self.training else 0.0
        if attention_mask is None:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal)
        else:
            check_attention_mask(attention_mask, b, s)
            # SDPA's bool mask means True = may attend. A fully blocked query row (Megatron's BERT
            # mask on padding rows) yields a zero output in torch >= 2.5, not NaN.
            allowed = ~attention_mask  # [b or 1, 1, s, s]
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
        context = context.transpose(1, 2).reshape(b, s, h)  # [b, s, h]
        return self.dense(context)  # [b, s, h]
