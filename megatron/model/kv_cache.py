"""Inference-only key/value cache for incremental (token by token) decoding with GPTModel.

A ``KVCache`` holds, for every attention layer, the keys and values [b, nh, t, d] of the t tokens run so far
(keys after the rotary embedding, if any). ``GPTModel(new_ids, kv_cache=cache)`` runs only the new tokens
[b, s]: each layer appends their keys/values and attends over all t + s of them, then ``cache.length``
advances by s. Positions default to the absolute positions t..t+s-1 (learned table and RoPE alike).

Usage (greedy, one row)::

    cache = KVCache(capacity=len(prompt) + n_new)
    logits = model(prompt_ids, kv_cache=cache)                    # prefill: [1, p, V]
    for _ in range(n_new):
        nxt = logits[:, -1].argmax(-1, keepdim=True)                # [1, 1]
        logits = model(nxt, kv_cache=cache)                         # [1, 1, V], sees all earlier tokens

Rows of different lengths: left-pad them, pass per-row ``position_ids`` (the real positions) and an
``attention_mask`` bool [b, 1, s, t + s] (True = may NOT attend) that blocks the padding keys; ``select``
drops finished rows. Training never passes a cache (dropout, recomputation and random-LTD ignore it).
"""
from __future__ import annotations

import torch


class KVCache:
    """Per-layer keys/values [b, nh, length, d]; storage grows as needed (or is preallocated to ``capacity``)."""

    def __init__(self, *, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"KVCache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.length = 0
        """Tokens cached in every layer (the positions 0..length-1 of the cache)."""
        self._keys: dict[int, torch.Tensor] = {}  # layer index -> [b, nh, allocated, d]
        self._values: dict[int, torch.Tensor] = {}

    @property
    def batch_size(self) -> int | None:
        """Rows held, or None while empty."""
        for k in self._keys.values():
            return int(k.shape[0])
        return None

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new key/value [b, nh, s, d] of ``layer`` after the ``length`` cached ones.

        Returns that layer's keys and values [b, nh, length + s, d] (views of the storage). ``length``
        itself advances only in ``advance`` (once every layer has run the new tokens).
        """
        b, nh, s, d = key.shape
        t = self.length
        stored = self._keys.get(layer)
        if stored is not None and (stored.shape[0], stored.shape[1], stored.shape[3]) != (b, nh, d):
            raise ValueError(
                f"KVCache layer {layer}: cached keys [{stored.shape[0]}, {stored.shape[1]}, *, {stored.shape[3]}] "
                f"do not match new keys {list(key.shape)} (same batch rows and heads needed; see select())"
            )
        if stored is None and t:
            raise ValueError(f"KVCache: layer {layer} has no cached keys but length is {t}")
        if stored is None or stored.shape[2] < t + s:
            size = max(t + s, self.capacity or 0, 2 * stored.shape[2] if stored is not None else 0)
            keys = key.new_empty(b, nh, size, d)  # [b, nh, size, d]
            values = value.new_empty(b, nh, size, d)
            if stored is not None:
                keys[:, :, :t] = stored[:, :, :t]
                values[:, :, :t] = self._values[layer][:, :, :t]
            self._keys[layer], self._values[layer] = keys, values
        keys, values = self._keys[layer], self._values[layer]
        keys[:, :, t: t + s] = key
        values[:, :, t: t + s] = value
        return keys[:, :, : t + s], values[:, :, : t + s]  # [b, nh, t + s, d]

    def advance(self, num_tokens: int) -> None:
        """Count ``num_tokens`` new tokens as cached (called by the transformer block after its layers)."""
        self.length += int(num_tokens)

    def select(self, rows: torch.Tensor | list[int]) -> None:
        """Keep only the given batch rows (in the given order) in every layer, e.g. the unfinished ones."""
        for layer in list(self._keys):
            index = torch.as_tensor(rows, dtype=torch.long, device=self._keys[layer].device)
            self._keys[layer] = self._keys[layer].index_select(0, index)
            self._values[layer] = self._values[layer].index_select(0, index)

    def reset(self) -> None:
        """Forget every cached token."""
        self._keys.clear()
        self._values.clear()
        self.length = 0
