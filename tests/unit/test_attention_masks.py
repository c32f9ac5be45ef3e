"""Masks prepared once per forward: GPT document ids (FlexAttention on CUDA, one bool matrix elsewhere) and BERT key
padding give the results of the old per-layer dense masks (fp32, ~1e-6), and no layer inverts or rebuilds them."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import megatron.model.masks as masks
from megatron.config import TransformerConfig
from megatron.model import (AttentionMask, BertModel, GPTModel, TransformerLayer, bert_extended_attention_mask,
                            document_ids_from_eod, get_ltor_masks_and_position_ids)
from megatron.model.classification import Classification

V, H, L, NH, S, B = 64, 32, 3, 4, 16, 3
EOD = 0


def config(**overrides: object) -> TransformerConfig:
    fields: dict[str, object] = dict(num_layers=L, hidden_size=H, num_attention_heads=NH, padded_vocab_size=V,
                                     max_position_embeddings=S, hidden_dropout=0.0, attention_dropout=0.0,
                                     position_embedding_type="rope")
    fields.update(overrides)
    return TransformerConfig(**fields)  # type: ignore[arg-type]


def documents_batch(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, S), generator=g)
    ids[0, 4] = ids[0, 10] = EOD
    ids[1, 7] = EOD
    ids[2, 0] = ids[2, 15] = EOD
    return ids


def old_layer_mask_forward(model: GPTModel, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
                           labels: torch.Tensor) -> torch.Tensor:
    """The computation as it was: every layer inverts Megatron's dense mask itself; unchunked fp32 loss."""
    hidden = model.embedding(ids, pos)
    for layer in model.encoder.layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=pos)  # a bare tensor: inverted in the layer
    hidden = model.encoder.final_layernorm(hidden)
    logits = F.linear(hidden, model.output_weight)
    return F.cross_entropy(logits.float().reshape(-1, V), labels.reshape(-1), reduction="none").view(labels.shape)


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_document_ids_match_megatron_reset_mask() -> None:
    ids = documents_batch()
    mask, _, _ = get_ltor_masks_and_position_ids(ids, EOD, True, True, False)
    docs = document_ids_from_eod(ids, EOD)
    assert torch.equal(AttentionMask.documents(docs, use_flex=False).megatron(), mask)
    assert torch.equal(masks.dense_document_mask(docs), ~mask)


def test_gpt_document_ids_same_loss_and_grads_as_dense_per_layer_mask() -> None:
    torch.manual_seed(0)
    new = GPTModel(config()).train()
    old = copy.deepcopy(new)
    ids = documents_batch()
    labels = ids.roll(-1, 1)
    mask, _, pos = get_ltor_masks_and_position_ids(ids, EOD, True, True, False)
    got = new(ids, pos, labels=labels, document_ids=document_ids_from_eod(ids, EOD))
    ref = old_layer_mask_forward(old, ids, pos, mask, labels)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    got.mean().backward()
    ref.mean().backward()
    for a, b in zip(grads(new), grads(old)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_mask_is_prepared_once_and_shared_by_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    real_sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kw):  # noqa: ANN001, ANN003
        seen.append(attn_mask)
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(masks.F, "scaled_dot_product_attention", recording)
    built: list[int] = []
    real_dense = masks.dense_document_mask
    monkeypatch.setattr(masks, "dense_document_mask", lambda d: built.append(1) or real_dense(d))
    model = GPTModel(config()).eval()
    ids = documents_batch()
    with torch.no_grad():
        model(ids, document_ids=document_ids_from_eod(ids, EOD))
    assert len(seen) == L and all(m is seen[0] for m in seen), "one mask object for all layers"
    assert len(built) == 1 and seen[0].shape == (B, 1, S, S)
    seen.clear()
    bert = BertModel(config(position_embedding_type="learned_absolute")).eval()
    padding = torch.ones(B, S, dtype=torch.long)
    padding[0, 9:] = 0
    with torch.no_grad():
        bert(ids, padding)
    assert len(seen) == L and all(m is seen[0] for m in seen)
    assert seen[0].shape == (B, 1, 1, S) and seen[0].dtype == torch.bool, "a key-padding mask, not [b, 1, s, s]"


