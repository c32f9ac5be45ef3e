"""The training log line's iteration total under a token budget."""
from __future__ import annotations

import logging
import re
from types import SimpleNamespace

from megatron.training.state import TrainState
from megatron.training.training_log import StepRecord, TrainingLogger


def _config(train_tokens, train_iters=None, train_samples=800, gbs=8):
    training = SimpleNamespace(train_iters=train_iters, train_tokens=train_tokens, train_samples=train_samples,
                               global_batch_size=gbs, estimated_train_iters=train_iters or train_samples // gbs)
    logging_cfg = SimpleNamespace(tensorboard_dir=None, log_interval=1, tensorboard_queue_size=1)
    return SimpleNamespace(training=training, logging=logging_cfg)


def _total(caplog, config, state, tokens_per_step):
    logger = TrainingLogger(config, lambda s: 1.0, rank=0, world_size=1)
    with caplog.at_level(logging.INFO, logger="megatron.training"):
        logger.record(state, StepRecord(losses={"lm loss": 1.0}, lr=1e-3, grad_norm=None, step_seconds=0.1,
                                        tokens=tokens_per_step))
    return int(re.search(r"iteration\s+\d+/\s*(\d+)", caplog.records[-1].getMessage()).group(1))


def test_token_budget_total_is_projected_from_the_last_step(caplog):
    # curriculum: 10 steps of 256 tokens so far out of 10,000 -> ceil(7,440 / 256) = 30 more steps
    state = TrainState(iteration=10, consumed_train_samples=80, consumed_train_tokens=2560, actual_seq_length=32)
    assert _total(caplog, _config(train_tokens=10_000), state, 256) == 40


def test_iteration_budget_still_caps_the_total(caplog):
    state = TrainState(iteration=10, consumed_train_samples=80, consumed_train_tokens=2560, actual_seq_length=32)
    assert _total(caplog, _config(train_tokens=10_000, train_iters=20), state, 256) == 20
    assert _total(caplog, _config(train_tokens=None, train_iters=20), state, 256) == 20
