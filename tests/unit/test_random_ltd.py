"""random-LTD wrapper: kept-token equivalence, identity on dropped tokens, gradients, no-ops, state dicts."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from megatron.config import TransformerConfig
from megatron.data_efficiency.random_ltd import (
    RandomLayerTokenDrop,
    RandomLTD,
    TokenSampler,
    convert_to_random_ltd,
    gather_mask,
    gather_tokens,
    random_ltd_wrappers,
    remove_random_ltd_state_dict,
    sample_token_indices,
    save_without_random_ltd,
    scatter_tokens,
)
from megatron.data_efficiency.random_ltd_config import parse_random_ltd_config
from megatron.model import BertModel, GPTModel, TransformerLayer
from megatron.model.utils import bert_extended_attention_mask, get_ltor_masks_and_position_ids

B, S, H = 3, 16, 32


def model_config(position: str = "learned_absolute", layers: int = 4, dropout: float = 0.0, **kw) -> TransformerConfig:
    """A tiny transformer config (large init so attention visibly matters)."""
    return TransformerConfig(
        num_layers=layers, hidden_size=H, num_attention_heads=4, padded_vocab_size=64,
        max_position_embeddings=S, position_embedding_type=position, hidden_dropout=dropout,
        attention_dropout=dropout, init_method_std=0.3, **kw,
    )


def ltd_config(layers: int = 4, ids: list[int] | None = None, r: int = 8, max_value: int = S, **extra):
    """An enabled random-LTD config with a constant reserved length r (require_steps huge)."""
    ids = ids if ids is not None else list(range(1, layers - 1))
    block = {
        "enabled": True, "total_layer_num": layers, "random_ltd_layer_num": len(ids), "random_ltd_layer_id": ids,
        "random_ltd_schedule": {"min_value": r, "max_value": max_value,
                                "schedule_config": {"require_steps": 10**9, "seq_per_step": 1}},
    }
    block.update(extra)
    return parse_random_ltd_config(block)


def wrap_layer(layer: nn.Module, r: int, *, seed: int = 0, **kw) -> RandomLayerTokenDrop:
    """A single wrapper around ``layer`` with reserved length r."""
    sampler = TokenSampler(1, reserved_length=r, seed=seed)
    return RandomLayerTokenDrop(layer, sampler=sampler, ordinal=0, layer_index=1, **kw)


def kept_indices(wrapper: RandomLayerTokenDrop, batch: int, seq: int) -> torch.Tensor:
    """The indices the wrapper used in its last forward (cached per forward)."""
    return wrapper.sampler.indices(wrapper.ordinal, batch, seq, torch.device("cpu"))


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reference gather with advanced indexing: x [b, s, ...] -> [b, r, ...]."""
    return x[torch.arange(x.shape[0])[:, None], idx]


# --------------------------------------------------------------------------------------------- sampling


def test_indices_sorted_unique_in_range_and_uniform():
    idx = sample_token_indices(5, torch.arange(4), 20, 7, step_key=11)
    assert idx.shape == (5, 4, 7) and idx.dtype == torch.int64
    assert bool((idx[..., 1:] > idx[..., :-1]).all()), "indices must be strictly increasing (sorted, unique)"
    assert int(idx.min()) >= 0 and int(idx.max()) < 20
    assert not torch.equal(idx[0], idx[1]), "each layer draws its own subset"
    assert not torch.equal(idx[:, 0], idx[:, 1]), "each sample draws its own subset"
    counts = torch.bincount(sample_token_indices(4000, torch.arange(1), 20, 5, step_key=3).flatten(),
                            minlength=20).double()
    expected = 4000 * 5 / 20
    assert float((counts - expected).abs().max()) < 0.08 * expected, "positions must be uniform"
    # every 2-subset of 4 positions equally likely (a weak hash would favour some), over layers, samples, steps
    pairs = torch.cat([sample_token_indices(50, torch.arange(40), 4, 2, step_key=k).reshape(-1, 2)
                       for k in range(3)])
    subsets = torch.bincount(pairs[:, 0] * 4 + pairs[:, 1], minlength=16).double()[[1, 2, 3, 6, 7, 11]]
    assert float((subsets - len(pairs) / 6).abs().max()) < 0.1 * len(pairs) / 6, subsets


