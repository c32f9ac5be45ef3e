"""Incremental decoding with a key/value cache (megatron.model.kv_cache): cached logits equal full recomputation
(learned and rotary positions, batch > 1, one and several tokens per step, left padding with a key mask, dropped
rows), and the training forward is the plain computation it was (no cache: same calls, same numbers)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from megatron.config import TransformerConfig
from megatron.data_efficiency.random_ltd import convert_to_random_ltd
from megatron.data_efficiency.random_ltd_config import parse_random_ltd_config
from megatron.model import GPTModel, KVCache, TransformerLayer, get_ltor_masks_and_position_ids

V, H, L, NH, S = 64, 32, 2, 4, 24
POSITION_TYPES = ["learned_absolute", "rope"]


def make_model(position: str, seed: int = 0, **overrides: object) -> GPTModel:
    fields: dict[str, object] = dict(num_layers=L, hidden_size=H, num_attention_heads=NH, padded_vocab_size=V,
                                     max_position_embeddings=S, hidden_dropout=0.0, attention_dropout=0.0,
                                     position_embedding_type=position)
    fields.update(overrides)
    torch.manual_seed(seed)
    return GPTModel(TransformerConfig(**fields)).eval()  # type: ignore[arg-type]


def tokens(b: int, s: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, V, (b, s), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("capacity", [None, S])
@pytest.mark.parametrize("position", POSITION_TYPES)
def test_greedy_incremental_logits_equal_full_recompute(position: str, capacity: int | None) -> None:
    model = make_model(position)
    ids = tokens(3, 5)
    cache = KVCache(capacity=capacity)
    with torch.no_grad():
        logits = model(ids, kv_cache=cache)  # prefill [3, 5, V]
        torch.testing.assert_close(logits, model(ids), rtol=0, atol=1e-5)
        for step in range(S - 5):
            assert cache.length == ids.shape[1]
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # [3, 1]
            ids = torch.cat((ids, nxt), dim=1)
            logits = model(nxt, kv_cache=cache)  # [3, 1, V]
            assert logits.shape == (3, 1, V)
            torch.testing.assert_close(logits[:, 0], model(ids)[:, -1], rtol=0, atol=1e-5, msg=f"step {step}")
    assert cache.length == S and cache.batch_size == 3


@pytest.mark.parametrize("position", POSITION_TYPES)
def test_several_new_tokens_per_step_see_all_cached_ones(position: str) -> None:
    model = make_model(position)
    ids = tokens(2, S, seed=2)
    cache = KVCache()
    with torch.no_grad():
        full = model(ids)
        start = 0
        for size in (4, 1, 3, 7, 1, 8):  # after the first chunk: a causal mask offset by the cached length
            got = model(ids[:, start: start + size], kv_cache=cache)
            torch.testing.assert_close(got, full[:, start: start + size], rtol=0, atol=1e-5)
            start += size
    assert start == S == cache.length


def _left_padded(rows: list[torch.Tensor], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [b, w] left-padded, key padding [b, w] (True = pad), real positions [b, w] (0 on the padding)."""
    w = max(len(r) for r in rows)
    ids = torch.full((len(rows), w), pad, dtype=torch.long)
    is_pad = torch.ones(len(rows), w, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, w - len(r):] = r
        is_pad[i, w - len(r):] = False
    positions = (torch.arange(w) - is_pad.sum(1, keepdim=True)).clamp(min=0)
    return ids, is_pad, positions


@pytest.mark.parametrize("position", POSITION_TYPES)
def test_left_padded_rows_with_a_key_mask_match_each_row_alone(position: str) -> None:
    model = make_model(position)
    rows = [tokens(1, n, seed=n)[0] for n in (7, 3, 5, 1)]
    ids, is_pad, positions = _left_padded(rows)
    b, w = ids.shape
    causal = torch.ones(w, w, dtype=torch.bool).triu(1)
    mask = (causal | is_pad[:, None, :]) & ~torch.eye(w, dtype=torch.bool)  # padding rows still see themselves
    seqs = [r.tolist() for r in rows]
    keep = list(range(b))
    cache = KVCache(capacity=w + 10)
    with torch.no_grad():
        logits = model(ids, positions, mask.unsqueeze(1), kv_cache=cache)[:, -1]  # [b, V]
        for step in range(10):
            for row, i in enumerate(keep):
                ref = model(torch.tensor([seqs[i]]))[0, -1]
                torch.testing.assert_close(logits[row], ref, rtol=0, atol=1e-5, msg=f"step {step} row {i}")
            nxt = logits.argmax(-1)  # [b]
            for row, i in enumerate(keep):
                seqs[i].append(int(nxt[row]))
            if step == 4:  # rows 1 and 2 finish: drop them from the cache and the masks
                rows_left = [0, 3]
                cache.select(rows_left)
                keep, nxt, is_pad = [keep[r] for r in rows_left], nxt[rows_left], is_pad[rows_left]
                assert cache.batch_size == 2
            is_pad = torch.cat((is_pad, torch.zeros(len(keep), 1, dtype=torch.bool)), dim=1)  # [b, t + 1]
            new_pos = torch.tensor([[len(seqs[i]) - 1] for i in keep])  # [b, 1]
            logits = model(nxt[:, None], new_pos, is_pad[:, None, None, :], kv_cache=cache)[:, -1]


