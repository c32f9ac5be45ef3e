"""Output layer + per-token cross-entropy without keeping fp32 [b, s, V] logits alive.

``F.linear`` followed by ``F.cross_entropy(logits.float())`` keeps the logits in the model dtype and an fp32
log-softmax of the same size for the backward pass: at sequence 2048 and a 50k vocabulary that is several GB per
micro-batch. ``linear_cross_entropy`` computes the same per-token loss in chunks of tokens: each chunk's logits
exist only while that chunk is processed, in the forward pass and again (recomputed) in the backward pass, so at
most one chunk of fp32 logits is alive at a time. The price is one more output-layer matmul in backward.

Numerics follow the unchunked computation: logits in the dtype of ``hidden``/``weight``, softmax in fp32, the
gradient of the logits cast back to the model dtype before the two backward matmuls; labels equal to
``ignore_index`` (-100, as in ``F.cross_entropy``) get loss 0 and no gradient. When everything fits in one chunk
the plain autograd computation runs (no recomputation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_BYTES = 256 << 20
"""Default budget of one chunk's fp32 logits (tokens per chunk = CHUNK_BYTES // (4 V))."""

IGNORE_INDEX = -100


def chunk_tokens_for(vocab_size: int, chunk_bytes: int | None = None) -> int:
    """Tokens per chunk so that a chunk's fp32 logits take at most ``chunk_bytes`` (default CHUNK_BYTES; >= 1)."""
    return max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (4 * max(1, vocab_size)))


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Logits [c, V] of one chunk of hidden [c, h], in the dtype F.linear gives (autocast included)."""
    return F.linear(hidden, weight, bias)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """loss[i] = logsumexp(h_i W^T + b) - (h_i W^T + b)[label_i], chunk by chunk; backward recomputes the logits."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                labels: torch.Tensor, chunk: int) -> torch.Tensor:
        n = hidden.shape[0]
        loss = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        ignored = labels == IGNORE_INDEX  # [N]
        safe_labels = labels.masked_fill(ignored, 0)  # [N]
        device_type = hidden.device.type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type), device_type)
        ctx.logits_dtype = hidden.dtype
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            logits = _chunk_logits(hidden[start:end], weight, bias)  # [c, V]
            ctx.logits_dtype = logits.dtype
            logits = logits.float()  # [c, V] fp32
            lse[start:end] = torch.logsumexp(logits, dim=1)
            target = logits.gather(1, safe_labels[start:end, None]).squeeze(1)  # [c]
            loss[start:end] = lse[start:end] - target
            del logits
        loss.masked_fill_(ignored, 0.0)
        ctx.chunk = chunk
        ctx.has_bias = bias is not None
        ctx.save_for_backward(hidden, weight, bias if bias is not None else weight.new_empty(0), safe_labels,
                              ignored, lse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):  # type: ignore[override]
        hidden, weight, bias, labels, ignored, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        n, chunk = hidden.shape[0], ctx.chunk
        scale = grad_loss.float().masked_fill(ignored, 0.0)  # [N]
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        enabled, autocast_dtype, device_type = ctx.autocast
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=enabled):  # the forward's precision
            for start in range(0, n, chunk):
                end = min(n, start + chunk)
                h = hidden[start:end]  # [c, h]
                probs = torch.exp(_chunk_logits(h, weight, bias).float() - lse[start:end, None])  # [c, V] softmax
                rows = torch.arange(end - start, device=probs.device)
                probs[rows, labels[start:end]] -= 1.0
                probs *= scale[start:end, None]  # d loss / d logits, fp32
                grad_logits = probs.to(ctx.logits_dtype)  # as the backward of .float(): back to the logits dtype
                del probs
                if need_h:
                    grad_hidden[start:end] = grad_logits @ weight.to(grad_logits.dtype)  # [c, h]
                if need_w:
                    grad_weight += (grad_logits.t() @ h.to(grad_logits.dtype)).float()  # [V, h]
                if need_b:
                    grad_bias += grad_logits.float().sum(dim=0)  # [V]
        return (grad_hidden,
                grad_weight.to(weight.dtype) if grad_weight is not None else None,
                grad_bias.to(bias.dtype) if grad_bias is not None and bias is not None else None,
                None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         bias: torch.Tensor | None = None, *, chunk_tokens: int | None = None) -> torch.Tensor:
    """Per-token fp32 cross-entropy of the logits ``hidden @ weight.T (+ bias)``: hidden [..., h] -> loss [...].

    ``chunk_tokens``: tokens per chunk (default: ``chunk_tokens_for(V)``, 256 MiB of fp32 logits).
    """
    shape = hidden.shape[:-1]
    if labels.shape != shape:
        raise ValueError(f"labels must have shape {list(shape)}, got {list(labels.shape)}")
    flat = hidden.reshape(-1, hidden.shape[-1])  # [N, h]
    flat_labels = labels.reshape(-1)  # [N]
    chunk = chunk_tokens or chunk_tokens_for(weight.shape[0])
    if chunk < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk}")
    if flat.shape[0] <= chunk:  # one chunk: the plain computation (nothing to save by recomputing)
        logits = F.linear(flat, weight, bias)  # [N, V]
        loss = F.cross_entropy(logits.float(), flat_labels, reduction="none", ignore_index=IGNORE_INDEX)
    else:
        loss = _ChunkedLinearCrossEntropy.apply(flat, weight, bias, flat_labels, chunk)
    return loss.view(shape)
