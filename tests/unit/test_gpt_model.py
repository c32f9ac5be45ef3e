"""GPT model: parameter count, causality, document masks, tying, RoPE, checkpointing, keyword calls."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import set_checkpoint_early_stop
from torch.utils.flop_counter import FlopCounterMode

from megatron.config import TransformerConfig
from megatron.model import (
    GPTModel,
    TransformerLayer,
    get_ltor_masks_and_position_ids,
    gpt_flops_per_token,
    num_parameters,
)

V, H, L, NH, S = 64, 32, 2, 4, 16
EOD = 0
POSITION_TYPES = ["learned_absolute", "rope"]


def make_config(position: str = "learned_absolute", **overrides: object) -> TransformerConfig:
    fields: dict[str, object] = dict(
        num_layers=L,
        hidden_size=H,
        num_attention_heads=NH,
        padded_vocab_size=V,
        max_position_embeddings=S,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        position_embedding_type=position,
    )
    fields.update(overrides)
    return TransformerConfig(**fields)  # type: ignore[arg-type]


def make_model(position: str = "learned_absolute", seed: int = 0, **overrides: object) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(make_config(position, **overrides)).eval()


def tokens(b: int = 2, s: int = S, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, V, (b, s), generator=g)  # no EOD (id 0) unless placed by a test


@pytest.mark.parametrize("position", POSITION_TYPES)
def test_parameter_count_formula(position: str) -> None:
    cfg = make_config(position, ffn_hidden_size=48)
    model = GPTModel(cfg)
    f = 48
    layer = 2 * (2 * H) + (3 * H * H + 3 * H) + (H * H + H) + (H * f + f) + (f * H + H)
    expected = V * H + L * layer + 2 * H  # word embeddings, layers, final LayerNorm; output is tied
    if position == "learned_absolute":
        expected += S * H
    assert num_parameters(model) == expected


def test_init_statistics() -> None:
    cfg = make_config(num_layers=8, hidden_size=64, init_method_std=0.05)
    torch.manual_seed(0)
    model = GPTModel(cfg)
    layer = model.encoder.layers[0]
    assert torch.all(layer.input_layernorm.weight == 1) and torch.all(layer.input_layernorm.bias == 0)
    assert torch.all(layer.self_attention.query_key_value.bias == 0)
    assert layer.mlp.dense_h_to_4h.weight.std().item() == pytest.approx(0.05, rel=0.05)
    scaled = 0.05 / math.sqrt(2 * 8)
    assert layer.self_attention.dense.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert layer.mlp.dense_4h_to_h.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.embedding.word_embeddings.weight.std().item() == pytest.approx(0.05, rel=0.1)


@pytest.mark.parametrize("position", POSITION_TYPES)
def test_no_causal_leakage(position: str) -> None:
    model = make_model(position)
    ids = tokens()
    with torch.no_grad():
        base = model(ids)
        for t in (0, 5, S - 1):
            changed = ids.clone()
            changed[:, t] = changed[:, t] % (V - 1) + 1  # a different id in 1..V-1
            out = model(changed)
            assert torch.equal(out[:, :t], base[:, :t]), f"logits before {t} changed"
            assert not torch.allclose(out[:, t], base[:, t]), "the changed token must matter at its own position"


def reference_ltor(data: torch.Tensor, reset_pos: bool, reset_att: bool, eod_mask: bool):
    """Straightforward per-row loop version of Megatron's left-to-right masks."""
    b, s = data.shape
    mask = torch.tril(torch.ones(b, s, s)).view(b, 1, s, s)
    loss_mask = torch.ones(b, s)
    if eod_mask:
        loss_mask[data == EOD] = 0.0
    pos = torch.arange(s).unsqueeze(0).repeat(b, 1)
    for row in range(b):
        prev = 0
        for i in (data[row] == EOD).nonzero().flatten().tolist():
            if reset_att:
                mask[row, 0, i + 1 :, : i + 1] = 0
            if reset_pos:
                pos[row, i + 1 :] -= i + 1 - prev
                prev = i + 1
    return mask < 0.5, loss_mask, pos


