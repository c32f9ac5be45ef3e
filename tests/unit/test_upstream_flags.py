"""Values and flags upstream Megatron-DeepSpeed's recipes pass: accepted, with their effect or a warning naming why."""
from __future__ import annotations

import logging

import pytest

from megatron.arguments import log_startup_warnings, parse_args, startup_warnings, validate_args
from megatron.config import ConfigError

BASE = ["--num-layers", "2", "--hidden-size", "8", "--num-attention-heads", "2", "--seq-length", "8",
        "--micro-batch-size", "1", "--lr", "0.1", "--train-iters", "4"]


def test_save_interval_zero_is_accepted_and_means_only_at_the_end():
    args = parse_args(BASE + ["--save-interval", "0", "--save", "/tmp/x"])
    validate_args(args, 1)
    assert args.save_interval == 0
    with pytest.raises(ConfigError, match="--save-interval must be >= 0, got -1"):
        validate_args(parse_args(BASE + ["--save-interval", "-1"]), 1)


def test_moe_flags():
    args = parse_args(BASE + ["--moe-expert-parallel-size", "1", "--disable-moe-token-dropping", "--inference"])
    validate_args(args, 1)
    warnings = startup_warnings(args)
    for flag in ("--moe-expert-parallel-size 1", "--disable-moe-token-dropping", "--inference"):
        assert any(w.startswith(flag + ":") and "no effect here because" in w for w in warnings), (flag, warnings)
    with pytest.raises(ConfigError, match="--moe-expert-parallel-size 2: mixture-of-experts is not supported"):
        validate_args(parse_args(BASE + ["--moe-expert-parallel-size", "2"]), 1)


def test_every_no_op_flag_given_is_reported_once_with_why():
    args = parse_args(BASE + ["--no-masked-softmax-fusion", "--use-flash-attn-v2", "--DDP-impl", "torch",
                              "--deepspeed-activation-checkpointing", "--timing-log-level", "2"])
    warnings = startup_warnings(args)
    names = sorted(w.split(":")[0] for w in warnings)
    assert names == ["--DDP-impl", "--deepspeed-activation-checkpointing", "--no-masked-softmax-fusion",
                     "--timing-log-level", "--use-flash-attn-v2"], warnings
    assert all("accepted for Megatron-DeepSpeed compatibility; no effect here because " in w for w in warnings)
    assert startup_warnings(parse_args(BASE)) == []  # nothing given, nothing said


def test_flags_without_what_they_act_on_are_reported(caplog):
    args = parse_args(BASE + ["--log-optimizer-states-to-tensorboard", "--log-timers-to-tensorboard",
                              "--no-load-optim", "--no-load-rng"])
    with caplog.at_level(logging.WARNING, logger="megatron.arguments"):
        lines = log_startup_warnings(args)
    assert "--log-optimizer-states-to-tensorboard: no effect here because no --tensorboard-dir is given" in lines
    assert "--no-load-optim: no effect here because no --load is given (nothing is resumed)" in lines
    assert len(caplog.records) == len(lines) == 4
    with_dirs = parse_args(BASE + ["--log-optimizer-states-to-tensorboard", "--tensorboard-dir", "/tmp/tb",
                                   "--no-load-optim", "--load", "/tmp/ck"])
    assert startup_warnings(with_dirs) == []


def test_eval_advance_sizes_the_validation_split_for_every_evaluation():
    from types import SimpleNamespace

    from megatron.config import build_configs

    tok = SimpleNamespace(padded_vocab_size=128, eod=0)
    flags = BASE + ["--train-iters", "10", "--eval-interval", "4", "--eval-iters", "2", "--global-batch-size", "4"]
    plain = build_configs(parse_args(flags), tok, 1)
    advancing = build_configs(parse_args(flags + ["--eval-advance"]), tok, 1)
    assert plain.data.train_valid_test_num_samples == (40, 8, 8)
    assert advancing.data.train_valid_test_num_samples == (40, (10 // 4 + 1) * 8, 8)  # upstream's sizing
    assert advancing.training.eval_advance and not plain.training.eval_advance