def test_plain_causal_stays_on_the_is_causal_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real_sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, **kw):  # noqa: ANN001, ANN003
        calls.append(kw)
        return real_sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    model = GPTModel(config()).eval()
    with torch.no_grad():
        model(documents_batch())
    assert len(calls) == L and all(c.get("is_causal") and c.get("attn_mask") is None for c in calls)


def test_flex_block_mask_equals_the_dense_mask() -> None:
    """The FlexAttention mask_mod (used on CUDA) on CPU, uncompiled: same attention as SDPA with the bool matrix."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    ids = documents_batch()
    docs = document_ids_from_eod(ids, EOD)
    q, k, v = (torch.randn(B, NH, S, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    block_mask = masks.document_block_mask(docs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()": expected on CPU
        got = flex.flex_attention(q, k, v, block_mask=block_mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=masks.dense_document_mask(docs))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_flex_is_only_chosen_on_cuda_and_never_with_attention_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not masks.flex_attention_supported(torch.device("cpu"))
    chosen: list[bool | None] = []
    real = AttentionMask.documents.__func__  # type: ignore[attr-defined]

    def spy(cls, document_ids, *, use_flex=None):  # noqa: ANN001
        chosen.append(use_flex)
        return real(cls, document_ids, use_flex=False)

    monkeypatch.setattr(AttentionMask, "documents", classmethod(spy))
    import megatron.model.gpt_model as gpt_model

    monkeypatch.setattr(gpt_model, "flex_attention_supported", lambda device: True)
    ids = documents_batch()
    docs = document_ids_from_eod(ids, EOD)
    GPTModel(config(attention_dropout=0.1)).eval()(ids, document_ids=docs)
    GPTModel(config(attention_dropout=0.1)).train()(ids, document_ids=docs)
    GPTModel(config(attention_dropout=0.0)).train()(ids, document_ids=docs)
    assert chosen == [True, False, True]


def test_document_ids_are_checked() -> None:
    model = GPTModel(config()).eval()
    ids = documents_batch()
    with pytest.raises(ValueError, match="document_ids must have the shape"):
        model(ids, document_ids=document_ids_from_eod(ids, EOD)[:, :-1])
    with pytest.raises(ValueError, match="replaces attention_mask"):
        model(ids, attention_mask=torch.zeros(1, 1, S, S, dtype=torch.bool),
              document_ids=document_ids_from_eod(ids, EOD))


def bert_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, V, (B, S), generator=g)
    padding = torch.ones(B, S, dtype=torch.long)
    padding[0, 9:] = 0
    padding[2, 5:] = 0
    types = torch.zeros(B, S, dtype=torch.long)
    return ids, padding, types


def test_bert_key_padding_same_real_outputs_loss_and_grads_as_the_dense_mask() -> None:
    torch.manual_seed(0)
    new = BertModel(config(position_embedding_type="learned_absolute")).train()
    old = copy.deepcopy(new)
    ids, padding, types = bert_batch()
    labels = ids.roll(1, 1)
    loss_mask = padding.float()  # the loss reads real positions only (BERT masks a subset of them)
    lm, sop = new(ids, padding, types, lm_labels=labels)
    # old: Megatron's dense [b, 1, s, s] mask (a pad token sees itself), inverted in every layer
    pos = torch.arange(S).expand(B, S)
    hidden = old.encoder(old.embedding(ids, pos, types), attention_mask=bert_extended_attention_mask(padding),
                         position_ids=pos)
    old_sop = old.binary_head(old.pooler(hidden))
    old_logits = old.lm_head(hidden, old.embedding.word_embeddings.weight)
    old_lm = F.cross_entropy(old_logits.float().reshape(-1, V), labels.reshape(-1), reduction="none").view(B, S)
    real = padding.bool()
    torch.testing.assert_close(lm[real], old_lm[real], rtol=0, atol=1e-6)
    torch.testing.assert_close(sop, old_sop, rtol=0, atol=1e-6)
    ((lm * loss_mask).sum() + sop.sum()).backward()
    ((old_lm * loss_mask).sum() + old_sop.sum()).backward()
    for a, b in zip(grads(new), grads(old)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_classifier_uses_the_key_padding_mask() -> None:
    torch.manual_seed(0)
    model = Classification(config(position_embedding_type="learned_absolute"), 3).eval()
    ids, padding, types = bert_batch()
    pos = torch.arange(S).expand(B, S)
    with torch.no_grad():
        got = model(ids, padding, types)
        hidden = model.encoder(model.embedding(ids, pos, types), attention_mask=bert_extended_attention_mask(padding),
                               position_ids=pos)
        ref = model.head(model.pooler(hidden))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_wrappers_get_megatron_masks_and_fully_blocked_rows_stay_finite() -> None:
    """A layer wrapper gets Megatron's bool tensor; a query left without any key attends everywhere (no NaN)."""
    received: list[object] = []

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, hidden_states: torch.Tensor, **kwargs: object) -> torch.Tensor:
            received.append(kwargs["attention_mask"])
            return self.inner(hidden_states, **kwargs)

    model = BertModel(config(position_embedding_type="learned_absolute")).eval()
    model.encoder.layers[1] = Wrapper(model.encoder.layers[1])
    ids, padding, types = bert_batch()
    with torch.no_grad():
        model(ids, padding, types)
    assert isinstance(received[0], torch.Tensor) and received[0].shape == (B, 1, 1, S)
    assert torch.equal(received[0][:, 0, 0], ~padding.bool())
    layer = TransformerLayer(config(), 1, causal=False)
    blocked = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    blocked[..., 2, :] = True  # query 2 may see nothing
    out = layer(torch.randn(1, 4, H), attention_mask=blocked)
    assert torch.isfinite(out).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (FlexAttention block masks)")