def test_indices_depend_on_global_position_not_rank_or_micro_batch_layout():
    """A sample's draw is a function of (seed, step, layer, global position): 2 ranks x micro-batch 2, or
    1 rank x 2 micro-batches of 2, or 1 rank x micro-batch 4 all drop the same tokens of the same sample."""
    cpu = torch.device("cpu")
    one = TokenSampler(3, reserved_length=5, seed=7)
    one.new_forward()
    whole = one.indices(1, 4, 12, cpu)  # [4, 5]: global positions 0..3
    assert torch.equal(whole, sample_token_indices(3, torch.arange(4), 12, 5, step_key=one._step_key)[1])
    ranks = [TokenSampler(3, reserved_length=5, seed=7, data_parallel_rank=r, data_parallel_size=2) for r in (0, 1)]
    for sampler in ranks:
        sampler.new_forward()
    assert torch.equal(torch.cat([s.indices(1, 2, 12, cpu) for s in ranks]), whole)
    micro = TokenSampler(3, reserved_length=5, seed=7)
    micro.new_forward()
    first = micro.indices(1, 2, 12, cpu)
    assert torch.equal(first, micro.indices(1, 2, 12, cpu)), "cached within one forward (activation recompute)"
    micro.new_forward(nn.Linear(1, 1).eval())  # an evaluation forward is not a training micro-batch
    assert torch.equal(first, micro.indices(1, 2, 12, cpu))
    micro.new_forward()
    assert torch.equal(torch.cat([first, micro.indices(1, 2, 12, cpu)]), whole)
    micro.reseed(1)
    micro.new_forward()
    assert not torch.equal(micro.indices(1, 2, 12, cpu), first), "the next step draws anew"
    micro.reseed(0)
    micro.new_forward()
    assert torch.equal(micro.indices(1, 2, 12, cpu), first), "reseeding at a step replays that step's draws"
    assert not torch.equal(TokenSampler(3, reserved_length=5, seed=8).indices(1, 2, 12, cpu), first), "seeded"
    with pytest.raises(ValueError, match="data_parallel_rank 2 is outside"):
        TokenSampler(3, reserved_length=5, data_parallel_rank=2, data_parallel_size=2)


def test_hash_is_exact_32_bit_arithmetic():
    """The int64 implementation of the 32-bit multiply/mix equals plain modular arithmetic (no overflow)."""
    from megatron.data_efficiency.random_ltd import _mix32, _mul32

    mask = 0xFFFFFFFF

    def mix(v: int) -> int:
        v ^= v >> 16
        v = (v * 0x7FEB352D) & mask
        v ^= v >> 15
        v = (v * 0x846CA68B) & mask
        return v ^ (v >> 16)

    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, mask - 1, mask, *torch.randint(0, 2**32, (200,)).tolist()]
    x = torch.tensor(values, dtype=torch.int64)
    assert _mix32(x).tolist() == [mix(v) for v in values]
    assert _mul32(x, 0x9E3779B9).tolist() == [(v * 0x9E3779B9) & mask for v in values]
    assert len(set(_mix32(torch.arange(1 << 16)).tolist())) == 1 << 16  # a bijection


# --------------------------------------------------------------------------------------------- kept-token equivalence


@pytest.mark.parametrize("position", ["learned_absolute", "rope"])
def test_decoder_causal_kept_tokens_equal_layer_on_subsequence(position):
    torch.manual_seed(0)
    layer = TransformerLayer(model_config(position), 2)
    wrapper = wrap_layer(layer, r=6).train()
    h = torch.randn(B, S, H)
    out = wrapper(h, attention_mask=None, position_ids=None)
    idx = kept_indices(wrapper, B, S)
    assert bool((idx[:, 1:] > idx[:, :-1]).all())
    expected = layer(take(h, idx), attention_mask=None, position_ids=idx)  # plain causal, true positions
    torch.testing.assert_close(take(out, idx), expected, rtol=1e-5, atol=1e-5)
    dropped = torch.ones(B, S, dtype=torch.bool)
    dropped[torch.arange(B)[:, None], idx] = False
    assert torch.equal(out[dropped], h[dropped]), "dropped tokens pass through bit-exactly"
    if position == "rope":  # positions matter: the subsequence at positions 0..r-1 would be different
        wrong = layer(take(h, idx), attention_mask=None, position_ids=None)
        assert not torch.allclose(wrong, expected, atol=1e-2)


