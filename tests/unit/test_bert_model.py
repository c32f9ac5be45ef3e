"""BERT model: shapes, padding mask, bidirectionality, token types, heads and tying."""
from __future__ import annotations

import pytest
import torch

from megatron.config import TransformerConfig
from megatron.model import BertModel, bert_extended_attention_mask, num_parameters

V, H, L, NH, S = 64, 32, 2, 4, 12


def make_model(position: str = "learned_absolute", **kwargs: bool | int) -> BertModel:
    cfg = TransformerConfig(
        num_layers=L,
        hidden_size=H,
        num_attention_heads=NH,
        padded_vocab_size=V,
        max_position_embeddings=S,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        position_embedding_type=position,
    )
    torch.manual_seed(0)
    return BertModel(cfg, **kwargs).eval()  # type: ignore[arg-type]


def batch(b: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (b, S), generator=g)
    types = torch.zeros(b, S, dtype=torch.long)
    types[:, S // 2 :] = 1
    padding = torch.ones(b, S, dtype=torch.long)
    return ids, types, padding


def test_shapes_and_fp32_per_token_loss() -> None:
    model = make_model()
    ids, types, padding = batch()
    logits, binary = model(ids, padding, types)
    assert logits.shape == (2, S, V) and binary.shape == (2, 2)
    loss, binary2 = model(ids, padding, types, lm_labels=ids)
    assert loss.shape == (2, S) and loss.dtype == torch.float32
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids.reshape(-1), reduction="none")
    torch.testing.assert_close(loss, expected.view(2, S))
    torch.testing.assert_close(binary2, binary)
    no_head = make_model(add_binary_head=False)
    assert no_head(ids, padding, types)[1] is None


def test_parameter_count_and_tied_lm_head() -> None:
    model = make_model()
    layer = 2 * (2 * H) + (3 * H * H + 3 * H) + (H * H + H) + (4 * H * H + 4 * H) + (4 * H * H + H)
    embeddings = V * H + S * H + 2 * H
    lm_head = (H * H + H) + 2 * H + V  # dense, LayerNorm, vocab bias (projection tied)
    binary = (H * H + H) + (2 * H + 2)  # pooler + binary head
    assert num_parameters(model) == embeddings + L * layer + 2 * H + lm_head + binary
    ids, types, padding = batch()
    loss, _ = model.train()(ids, padding, types, lm_labels=ids)
    loss.mean().backward()
    present = torch.zeros(V, dtype=torch.bool)
    present[ids.flatten()] = True
    assert model.embedding.word_embeddings.weight.grad[~present].abs().sum() > 0  # via the tied LM head


@pytest.mark.parametrize("position", ["learned_absolute", "rope"])
def test_padded_tokens_do_not_change_real_outputs(position: str) -> None:
    model = make_model(position)
    ids, types, padding = batch()
    n_real = 7
    padding[:, n_real:] = 0
    other = ids.clone()
    other[:, n_real:] = torch.randint(1, V, (2, S - n_real), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        logits, binary = model(ids, padding, types)
        logits2, binary2 = model(other, padding, types)
        alone, binary_alone = model(ids[:, :n_real], padding[:, :n_real], types[:, :n_real])
        unmasked, _ = model(ids, torch.ones_like(padding), types)
    torch.testing.assert_close(logits2[:, :n_real], logits[:, :n_real], rtol=0, atol=1e-5)
    torch.testing.assert_close(binary2, binary, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits[:, :n_real], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(binary, binary_alone, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(unmasked[:, :n_real], logits[:, :n_real], atol=1e-3)


def test_encoder_is_bidirectional_and_uses_token_types() -> None:
    model = make_model()
    ids, types, padding = batch()
    changed = ids.clone()
    changed[:, -1] = changed[:, -1] % (V - 1) + 1
    with torch.no_grad():
        base, _ = model(ids, padding, types)
        later_changed, _ = model(changed, padding, types)
        other_types, _ = model(ids, padding, torch.zeros_like(types))
    assert not torch.allclose(later_changed[:, 0], base[:, 0], atol=1e-4), "token 0 must see the last token"
    assert not torch.allclose(other_types, base, atol=1e-4)


def test_extended_attention_mask() -> None:
    padding = torch.tensor([[1, 1, 0], [1, 1, 1]])
    mask = bert_extended_attention_mask(padding)
    assert mask.shape == (2, 1, 3, 3) and mask.dtype == torch.bool
    expected_row0 = torch.tensor([[False, False, True], [False, False, True], [False, False, False]])
    assert torch.equal(mask[0, 0], expected_row0)  # pad key blocked, except a pad token seeing itself
    assert not mask[1].any()


def test_bad_shapes_are_clear_errors() -> None:
    model = make_model()
    ids, types, padding = batch()
    with pytest.raises(ValueError, match="padding_mask"):
        model(ids, padding[:, :-1], types)
    with pytest.raises(ValueError, match="num_tokentypes"):
        make_model(num_tokentypes=0)(ids, padding, types)


def test_fully_blocked_query_rows_stay_finite() -> None:
    """Megatron's own BERT mask blocks padding rows entirely; attention must not turn them into NaN."""
    model = make_model()
    ids, types, padding = batch()
    padding[:, 8:] = 0
    pad = padding.bool()
    megatron_mask = ~(pad.unsqueeze(1) & pad.unsqueeze(2)).unsqueeze(1)  # [b, 1, s, s], pad rows all True
    with torch.no_grad():
        hidden = model.embedding(ids, torch.arange(S).expand(2, S), types)
        ours = model.encoder(hidden, attention_mask=bert_extended_attention_mask(padding))
        theirs = model.encoder(hidden, attention_mask=megatron_mask)
    assert torch.isfinite(theirs).all()
    torch.testing.assert_close(theirs[:, :8], ours[:, :8], rtol=1e-5, atol=1e-5)
