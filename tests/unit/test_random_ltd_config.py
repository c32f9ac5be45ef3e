"""Parsing and validation of data_efficiency.data_routing.random_ltd (spec §5.1)."""
from __future__ import annotations

import copy

import pytest

from megatron.data_efficiency.random_ltd import RandomLTD
from megatron.data_efficiency.random_ltd_config import (
    RandomLTDConfigError,
    check_random_ltd_against_run,
    parse_data_routing_config,
    parse_random_ltd_config,
)

# The block of Megatron-DeepSpeed's GPT-3 1.3B template (24 layers, ids 1..22).
UPSTREAM = {
    "enabled": True,
    "total_layer_num": 24,
    "random_ltd_layer_num": 22,
    "random_ltd_layer_id": list(range(1, 23)),
    "model_mask_name": "attention_mask",
    "model_type": "decoder",
    "hidden_state_order": "seq_batch_dim",
    "random_ltd_schedule": {
        "min_value": 128,
        "max_value": 2048,
        "schedule_type": "fixed_linear",
        "schedule_config": {"require_steps": 200000, "seq_per_step": 16},
    },
}


def with_change(path: str, value, base=UPSTREAM) -> dict:
    """A copy of ``base`` with the dotted key ``path`` set (value ``...`` deletes it)."""
    block = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = block
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return block


def test_upstream_block_parses():
    config = parse_random_ltd_config(UPSTREAM, num_layers=24, seq_length=2048)
    assert config.enabled and config.num_layers == 24 and config.num_ltd_layers == 22
    assert config.random_ltd_layer_id == tuple(range(1, 23))
    assert config.model_mask_name == "attention_mask" and config.model_type == "decoder"
    assert config.hidden_state_order == "seq_batch_dim"
    s = config.schedule
    assert (s.min_value, s.max_value, s.require_steps, s.seq_per_step, s.schedule_type) == (
        128, 2048, 200000, 16, "fixed_linear")
    assert not config.layer_token_lr.enabled


def test_layer_token_lr_block_and_null_mask():
    block = with_change("layer_token_lr_schedule", {"enabled": True, "total_layer_tokens": 1e11,
                                                     "warmup_layer_tokens": 10**9, "warmup_type": "linear"})
    block["model_mask_name"] = None
    config = parse_random_ltd_config(block)
    assert config.model_mask_name is None
    assert (config.layer_token_lr.enabled, config.layer_token_lr.total_layer_tokens,
            config.layer_token_lr.warmup_layer_tokens) == (True, 10**11, 10**9)


