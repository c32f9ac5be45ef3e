"""Reserved-length schedule (spec §5.2, §13.3), layer-token accounting (§3.6, §13.7), layer-token LR."""
from __future__ import annotations

import math

import pytest
import torch

from megatron.config import TransformerConfig
from megatron.data_efficiency.accounting import actual_seq_length
from megatron.data_efficiency.layer_token_lr import LayerTokenLRSchedule, layer_token_lr
from megatron.data_efficiency.random_ltd import RandomLTD
from megatron.data_efficiency.random_ltd_config import (
    LayerTokenLRConfig,
    RandomLTDScheduleConfig,
    parse_random_ltd_config,
)
from megatron.data_efficiency.random_ltd_schedule import RandomLTDScheduler, ltd_actual_seq_length, reserved_length_at
from megatron.data_efficiency.seqlen import gpt_seqlen_truncate
from megatron.model import GPTModel, TransformerLayer

SPEC = RandomLTDScheduleConfig(min_value=128, max_value=2048, require_steps=200000, seq_per_step=16)


@pytest.mark.parametrize(
    "step, expected",
    [(0, 128), (1, 128), (100000, 1088), (199999, 2032), (200000, 2048), (250000, 2048), (10**9, 2048),
     (1666, 128), (1667, 144)],
)
def test_spec_vectors(step, expected):
    assert reserved_length_at(step, SPEC) == expected


def test_formula_against_a_direct_evaluation():
    odd = RandomLTDScheduleConfig(min_value=100, max_value=517, require_steps=37, seq_per_step=8)
    for s in range(60):
        r = math.floor(s * (517 - 100) / 37 + 100)
        assert reserved_length_at(s, odd) == min(r - r % 8, 517)


def test_scheduler_freezes_at_max_and_state_round_trip():
    sched = RandomLTDScheduler(SPEC, num_layers=24, num_ltd_layers=22)
    assert sched.current_value == 128
    assert sched.update(100000) == 1088
    assert sched.update(200000) == 2048
    assert sched.update(5) == 2048, "frozen once max is reached (like upstream)"
    sched.add_layer_tokens(4, 2048)
    state = sched.state_dict()
    assert set(state) == {"consumed_layer_tokens", "current_steps", "current_value", "min_value", "max_value"}
    other = RandomLTDScheduler(SPEC, num_layers=24, num_ltd_layers=22)
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(ValueError, match="lacks current_value"):
        other.load_state_dict({k: v for k, v in state.items() if k != "current_value"})


def test_layer_tokens_count_real_lengths_unlike_upstream():
    sched = RandomLTDScheduler(SPEC, num_layers=24, num_ltd_layers=22)  # r = 128
    # full-length rows: 2 dense layers at 2048, 22 dropping layers at 128
    assert sched.layer_tokens(rows=8, seq_length=2048) == 8 * (2 * 2048 + 22 * 128)
    # curriculum-truncated rows of 80 < r: nothing is dropped, all 24 layers see 80 tokens
    assert sched.layer_tokens(rows=8, seq_length=80) == 8 * 24 * 80
    upstream = 8 * (128 * 22 + 2048 * 2)  # upstream counts max_value and r regardless of the real length
    assert sched.layer_tokens(rows=8, seq_length=80) != upstream


def test_actual_seq_length_formula():
    assert ltd_actual_seq_length(2048, 128, 24, 22) == (2048 * 2 + 128 * 22) // 24 == 288
    assert ltd_actual_seq_length(80, 128, 24, 22) == 80, "r >= S: no correction"
    assert ltd_actual_seq_length(1000, 999, 3, 1) == (1000 * 2 + 999) // 3
    assert actual_seq_length(2048, 1024, 128, 24, 22) == (1024 * 2 + 128 * 22) // 24


def test_total_layer_tokens_simulates_the_schedule():
    small = RandomLTDScheduleConfig(min_value=4, max_value=16, require_steps=3, seq_per_step=4)
    sched = RandomLTDScheduler(small, num_layers=4, num_ltd_layers=2)
    # r per step: 4, 8, 12, 16 -> rows 2: 2*(16*2 + r*2)
    assert sched.total_layer_tokens(4, 2, 16) == sum(2 * (32 + 2 * r) for r in (4, 8, 12, 16))


# --------------------------------------------------------------------------------------------- facade


def block(layers: int = 4, min_value: int = 4, max_value: int = 16, require_steps: int = 3, step: int = 4) -> dict:
    """An enabled random_ltd block for a tiny model."""
    return {
        "enabled": True, "total_layer_num": layers, "random_ltd_layer_num": layers - 2,
        "random_ltd_layer_id": list(range(1, layers - 1)),
        "random_ltd_schedule": {"min_value": min_value, "max_value": max_value, "schedule_type": "fixed_linear",
                                "schedule_config": {"require_steps": require_steps, "seq_per_step": step}},
    }