@pytest.mark.parametrize(
    "reset_pos,reset_att,eod_mask", [(True, True, True), (True, False, False), (False, True, True)]
)
def test_ltor_masks_match_reference(reset_pos: bool, reset_att: bool, eod_mask: bool) -> None:
    g = torch.Generator().manual_seed(3)
    data = torch.randint(0, 4, (3, 12), generator=g)  # many EODs (id 0), incl. adjacent and last
    data[0, -1] = EOD
    mask, loss_mask, pos = get_ltor_masks_and_position_ids(data, EOD, reset_pos, reset_att, eod_mask)
    ref_mask, ref_loss, ref_pos = reference_ltor(data, reset_pos, reset_att, eod_mask)
    assert torch.equal(pos, ref_pos)
    assert torch.equal(loss_mask, ref_loss)
    if reset_att:
        assert mask is not None and mask.dtype == torch.bool and torch.equal(mask, ref_mask)
    else:
        assert mask is None


@pytest.mark.parametrize("position", POSITION_TYPES)
def test_document_reset_mask_isolates_documents(position: str) -> None:
    model = make_model(position)
    doc1, doc2 = tokens(1, 6, seed=4), tokens(1, 9, seed=5)
    eod = torch.full((1, 1), EOD)
    row = torch.cat((doc1, eod, doc2), dim=1)  # [1, 16]: doc1 + EOD | doc2
    mask, _, pos = get_ltor_masks_and_position_ids(row, EOD, True, True, True)
    with torch.no_grad():
        full = model(row, pos, mask)[:, 7:]
        other = torch.cat((tokens(1, 6, seed=6), eod, doc2), dim=1)
        mask2, _, pos2 = get_ltor_masks_and_position_ids(other, EOD, True, True, True)
        changed = model(other, pos2, mask2)[:, 7:]
        alone = model(doc2)
        leaky = model(row)[:, 7:]  # no reset: document 2 sees document 1
    torch.testing.assert_close(changed, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(full, alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(leaky, alone, atol=1e-3)


def test_explicit_causal_mask_equals_is_causal_path() -> None:
    model = make_model("rope")
    ids = tokens(3)
    causal = torch.ones(S, S, dtype=torch.bool).triu(1).view(1, 1, S, S)
    with torch.no_grad():
        fast = model(ids)
        explicit = model(ids, attention_mask=causal)
        explicit_b = model(ids, attention_mask=causal.expand(3, 1, S, S))
    torch.testing.assert_close(explicit, fast, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit_b, fast, rtol=1e-5, atol=1e-5)


def test_bad_attention_mask_is_a_clear_error() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="bool"):
        model(tokens(), attention_mask=torch.ones(1, 1, S, S))
    with pytest.raises(ValueError, match="shape"):
        model(tokens(), attention_mask=torch.ones(1, 1, S, S - 1, dtype=torch.bool))


def test_weight_tying_and_gradient_from_both_uses() -> None:
    model = make_model().train()
    assert model.output_weight is model.embedding.word_embeddings.weight
    assert sum(1 for p in model.parameters() if p.shape == (V, H)) == 1
    ids = tokens(2, 8)  # ids in 1..V-1; some vocabulary rows never appear
    captured: dict[str, torch.Tensor] = {}
    model.encoder.final_layernorm.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    logits = model(ids)
    logits.retain_grad()
    F.cross_entropy(logits.reshape(-1, V), ids.roll(-1, 1).reshape(-1)).backward()
    grad = model.output_weight.grad
    output_part = logits.grad.reshape(-1, V).t() @ captured["h"].reshape(-1, H).detach()  # [V, h]
    embedding_part = grad - output_part
    present = torch.zeros(V, dtype=torch.bool)
    present[ids.flatten()] = True
    assert output_part[~present].abs().sum() > 0, "output layer must give gradient to unseen rows"
    torch.testing.assert_close(embedding_part[~present], torch.zeros_like(embedding_part[~present]), atol=1e-7, rtol=0)
    assert embedding_part[present].abs().sum(dim=1).min() > 0, "every looked-up row gets an embedding gradient"


def test_rope_works_at_different_lengths_and_is_relative() -> None:
    model = make_model("rope")
    long_ids = tokens(2, 3 * S)  # longer than seq_length: no position table to run out of
    with torch.no_grad():
        long_out = model(long_ids)
        short_out = model(long_ids[:, :8])
        pos = torch.arange(3 * S).unsqueeze(0).expand(2, -1)
        shifted = model(long_ids, position_ids=pos + 100)
        reversed_pos = model(long_ids, position_ids=pos.flip(1))
    assert long_out.shape == (2, 3 * S, V) and short_out.shape == (2, 8, V)
    torch.testing.assert_close(short_out, long_out[:, :8], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shifted, long_out, rtol=1e-4, atol=1e-4)  # only relative positions matter
    assert not torch.allclose(reversed_pos, long_out, atol=1e-3)  # ...and they do matter


def test_learned_positions_reject_too_long_sequences() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="max-position-embeddings"):
        model(tokens(1, S + 1))