@pytest.mark.parametrize("position", ["learned_absolute", "rope"])
def test_decoder_document_mask_kept_tokens(position):
    torch.manual_seed(1)
    layer = TransformerLayer(model_config(position), 2)
    wrapper = wrap_layer(layer, r=9).train()
    eod = 0
    tokens = torch.randint(1, 50, (B, S))
    tokens[0, 4] = tokens[0, 10] = eod
    tokens[1, 7] = eod
    mask, _, pos = get_ltor_masks_and_position_ids(tokens, eod, True, True, False)
    assert mask is not None
    h = torch.randn(B, S, H)
    out = wrapper(h, attention_mask=mask, position_ids=pos)
    idx = kept_indices(wrapper, B, S)
    # reference mask built from document ids of the kept tokens, independently of gather_mask
    doc = torch.cumsum((tokens == eod).long(), dim=1) - (tokens == eod).long()  # eod belongs to its document
    kdoc, kpos = take(doc, idx), take(pos, idx)
    ref_mask = (kdoc[:, :, None] != kdoc[:, None, :]) | (idx[:, None, :] > idx[:, :, None])
    expected = layer(take(h, idx), attention_mask=ref_mask[:, None], position_ids=kpos)
    torch.testing.assert_close(take(out, idx), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gather_mask(mask, idx), ref_mask[:, None])
    # upstream's top-left slice of the document mask is not the kept tokens' mask
    assert not torch.equal(mask[:, :, :9, :9].expand(B, 1, 9, 9), ref_mask[:, None])


def test_encoder_padding_mask_kept_tokens():
    torch.manual_seed(2)
    layer = TransformerLayer(model_config(), 2, causal=False)
    wrapper = wrap_layer(layer, r=10, model_type="encoder").train()
    padding = torch.ones(B, S, dtype=torch.long)
    padding[0, 11:] = 0
    padding[2, 6:] = 0
    mask = bert_extended_attention_mask(padding)
    h = torch.randn(B, S, H)
    out = wrapper(h, attention_mask=mask)
    idx = kept_indices(wrapper, B, S)
    expected = layer(take(h, idx), attention_mask=bert_extended_attention_mask(take(padding, idx)),
                     position_ids=idx)
    torch.testing.assert_close(take(out, idx), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gather_mask(mask, idx), bert_extended_attention_mask(take(padding, idx)))


# --------------------------------------------------------------------------------------------- gradients


