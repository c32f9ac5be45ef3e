"""Pre-LayerNorm transformer layer and the layer stack (block).

Calling convention (random-LTD depends on it): a layer is always called as
``layer(hidden_states, attention_mask=..., position_ids=...)`` — hidden states positional,
everything else by keyword — so any wrapper with the signature ``(hidden_states, **kwargs)``
can replace a layer in ``TransformerBlock.layers``. Inference with a key/value cache adds ``kv_cache=...``
to that call (only then: training calls are unchanged).

Masks: the block turns the attention mask into an ``AttentionMask`` once per forward (``megatron.model.masks``)
and gives that to every ``TransformerLayer``. Any other module in ``layers`` (a wrapper, e.g. random-LTD, may run
its layer on a subset of the tokens) is given Megatron's bool tensor (True = may NOT attend) instead, which it can
index; the wrapped layer then prepares it itself.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from megatron.config import TransformerConfig
from megatron.model.attention import SelfAttention
from megatron.model.kv_cache import KVCache
from megatron.model.masks import AttentionMask
from megatron.model.mlp import MLP


def make_layernorm(config: TransformerConfig) -> nn.LayerNorm:
    """LayerNorm over h with the configured epsilon; weight 1, bias 0."""
    return nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)


class TransformerLayer(nn.Module):
    """One pre-LN layer: x + drop(attn(LN(x))), then x + drop(mlp(LN(x))). Works for any s."""

    def __init__(self, config: TransformerConfig, layer_number: int, *, causal: bool = True) -> None:
        super().__init__()
        self.config = config
        self.layer_number = layer_number
        self.causal = causal
        self.input_layernorm = make_layernorm(config)
        self.self_attention = SelfAttention(config, layer_number, causal=causal)
        self.post_attention_layernorm = make_layernorm(config)
        self.mlp = MLP(config)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | AttentionMask | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """hidden_states [b, s, h]; mask bool [b or 1, 1, s, s] (True = blocked) or prepared; positions [b, s].

        With ``kv_cache`` (inference): the s tokens follow the cached ones; the mask is [b or 1, 1, s, t + s].
        """
        attn_out = self.self_attention(
            self.input_layernorm(hidden_states), attention_mask=attention_mask, position_ids=position_ids,
            kv_cache=kv_cache,
        )  # [b, s, h]
        hidden_states = hidden_states + self.hidden_dropout(attn_out)  # [b, s, h]
        mlp_out = self.mlp(self.post_attention_layernorm(hidden_states))  # [b, s, h]
        return hidden_states + self.hidden_dropout(mlp_out)  # [b, s, h]


class TransformerBlock(nn.Module):
    """``num_layers`` TransformerLayers (in ``self.layers``) followed by a final LayerNorm."""

    def __init__(self, config: TransformerConfig, *, causal: bool = True) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            TransformerLayer(config, layer_number=i + 1, causal=causal) for i in range(config.num_layers)
        )
        self.final_layernorm = make_layernorm(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | AttentionMask | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Run every layer (keyword call, optionally recomputed in backward) then the final LN.

        ``attention_mask``: Megatron's bool tensor or an ``AttentionMask``; prepared here once for all layers.
        With ``kv_cache`` (inference only, never recomputed) every layer appends the new tokens' keys/values
        and the cache's length advances by s afterwards.
        """
        b, s = hidden_states.shape[:2]
        if kv_cache is not None:
            if self.training:
                raise ValueError("kv_cache is for inference: call model.eval() first")
            if attention_mask is not None and not isinstance(attention_mask, AttentionMask):
                attention_mask = AttentionMask.from_megatron(attention_mask, b, s, kv_cache.length + s)
            for layer in self.layers:
                hidden_states = layer(
                    hidden_states, attention_mask=self._mask_for(layer, attention_mask), position_ids=position_ids,
                    kv_cache=kv_cache,
                )  # [b, s, h]
            kv_cache.advance(s)
            return self.final_layernorm(hidden_states)  # [b, s, h]
        if attention_mask is not None and not isinstance(attention_mask, AttentionMask):
            attention_mask = AttentionMask.from_megatron(attention_mask, b, s)  # checked and inverted once
        recompute = self.config.checkpoint_activations and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            mask = self._mask_for(layer, attention_mask)
            if recompute:
                hidden_states = checkpoint(
                    layer,
                    hidden_states,
                    use_reentrant=False,
                    attention_mask=mask,
                    position_ids=position_ids,
                )  # [b, s, h]
            else:
                hidden_states = layer(hidden_states, attention_mask=mask, position_ids=position_ids)
        return self.final_layernorm(hidden_states)  # [b, s, h]

    @staticmethod
    def _mask_for(layer: nn.Module, mask: AttentionMask | None) -> torch.Tensor | AttentionMask | None:
        """The prepared mask for a TransformerLayer; Megatron's bool tensor for a wrapper (it may gather tokens)."""
        if mask is None or isinstance(layer, TransformerLayer):
            return mask
        return mask.megatron()