def test_facade_step_log_fields_and_resume():
    ltd = RandomLTD(parse_random_ltd_config(block()), seed=5)
    info = ltd.step(1, batch_size=2, seq_length=16)
    assert info == {"reserved_length": 4, "actual_seq_length": (16 * 2 + 4 * 2) // 4, "layer_tokens": 2 * (32 + 8)}
    assert ltd.reserved_length == 8
    assert ltd.log_fields() == {"random ltd reserved length": 4, "layer tokens": 80}
    state = ltd.state_dict()
    resumed = RandomLTD(parse_random_ltd_config(block()), seed=5)
    resumed.load_state_dict(state)
    assert (resumed.reserved_length, resumed.consumed_layer_tokens) == (8, 80)
    cpu = torch.device("cpu")
    assert torch.equal(ltd.sampler.indices(0, 2, 16, cpu), resumed.sampler.indices(0, 2, 16, cpu)), \
        "the resumed run draws the same indices as the uninterrupted one"
    # rank 1 of 2 draws for the global batch's next rows: those a single rank with twice the micro-batch draws
    other_rank = RandomLTD(parse_random_ltd_config(block()), seed=5, data_parallel_rank=1, data_parallel_size=2)
    other_rank.load_state_dict(state)
    assert not torch.equal(ltd.sampler.indices(0, 2, 16, cpu), other_rank.sampler.indices(0, 2, 16, cpu))
    assert torch.equal(ltd.sampler.indices(0, 4, 16, cpu)[2:], other_rank.sampler.indices(0, 2, 16, cpu))


def test_cl_plus_random_ltd_tiny_run_accounting_matches_what_layers_process():
    """Curriculum truncation + random-LTD on a tiny GPT: counted layer tokens == tokens the layers saw."""
    torch.manual_seed(0)
    layers, seq, batch = 4, 16, 2
    config = TransformerConfig(num_layers=layers, hidden_size=16, num_attention_heads=2, padded_vocab_size=32,
                               max_position_embeddings=seq)
    model = GPTModel(config)
    ltd = RandomLTD(parse_random_ltd_config(block(min_value=4, max_value=16, require_steps=6, step=2)), seed=1)
    ltd.convert(model, TransformerLayer)
    seen = []
    for layer in model.encoder.layers:
        inner = getattr(layer, "random_ltd_layer", layer)
        inner.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[0] * a[0].shape[1]))
    model.train()
    curriculum = [6, 8, 10, 12, 14, 16, 16]  # curriculum seqlen per step
    consumed_tokens = 0
    for it, cs in enumerate(curriculum):
        text = gpt_seqlen_truncate(torch.randint(0, 32, (batch, seq + 1)), cs)  # [b, cs+1]
        seen.clear()
        r = ltd.reserved_length
        model(text[:, :-1], labels=text[:, 1:]).mean().backward()
        before = ltd.consumed_layer_tokens
        info = ltd.step(it + 1, batch_size=batch, seq_length=cs)
        assert ltd.consumed_layer_tokens - before == sum(seen), f"step {it}: counted != processed"
        actual = actual_seq_length(seq, cs, r, layers, layers - 2)
        assert info["actual_seq_length"] == actual
        assert actual == ((cs * 2 + r * 2) // 4 if r < cs else cs)
        consumed_tokens += batch * actual
    assert [ltd.scheduler.value_at(s) for s in range(7)] == [4, 6, 8, 10, 12, 14, 16]
    assert consumed_tokens == sum(batch * actual_seq_length(seq, cs, ltd.scheduler.value_at(i), 4, 2)
                                  for i, cs in enumerate(curriculum))


# --------------------------------------------------------------------------------------------- layer-token LR


@pytest.mark.parametrize(
    "style, tokens, expected",
    [
        ("linear", 0, 0.0),
        ("linear", 50, 0.5),  # warmup: max_lr * 50/100
        ("linear", 100, 1.0),
        ("linear", 550, 0.1 + 0.9 * 0.5),
        ("linear", 1000, 0.1),
        ("linear", 5000, 0.1),
        ("cosine", 550, 0.1 + 0.9 * 0.5),
        ("cosine", 325, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))),
        ("cosine", 2000, 0.1),
        ("constant", 700, 1.0),
        ("inverse-square-root", 400, math.sqrt(100) / math.sqrt(400)),
        ("inverse-square-root", 10**6, 0.1),
    ],
)
def test_layer_token_lr_values(style, tokens, expected):
    lr = layer_token_lr(tokens, max_lr=1.0, min_lr=0.1, warmup_layer_tokens=100, total_layer_tokens=1000,
                        decay_style=style)
    assert lr == pytest.approx(expected)


def test_layer_token_lr_schedule_applies_to_optimizer_and_follows_layer_tokens():
    config = LayerTokenLRConfig(enabled=True, total_layer_tokens=1000, warmup_layer_tokens=100)
    sched = LayerTokenLRSchedule(config, max_lr=2e-3, min_lr=2e-4, decay_style="linear")
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr_mult": 0.5}], lr=1.0)
    assert sched.apply(opt, 50) == pytest.approx(1e-3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 5e-4])
    assert sched.multiplier(1000) == pytest.approx(0.1)
    # through the facade: r grows, so the LR moves by layer tokens, not by steps
    raw = block()
    raw["layer_token_lr_schedule"] = {"enabled": True, "total_layer_tokens": 1000, "warmup_layer_tokens": 100}
    ltd = RandomLTD(parse_random_ltd_config(raw))
    lr_sched = ltd.layer_token_lr_schedule(max_lr=1.0, min_lr=0.0, decay_style="linear")
    ltd.step(1, batch_size=1, seq_length=16)  # 16*2 + 4*2 = 40 layer tokens
    assert lr_sched.get_lr(ltd.consumed_layer_tokens) == pytest.approx(0.4)
    assert RandomLTD(parse_random_ltd_config(block())).layer_token_lr_schedule(max_lr=1.0, min_lr=0.0) is None
    with pytest.raises(ValueError, match="lr-decay-style 'cosin'"):
        LayerTokenLRSchedule(config, max_lr=1.0, min_lr=0.0, decay_style="cosin")