def test_gradients_identity_on_dropped_layer_gradient_on_kept():
    torch.manual_seed(3)
    layer = TransformerLayer(model_config("rope"), 2)
    reference = copy.deepcopy(layer)
    wrapper = wrap_layer(layer, r=5).train()
    h = torch.randn(B, S, H, requires_grad=True)
    upstream = torch.randn(B, S, H)
    wrapper(h, position_ids=None).backward(upstream)
    idx = kept_indices(wrapper, B, S)
    # dense reference: out = h with kept rows replaced via index_put (a different op), plain autograd
    h_ref = h.detach().clone().requires_grad_(True)
    rows = torch.arange(B)[:, None]
    out_ref = h_ref.index_put((rows.expand_as(idx), idx), reference(h_ref[rows, idx], position_ids=idx))
    out_ref.backward(upstream)
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(layer.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    dropped = torch.ones(B, S, dtype=torch.bool)
    dropped[rows, idx] = False
    assert torch.equal(h.grad[dropped], upstream[dropped]), "identity gradient on dropped tokens"
    assert not torch.allclose(h.grad[~dropped], upstream[~dropped]), "kept tokens get the layer's gradient"


# --------------------------------------------------------------------------------------------- no-ops


@pytest.mark.parametrize("case", ["eval", "r_equals_s", "r_above_s"])
def test_noop_is_bitwise_exact(case):
    torch.manual_seed(4)
    layer = TransformerLayer(model_config("rope", dropout=0.1), 2)
    r = {"eval": 4, "r_equals_s": S, "r_above_s": S + 5}[case]
    wrapper = wrap_layer(layer, r=r)
    wrapper.train(case != "eval")
    h = torch.randn(B, S, H)
    pos = torch.arange(S).expand(B, S)
    torch.manual_seed(9)
    got = wrapper(h, attention_mask=None, position_ids=pos)
    torch.manual_seed(9)
    expected = layer(h, attention_mask=None, position_ids=pos)
    assert torch.equal(got, expected)


def test_shorter_batch_after_truncation_is_noop():
    layer = TransformerLayer(model_config(), 2)
    wrapper = wrap_layer(layer, r=8).train()
    h = torch.randn(B, 8, H)  # curriculum truncated to 8 == r
    assert torch.equal(wrapper(h), layer(h))


# --------------------------------------------------------------------------------------------- calling convention


class PositionalLayer(nn.Module):
    """A Megatron-style layer whose mask may be passed positionally (upstream ParallelTransformerLayer)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(H, H)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, layer_past=None):
        scores = hidden_states @ hidden_states.transpose(1, 2)
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask[:, 0], -1e4)
        return self.proj(torch.softmax(scores, -1) @ hidden_states) + position_ids[..., None]


def test_positional_call_is_bound_and_layer_called_with_keywords():
    torch.manual_seed(5)
    layer = PositionalLayer()
    seen: list[tuple[int, list[str]]] = []
    layer.register_forward_pre_hook(lambda m, a, k: seen.append((len(a), sorted(k))), with_kwargs=True)
    wrapper = wrap_layer(layer, r=6).train()
    h = torch.randn(B, S, H)
    mask = torch.ones(S, S, dtype=torch.bool).triu(1)[None, None]
    pos = torch.arange(S).expand(B, S).float()
    out_pos = wrapper(h, mask, pos)  # upstream HEAD's positional call: layer(h, attention_mask, ...)
    assert seen[-1] == (1, ["attention_mask", "position_ids"]), "inner layer must get keywords only"
    wrapper.sampler.reseed(0)
    out_kw = wrapper(h, attention_mask=mask, position_ids=pos)
    assert torch.equal(out_pos, out_kw)


def test_keyword_only_layer_rejects_positional_mask_clearly():
    wrapper = wrap_layer(TransformerLayer(model_config(), 2), r=6).train()
    with pytest.raises(TypeError, match="cannot bind arguments for TransformerLayer"):
        wrapper(torch.randn(B, S, H), None)


class TupleSeqFirstLayer(nn.Module):
    """A sequence-first [s, b, h] causal mixing layer returning (hidden, extra)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(H, H)

    def forward(self, hidden_states, *, attention_mask=None):
        mixed = torch.cumsum(self.proj(hidden_states), dim=0)  # causal along the sequence (dim 0)
        return hidden_states + mixed, "extra"


def test_sequence_first_layout_and_tuple_output():
    torch.manual_seed(6)
    layer = TupleSeqFirstLayer()
    wrapper = wrap_layer(layer, r=7, batch_first=False, mask_name=None).train()
    h = torch.randn(S, B, H)  # [s, b, h]
    out, extra = wrapper(h)
    assert extra == "extra"
    idx = kept_indices(wrapper, B, S)  # [b, r]
    for b in range(B):
        sub = h[idx[b], b][:, None]  # [r, 1, h]
        torch.testing.assert_close(out[idx[b], b], layer(sub)[0][:, 0])
    kept = torch.zeros(S, B, dtype=torch.bool)
    kept[idx.t(), torch.arange(B)[None, :]] = True
    assert torch.equal(out[~kept], h[~kept])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gather_scatter_any_dtype(dtype):
    h = torch.randn(B, S, H).to(dtype)
    idx = sample_token_indices(1, torch.arange(B), S, 5, step_key=0)[0]
    kept = gather_tokens(h, idx)
    assert kept.dtype == dtype and torch.equal(kept, take(h, idx))
    merged = scatter_tokens(h, kept * 2, idx)
    reference = h.clone()
    reference[torch.arange(B)[:, None], idx] = kept * 2
    assert torch.equal(merged, reference)


def test_bf16_layer_forward_backward():
    torch.manual_seed(7)
    layer = TransformerLayer(model_config("rope"), 2).to(torch.bfloat16)
    wrapper = wrap_layer(layer, r=8).train()
    h = torch.randn(B, S, H, dtype=torch.bfloat16, requires_grad=True)
    out = wrapper(h)
    out.float().sum().backward()
    idx = kept_indices(wrapper, B, S)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(take(out, idx), layer(take(h, idx), position_ids=idx))
    assert torch.isfinite(h.grad.float()).all()


# --------------------------------------------------------------------------------------------- conversion


def test_convert_matches_layer_ids_exactly_not_by_substring():
    config = model_config(layers=12)
    model = GPTModel(config)
    convert_to_random_ltd(model, TransformerLayer, ltd_config(layers=12, ids=[1, 10]))
    wrapped = {name for name, m in model.named_modules() if isinstance(m, RandomLayerTokenDrop)}
    assert wrapped == {"encoder.layers.1", "encoder.layers.10"}
    assert [w.layer_index for w in random_ltd_wrappers(model)] == [1, 10]
    assert [w.ordinal for w in random_ltd_wrappers(model)] == [0, 1]
    assert "encoder.layers.10.random_ltd_layer.mlp.dense_h_to_4h.weight" in dict(model.named_parameters())


def test_convert_errors():
    model = GPTModel(model_config(layers=4))
    with pytest.raises(ValueError, match="total_layer_num is 6 but the model has 4 TransformerLayer"):
        convert_to_random_ltd(model, TransformerLayer, ltd_config(layers=6))
    convert_to_random_ltd(model, TransformerLayer, ltd_config(layers=4))
    with pytest.raises(ValueError, match="already converted"):
        convert_to_random_ltd(model, TransformerLayer, ltd_config(layers=4))


def gpt_pair(position: str = "rope", checkpoint: bool = False):
    """A plain GPT and an identical copy converted to random-LTD (layers 1, 2 of 4, r = 6)."""
    torch.manual_seed(8)
    plain = GPTModel(model_config(position, checkpoint_activations=checkpoint))
    ltd = RandomLTD(ltd_config(r=6), seed=3)
    wrapped = ltd.convert(copy.deepcopy(plain), TransformerLayer)
    return plain, wrapped, ltd


def test_gpt_forward_uses_wrappers_and_state_dict_has_no_wrapper_keys():
    plain, wrapped, _ = gpt_pair()
    tokens = torch.randint(0, 64, (B, S))
    wrapped.train()
    assert not torch.allclose(wrapped(tokens), plain.train()(tokens)), "training forward drops tokens"
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    assert all("random_ltd_layer" not in k for k in wrapped.encoder.state_dict())
    wrapped.eval(), plain.eval()
    assert torch.equal(wrapped(tokens), plain(tokens)), "eval is exactly the plain model"


def test_ltd_trained_checkpoint_loads_into_plain_model():
    _, wrapped, ltd = gpt_pair()
    tokens = torch.randint(0, 64, (B, S + 1))
    wrapped.train()
    for step in range(3):
        wrapped.zero_grad()
        wrapped(tokens[:, :-1], labels=tokens[:, 1:]).mean().backward()
        with torch.no_grad():  # plain SGD
            for p in wrapped.parameters():
                p -= 0.1 * p.grad
        ltd.step(step + 1, B, S)
    saved = wrapped.state_dict()
    fresh = GPTModel(model_config("rope"))
    fresh.load_state_dict(saved, strict=True)
    wrapped.eval(), fresh.eval()
    assert torch.equal(fresh(tokens[:, :-1]), wrapped(tokens[:, :-1]))
    # and a plain state dict loads back into a wrapped model (resume after wrapping)
    _, other, _ = gpt_pair()
    other.load_state_dict(fresh.state_dict(), strict=True)
    other.eval()
    assert torch.equal(other(tokens[:, :-1]), fresh(tokens[:, :-1]))


def test_remove_random_ltd_state_dict_round_trip():
    torch.manual_seed(8)
    plain = GPTModel(model_config())
    raw = convert_to_random_ltd(copy.deepcopy(plain), TransformerLayer, ltd_config(), strip_state_dict=False)
    raw_keys = list(raw.state_dict())
    assert "encoder.layers.1.random_ltd_layer.input_layernorm.weight" in raw_keys
    stripped = remove_random_ltd_state_dict(raw.state_dict())
    assert list(stripped) == list(plain.state_dict())
    assert list(save_without_random_ltd(raw)) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(stripped.values(), plain.state_dict().values()))
    raw.load_state_dict(stripped)  # plain keys accepted by the wrapped model
    raw.load_state_dict(raw.state_dict())  # and its own wrapper keys too


def test_activation_checkpointing_recomputes_with_the_same_indices():
    tokens = torch.randint(0, 64, (B, S + 1))
    grads = []
    for checkpoint in (False, True):
        _, wrapped, ltd = gpt_pair(checkpoint=checkpoint)
        wrapped.train()
        loss = wrapped(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in wrapped.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bert_model_with_random_ltd_runs_and_evaluates_exactly():
    torch.manual_seed(9)
    config = model_config()
    plain = BertModel(config)
    wrapped = RandomLTD(ltd_config(r=6, model_type="encoder")).convert(copy.deepcopy(plain), TransformerLayer)
    tokens = torch.randint(0, 64, (B, S))
    padding = torch.ones(B, S, dtype=torch.long)
    padding[1, 9:] = 0
    wrapped.train()
    lm, binary = wrapped(tokens, padding, lm_labels=tokens)
    (lm.mean() + binary.sum()).backward()
    wrapped.eval(), plain.eval()
    assert torch.equal(wrapped(tokens, padding)[0], plain(tokens, padding)[0])
