"""Chunked output layer + cross-entropy: the loss and gradients of F.linear + F.cross_entropy(fp32), without any
[N, V] fp32 tensor (forward or backward) once the tokens span several chunks."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from megatron.config import TransformerConfig
from megatron.model import BertModel, GPTModel
from megatron.model.cross_entropy import chunk_tokens_for, linear_cross_entropy

N, HID, V = 37, 16, 50


def reference(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits.float().reshape(-1, weight.shape[0]), labels.reshape(-1),
                           reduction="none").view(labels.shape)


def leaves(*shapes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g).requires_grad_() for shape in shapes]


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 36])
def test_same_loss_and_gradients_fp32(chunk: int, with_bias: bool) -> None:
    hidden, weight, bias = leaves((2, N // 2 + 1, HID), (V, HID), (V,))
    labels = torch.randint(0, V, hidden.shape[:-1], generator=torch.Generator().manual_seed(1))
    labels[0, 3] = -100  # F.cross_entropy's ignore_index: loss 0, no gradient
    upstream = torch.rand(labels.shape, generator=torch.Generator().manual_seed(2))
    b = bias if with_bias else None
    got = linear_cross_entropy(hidden, weight, labels, b, chunk_tokens=chunk)
    got_grads = torch.autograd.grad((got * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))
    ref = reference(hidden, weight, labels, b)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))
    assert got.dtype == torch.float32 and got[0, 3] == 0
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for a, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_close_to_the_unchunked_path() -> None:
    hidden, weight = leaves((N, HID), (V, HID), seed=3)
    labels = torch.randint(0, V, (N,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(hidden, weight, labels, chunk_tokens=8)
        ref = reference(hidden, weight, labels)
    g_got = torch.autograd.grad(got.sum(), [hidden, weight])
    g_ref = torch.autograd.grad(ref.sum(), [hidden, weight])
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)  # same bf16 logits, fp32 softmax
    for a, r in zip(g_got, g_ref):
        assert a.dtype == r.dtype
        torch.testing.assert_close(a, r, rtol=2e-2, atol=2e-2)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_at_most_one_chunk_of_logits_exists() -> None:
    hidden, weight = leaves((N, HID), (V, HID))
    labels = torch.randint(0, V, (N,))
    with LargestTensor() as chunked:
        linear_cross_entropy(hidden, weight, labels, chunk_tokens=8).sum().backward()
    with LargestTensor() as plain:
        reference(hidden, weight, labels).sum().backward()
    assert plain.largest == N * V
    assert chunked.largest == max(8 * V, V * HID), "no [N, V] tensor in forward or backward"


def test_default_chunk_is_256_mib_of_fp32_logits() -> None:
    assert chunk_tokens_for(50304) == (256 << 20) // (4 * 50304)
    assert chunk_tokens_for(10**12) == 1


def tiny(cls: type, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4, padded_vocab_size=V,
                            max_position_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0)
    return cls(cfg, **kw).train()


def test_gpt_and_bert_models_train_the_same_with_small_chunks() -> None:
    ids = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(5))
    labels = ids.roll(-1, 1)
    gpt = tiny(GPTModel)
    gpt_chunked = copy.deepcopy(gpt)
    gpt_chunked.loss_chunk_tokens = 7
    for model in (gpt, gpt_chunked):
        model(ids, labels=labels).mean().backward()
    torch.testing.assert_close(gpt_chunked(ids, labels=labels), gpt(ids, labels=labels), rtol=0, atol=1e-6)
    for a, b in zip(gpt_chunked.parameters(), gpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    bert = tiny(BertModel)
    bert_chunked = copy.deepcopy(bert)
    bert_chunked.loss_chunk_tokens = 5
    padding = torch.ones_like(ids)
    padding[1, 10:] = 0
    for model in (bert, bert_chunked):
        lm, sop = model(ids, padding, lm_labels=labels)
        ((lm * padding).sum() + sop.sum()).backward()
    for a, b in zip(bert_chunked.parameters(), bert.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    logits = gpt.eval()(ids)  # without labels: the logits, for generation and the eval harness
    assert logits.shape == (3, 16, V)
