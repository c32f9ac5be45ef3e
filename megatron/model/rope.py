"""Rotary position embedding (RoPE) computed from explicit position ids.

Positions are an input ([b, s] int), not a precomputed table for the full sequence, so a
caller that keeps only some tokens (random-LTD) or truncates the sequence (curriculum
learning) passes the positions of exactly the tokens it runs.
Layout: rotate-half (the two halves of each head are the pair components), as in Megatron.
"""
from __future__ import annotations

import torch


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (cos, sin), each [b, 1, s, head_dim], for integer positions [b, s]."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
    exponent = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    inv_freq = base ** (-exponent)  # [d/2], always fp32 (never cast with the module)
    angles = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq  # [b, s, d/2]
    angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)  # [b, 1, s, d]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x [b, nh, s, d] by the angles in cos/sin [b, 1, s, d]."""
    return x * cos + _rotate_half(x) * sin