def _loss_and_grads(model: GPTModel, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(123)  # same dropout masks in both runs
    loss = model(ids, labels=ids.roll(-1, 1)).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("position", POSITION_TYPES)
def test_activation_checkpointing_same_loss_and_grads(position: str) -> None:
    plain = make_model(position, hidden_dropout=0.1, attention_dropout=0.1).train()
    ckpt = make_model(position, hidden_dropout=0.1, attention_dropout=0.1, checkpoint_activations=True).train()
    ckpt.load_state_dict(plain.state_dict())
    ids = tokens()
    recomputed: list[int] = []
    ckpt.encoder.layers[0].mlp.register_forward_hook(lambda *a: recomputed.append(1))
    loss_a, grads_a = _loss_and_grads(plain, ids)
    loss_b, grads_b = _loss_and_grads(ckpt, ids)
    assert len(recomputed) == 2, "checkpointed layer must run again in backward"
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6)


class KeywordOnlyWrapper(nn.Module):
    """Like random-LTD's wrapper: only hidden_states may be positional."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.inner = layer
        self.seen: list[set[str]] = []

    def forward(self, hidden_states: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        self.seen.append(set(kwargs))
        return self.inner(hidden_states, **kwargs)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_block_calls_layers_with_keywords(checkpointing: bool) -> None:
    model = make_model("rope", checkpoint_activations=checkpointing).train()
    ids = tokens()
    mask, _, pos = get_ltor_masks_and_position_ids(ids, EOD, True, True, False)
    expected = model(ids, pos, mask, labels=ids).sum()
    wrapper = KeywordOnlyWrapper(model.encoder.layers[1])
    model.encoder.layers[1] = wrapper
    got = model(ids, pos, mask, labels=ids).sum()
    got.backward()
    torch.testing.assert_close(got, expected)
    assert wrapper.seen and all(keys == {"attention_mask", "position_ids"} for keys in wrapper.seen)
    params = inspect.signature(TransformerLayer.forward).parameters
    assert params["attention_mask"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["position_ids"].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(TypeError):
        wrapper.inner(torch.zeros(1, 4, H), None)


def test_layer_runs_on_any_subsequence_length() -> None:
    model = make_model("rope")
    layer = model.encoder.layers[0]
    for s in (1, 5, 40):
        x = torch.randn(2, s, H)
        out = layer(x, position_ids=torch.arange(s).expand(2, s))
        assert out.shape == (2, s, H)


@pytest.mark.parametrize("mode", ["to_bf16", "autocast"])
def test_bf16_forward(mode: str) -> None:
    model = make_model("rope")
    ids = tokens()
    with torch.no_grad():
        ref = model(ids, labels=ids)
        if mode == "to_bf16":
            loss = model.to(torch.bfloat16)(ids, labels=ids)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(ids, labels=ids)
    assert loss.dtype == torch.float32 and loss.shape == (2, S)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_flops_per_token_matches_counted_matmuls(checkpointing: bool) -> None:
    cfg = make_config(ffn_hidden_size=48, checkpoint_activations=checkpointing)
    torch.manual_seed(0)
    model = GPTModel(cfg).train()
    b = 3
    ids = tokens(b)
    # The formula counts a full forward recompute; disable checkpoint's early stop to match it.
    with sdpa_kernel(SDPBackend.MATH), set_checkpoint_early_stop(False), FlopCounterMode(display=False) as counter:
        model(ids, labels=ids).mean().backward()
    assert gpt_flops_per_token(cfg, S) == pytest.approx(counter.get_total_flops() / (b * S), rel=1e-9)