def test_cache_errors_and_limits() -> None:
    model = make_model("learned_absolute")
    with torch.no_grad():
        cache = KVCache()
        model(tokens(2, S), kv_cache=cache)
        with pytest.raises(ValueError, match="max-position-embeddings"):
            model(tokens(2, 1), kv_cache=cache)
        with pytest.raises(ValueError, match="batch rows"):
            model(tokens(3, 1), position_ids=torch.zeros(3, 1, dtype=torch.long), kv_cache=cache)
        cache = KVCache()
        model(tokens(2, 4), kv_cache=cache)
        with pytest.raises(ValueError, match="shape"):
            model(tokens(2, 2), attention_mask=torch.zeros(2, 1, 2, 2, dtype=torch.bool), kv_cache=cache)
        cache.reset()
        assert cache.length == 0 and cache.batch_size is None
    with pytest.raises(ValueError, match="eval"):
        model.train()(tokens(1, 3), kv_cache=KVCache())
    with pytest.raises(ValueError, match="capacity"):
        KVCache(capacity=0)


def test_rope_positions_go_past_the_table_free_model_length() -> None:
    model = make_model("rope")
    ids = tokens(2, 2 * S, seed=3)
    cache = KVCache()
    with torch.no_grad():
        full = model(ids)
        model(ids[:, :-1], kv_cache=cache)
        last = model(ids[:, -1:], kv_cache=cache)
    torch.testing.assert_close(last[:, 0], full[:, -1], rtol=0, atol=1e-5)


def test_random_ltd_model_in_eval_decodes_with_the_cache() -> None:
    model = make_model("rope", num_layers=4)
    block = {"enabled": True, "total_layer_num": 4, "random_ltd_layer_num": 2, "random_ltd_layer_id": [1, 2],
             "random_ltd_schedule": {"min_value": 4, "max_value": S,
                                     "schedule_config": {"require_steps": 10**9, "seq_per_step": 1}}}
    convert_to_random_ltd(model, TransformerLayer, parse_random_ltd_config(block))
    model.eval()
    ids = tokens(2, 9)
    cache = KVCache()
    with torch.no_grad():
        full = model(ids)
        model(ids[:, :6], kv_cache=cache)
        got = torch.cat([model(ids[:, t: t + 1], kv_cache=cache) for t in range(6, 9)], dim=1)
    torch.testing.assert_close(got, full[:, 6:], rtol=0, atol=1e-5)


# ---- training is unchanged ----------------------------------------------------------------------------------------
def reference_forward(model: GPTModel, ids: torch.Tensor, positions: torch.Tensor,
                      blocked: torch.Tensor | None) -> torch.Tensor:
    """The GPT forward written out with plain tensor ops (no dropout): logits [b, s, V]."""
    cfg = model.config
    b, s = ids.shape
    nh, d = cfg.num_attention_heads, cfg.head_dim
    x = model.embedding.word_embeddings.weight[ids]
    if model.embedding.position_embeddings is not None:
        x = x + model.embedding.position_embeddings.weight[positions]
    if blocked is None:
        blocked = torch.ones(s, s, dtype=torch.bool).triu(1).expand(b, 1, s, s)
    inv_freq = cfg.rotary_base ** (-torch.arange(0, d, 2).float() / d)
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat((angles, angles), -1)[:, None]  # [b, 1, s, d]

    def rotate(t: torch.Tensor) -> torch.Tensor:
        t1, t2 = t[..., : d // 2], t[..., d // 2:]
        return t * angles.cos() + torch.cat((-t2, t1), -1) * angles.sin()

    for layer in model.encoder.layers:
        att = layer.self_attention
        y = F.layer_norm(x, (H,), layer.input_layernorm.weight, layer.input_layernorm.bias, cfg.layernorm_epsilon)
        qkv = (y @ att.query_key_value.weight.t() + att.query_key_value.bias).view(b, s, nh, 3, d)
        q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))
        if cfg.position_embedding_type == "rope":
            q, k = rotate(q), rotate(k)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        probs = scores.masked_fill(blocked, float("-inf")).softmax(-1)
        ctx = (probs @ v).transpose(1, 2).reshape(b, s, H)
        x = x + ctx @ att.dense.weight.t() + att.dense.bias
        y = F.layer_norm(x, (H,), layer.post_attention_layernorm.weight, layer.post_attention_layernorm.bias,
                         cfg.layernorm_epsilon)
        x = x + layer.mlp.dense_4h_to_h(F.gelu(layer.mlp.dense_h_to_4h(y)))
    fl = model.encoder.final_layernorm
    x = F.layer_norm(x, (H,), fl.weight, fl.bias, cfg.layernorm_epsilon)
    return x @ model.output_weight.t()


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("position", POSITION_TYPES)
def test_training_forward_is_the_plain_computation(position: str, checkpointing: bool) -> None:
    model = make_model(position, seed=7, checkpoint_activations=checkpointing).train()
    ids = tokens(3, 16, seed=4)
    ids[:, 6] = 0  # an EOD: document reset masks and positions
    mask, _, pos = get_ltor_masks_and_position_ids(ids, 0, True, True, False)
    plain_pos = torch.arange(16).expand(3, 16)
    labels = ids.roll(-1, 1)
    for got, ref in ((model(ids, labels=labels), reference_forward(model, ids, plain_pos, None)),
                     (model(ids, pos, mask, labels=labels), reference_forward(model, ids, pos, mask))):
        ref_loss = F.cross_entropy(ref.reshape(-1, V), labels.reshape(-1), reduction="none").view(3, 16)
        torch.testing.assert_close(got, ref_loss, rtol=0, atol=1e-5)
        got.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_training_with_dropout_is_reproducible_for_a_fixed_seed() -> None:
    model = make_model("rope", hidden_dropout=0.1, attention_dropout=0.1).train()
    ids = tokens(2, 16, seed=5)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append(model(ids, labels=ids.roll(-1, 1)))
        with torch.no_grad():  # a cached inference pass in between changes nothing
            model.eval()(ids[:, :4], kv_cache=KVCache())
        model.train()
    assert torch.equal(runs[0], runs[1])