def test_disabled_block_needs_no_fields_and_routing_wrapper():
    assert not parse_random_ltd_config({"enabled": False}).enabled
    assert not parse_random_ltd_config(None).enabled
    routed = parse_data_routing_config({"enabled": True, "random_ltd": UPSTREAM})
    assert routed.enabled and routed.num_ltd_layers == 22
    ds = {"data_efficiency": {"enabled": True, "data_routing": {"enabled": True, "random_ltd": UPSTREAM}}}
    ltd = RandomLTD.from_ds_config(ds, num_layers=24, seq_length=2048)
    assert ltd is not None and ltd.reserved_length == 128
    assert RandomLTD.from_ds_config({"train_batch_size": 8}) is None


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("random_ltd_layer_idd", [1],
         r"random_ltd\.random_ltd_layer_idd: unknown key \(did you mean random_ltd_layer_id\?\)"),
        ("random_ltd_schedule.schedule_config.require_step", 5,
         r"schedule_config\.require_step: unknown key \(did you mean require_steps\?\)"),
        ("random_ltd_layer_id", list(range(1, 22)),
         r"random_ltd_layer_id: lists 21 layers but random_ltd_layer_num is 22"),
        ("random_ltd_layer_id", [1, 1] + list(range(3, 23)), r"random_ltd_layer_id: layer 1 is listed twice"),
        ("random_ltd_layer_id", list(range(1, 22)) + [30], r"random_ltd_layer_id\[21\]: layer 30 is out of range"),
        ("random_ltd_layer_id", [1, "2"], r"random_ltd_layer_id\[1\]: expected a layer index >= 0, got '2'"),
        ("random_ltd_layer_num", 30, r"random_ltd_layer_num: expected <= total_layer_num \(24\), got 30"),
        ("total_layer_num", "24", r"total_layer_num: expected an integer >= 1, got '24'"),
        ("total_layer_num", ..., r"total_layer_num: missing"),
        ("model_type", "vit", r"model_type: expected one of decoder, encoder, got 'vit'"),
        ("hidden_state_order", "bsh", r"hidden_state_order: expected one of batch_seq_dim, seq_batch_dim"),
        ("model_mask_name", 3, r"model_mask_name: expected a keyword name or null"),
        ("enabled", "yes", r"random_ltd\.enabled: expected true or false, got 'yes'"),
        ("random_ltd_schedule.schedule_type", "fixed_root", r"schedule_type: expected one of fixed_linear"),
        ("random_ltd_schedule.max_value", 64, r"max_value: expected >= min_value \(128\), got 64"),
        ("random_ltd_schedule.min_value", 8, r"min_value: is 8, below schedule_config\.seq_per_step \(16\)"),
        ("random_ltd_schedule.schedule_config.seq_per_step", 0, r"seq_per_step: expected an integer >= 1, got 0"),
        ("random_ltd_schedule", ..., r"random_ltd\.random_ltd_schedule: missing; expected a JSON object"),
        ("layer_token_lr_schedule", {"enabled": True}, r"layer_token_lr_schedule\.total_layer_tokens: missing"),
        ("layer_token_lr_schedule", {"enabled": True, "total_layer_tokens": 10, "warmup_layer_tokens": 10},
         r"warmup_layer_tokens: expected < total_layer_tokens \(10\), got 10"),
        ("layer_token_lr_schedule", {"enabled": True, "total_layer_tokens": 10, "warmup_type": "cosine"},
         r"warmup_type: expected one of linear"),
    ],
)
def test_errors_name_the_key_path(path, value, message):
    with pytest.raises(RandomLTDConfigError, match=message) as info:
        parse_random_ltd_config(with_change(path, value), source="ds_config.json")
    text = str(info.value)
    assert text.startswith("ds_config.json: data_efficiency.data_routing.random_ltd")
    assert "\n" not in text


@pytest.mark.parametrize("ids, edge", [(list(range(2, 24)), "layer 23, the last layer"),
                                      (list(range(0, 22)), "layer 0, the first layer")])
def test_edge_layers_are_accepted_with_a_warning(ids, edge, caplog):
    """Upstream and DeepSpeed accept the first/last layer in random_ltd_layer_id: a warning, not an error."""
    with caplog.at_level("WARNING"):
        config = parse_random_ltd_config(with_change("random_ltd_layer_id", ids))
    assert list(config.random_ltd_layer_id) == ids
    assert any(edge in r.getMessage() and "accepted" in r.getMessage() for r in caplog.records), caplog.text


def test_edge_layers_allowed_explicitly():
    block = with_change("random_ltd_layer_id", list(range(0, 22)))
    block["allow_first_last_layers"] = True
    assert parse_random_ltd_config(block).random_ltd_layer_id[0] == 0


def test_cross_checks_with_command_line():
    with pytest.raises(RandomLTDConfigError, match=r"total_layer_num: is 24 but --num-layers is 12"):
        parse_random_ltd_config(UPSTREAM, num_layers=12)
    with pytest.raises(RandomLTDConfigError, match=r"max_value: is 2048 but --seq-length is 1024"):
        check_random_ltd_against_run(parse_random_ltd_config(UPSTREAM), seq_length=1024)
    with pytest.raises(RandomLTDConfigError, match=r"data_routing: expected a JSON object"):
        parse_data_routing_config([1, 2])


def test_config_is_valueerror_and_unknown_lists_known_keys():
    with pytest.raises(ValueError, match=r"zzz: unknown key \(known keys: enabled, total_layer_num"):
        parse_random_ltd_config(with_change("zzz", 1))