def test_cuda_flex_document_attention_matches_dense() -> None:
    torch.manual_seed(0)
    model = GPTModel(config()).cuda().train()
    ids = documents_batch().cuda()
    docs = document_ids_from_eod(ids, EOD)
    labels = ids.roll(-1, 1)
    mask, _, pos = get_ltor_masks_and_position_ids(ids, EOD, True, True, False)
    got = model(ids, pos, labels=labels, document_ids=docs)
    ref = model(ids, pos, mask, labels=labels)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_random_ltd_layers_get_the_document_mask_of_their_kept_tokens() -> None:
    """Wrapped (token-dropping) layers gather Megatron's mask; document ids give the dense mask's loss and grads."""
    from megatron.data_efficiency.random_ltd import RandomLTD
    from megatron.data_efficiency.random_ltd_config import parse_random_ltd_config

    block = {"enabled": True, "total_layer_num": L, "random_ltd_layer_num": 1, "random_ltd_layer_id": [1],
             "random_ltd_schedule": {"min_value": 6, "max_value": S,
                                     "schedule_config": {"require_steps": 10**9, "seq_per_step": 1}}}
    torch.manual_seed(0)
    plain = GPTModel(config())
    a = RandomLTD(parse_random_ltd_config(block), seed=3).convert(copy.deepcopy(plain), TransformerLayer).train()
    b = RandomLTD(parse_random_ltd_config(block), seed=3).convert(copy.deepcopy(plain), TransformerLayer).train()
    ids = documents_batch()
    mask, _, pos = get_ltor_masks_and_position_ids(ids, EOD, True, True, False)
    labels = ids.roll(-1, 1)
    dense = a(ids, pos, mask, labels=labels)
    docs = b(ids, pos, labels=labels, document_ids=document_ids_from_eod(ids, EOD))
    torch.testing.assert_close(docs, dense, rtol=0, atol=1e-6)
    dense.mean().backward()
    docs.mean().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(docs, plain.train()(ids, pos, labels=labels, document_ids=document_ids_from_eod(
        ids, EOD)), atol=1e-4), "the wrapped layer really dropped tokens"
