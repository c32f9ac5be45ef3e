"""End to end: --reset-attention-mask through document ids and the chunked output-layer loss, under ZeRO-3.

Two tiny ZeRO-3 runs, one with the loss in chunks of a few tokens (the path a 50k vocabulary at sequence 2048
takes), one in a single piece: same losses at every iteration, so the chunked autograd Function is right where
DeepSpeed partitions the tied output weight.
"""
from __future__ import annotations

import math

from conftest import gpt_argv


def test_document_masks_and_chunked_loss_train_like_the_plain_path(gpt_data_prefix, monkeypatch):
    import megatron.model.cross_entropy as cross_entropy
    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    argv = gpt_argv(gpt_data_prefix, zero_stage=3, train_iters=3, eval_iters=1, reset_attention_mask=True,
                    reset_position_ids=True, eod_mask_loss=True)
    plain = pretrain_from_argv(GPT_SPEC, argv)
    monkeypatch.setattr(cross_entropy, "CHUNK_BYTES", 4 * 8192 * 24)  # 24 tokens per chunk: 6 chunks per batch
    calls: list[int] = []
    real = cross_entropy._ChunkedLinearCrossEntropy.apply
    monkeypatch.setattr(cross_entropy._ChunkedLinearCrossEntropy, "apply",
                        lambda *a: calls.append(1) or real(*a))
    chunked = pretrain_from_argv(GPT_SPEC, argv)
    assert calls, "the chunked path ran"
    assert len(plain.losses) == len(chunked.losses) == 3
    for a, b in zip(plain.losses, chunked.losses):
        assert math.isclose(a["lm loss"], b["lm loss"], rel_tol=1e-5), (plain.losses, chunked.losses)
