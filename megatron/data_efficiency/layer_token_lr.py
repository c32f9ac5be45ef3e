"""Layer-token LR schedule: warmup and decay driven by consumed layer tokens (beyond upstream).

The random-LTD paper proposes "LayerToken LR": with token dropping, a step processes fewer layer tokens
early in training, so an LR schedule indexed by tokens or steps decays too early relative to the compute
actually spent. Indexing the schedule by consumed layer tokens (sum over layers of tokens processed,
see random_ltd_schedule.py) fixes that. DeepSpeed declares the ``layer_token_lr_schedule`` keys but
raises "not implemented"; here they work::

    "layer_token_lr_schedule": {"enabled": true, "warmup_layer_tokens": 1e9, "total_layer_tokens": 1e11}

Shape of the schedule (Megatron's styles, with layer tokens t in place of steps):

* warmup (t <= warmup): ``max_lr · t / warmup``
* t >= total: ``min_lr``
* else, with ``p = (t − warmup) / (total − warmup)``: constant → max_lr; linear → ``min + (max−min)(1−p)``;
  cosine → ``min + (max−min)·(1 + cos(πp))/2``; inverse-square-root → ``max(min, max·sqrt(w)/sqrt(t))``.

Wiring: the training loop calls ``LayerTokenLRSchedule.apply(optimizer, consumed_layer_tokens)`` after
each step in place of the sample/token-based scheduler's LR (per-group ``lr_mult`` honoured).
"""
from __future__ import annotations

import math
from typing import Any

from megatron.data_efficiency.random_ltd_config import LayerTokenLRConfig

DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root")


def layer_token_lr(
    consumed_layer_tokens: int,
    *,
    max_lr: float,
    min_lr: float,
    warmup_layer_tokens: int,
    total_layer_tokens: int,
    decay_style: str = "cosine",
) -> float:
    """Learning rate after ``consumed_layer_tokens`` layer tokens."""
    if decay_style not in DECAY_STYLES:
        raise ValueError(f"--lr-decay-style {decay_style!r} is not supported; expected one of {DECAY_STYLES}")
    t = max(0, consumed_layer_tokens)
    if warmup_layer_tokens > 0 and t <= warmup_layer_tokens:
        return max_lr * t / warmup_layer_tokens
    if decay_style == "constant":
        return max_lr
    if decay_style == "inverse-square-root":
        return max(min_lr, max_lr * math.sqrt(max(warmup_layer_tokens, 1)) / math.sqrt(max(t, 1)))
    if t >= total_layer_tokens:
        return min_lr
    progress = (t - warmup_layer_tokens) / (total_layer_tokens - warmup_layer_tokens)
    if decay_style == "linear":
        coeff = 1.0 - progress
    else:
        coeff = 0.5 * (math.cos(math.pi * progress) + 1.0)
    return min_lr + coeff * (max_lr - min_lr)


class LayerTokenLRSchedule:
    """LR as a function of consumed layer tokens, configured by ``layer_token_lr_schedule``."""

    def __init__(self, config: LayerTokenLRConfig, *, max_lr: float, min_lr: float, decay_style: str = "cosine"):
        if not config.enabled:
            raise ValueError("layer_token_lr_schedule.enabled is false; build LayerTokenLRSchedule only when enabled")
        if decay_style not in DECAY_STYLES:
            raise ValueError(f"--lr-decay-style {decay_style!r} is not supported; expected one of {DECAY_STYLES}")
        if min_lr > max_lr:
            raise ValueError(f"--min-lr {min_lr} is larger than --lr {max_lr}")
        self.config = config
        self.max_lr = max_lr
        self.min_lr = min_lr
        self.decay_style = decay_style

    def get_lr(self, consumed_layer_tokens: int) -> float:
        """Learning rate after ``consumed_layer_tokens`` layer tokens."""
        return layer_token_lr(
            consumed_layer_tokens,
            max_lr=self.max_lr,
            min_lr=self.min_lr,
            warmup_layer_tokens=self.config.warmup_layer_tokens,
            total_layer_tokens=self.config.total_layer_tokens,
            decay_style=self.decay_style,
        )

    def multiplier(self, consumed_layer_tokens: int) -> float:
        """LR divided by max_lr (for schedulers that scale a base LR)."""
        return self.get_lr(consumed_layer_tokens) / self.max_lr if self.max_lr else 0.0

    def apply(self, optimizer: Any, consumed_layer_tokens: int) -> float:
        """Write the LR into every param group (times its ``lr_mult``, default 1); returns the base LR."""
        lr = self.get_lr(consumed_layer_tokens)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr
