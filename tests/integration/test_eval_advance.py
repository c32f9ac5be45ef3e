"""--eval-advance: upstream's evaluation order (each evaluation continues through the validation split), resumable;
the default reads the same first --eval-iters batches every time."""
from __future__ import annotations

import dataclasses

import torch

from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC
from megatron.training.eval_data import CONSUMED_VALID_SAMPLES, AdvancingEvalData
from megatron.training.state import TrainState

GBS, MBS = 8, 4


def run(argv: list[str]) -> tuple[object, list[list[tuple[int, ...]]]]:
    """Train with GPT_SPEC, recording the first tokens of every evaluated sample, one list per micro-batch."""
    seen: list[list[tuple[int, ...]]] = []

    def forward_step(batch, model, config):
        if not torch.is_grad_enabled():  # evaluate() runs under no_grad
            seen.append([tuple(row[:6]) for row in batch["text"].tolist()])
        return GPT_SPEC.forward_step(batch, model, config)

    return pretrain_from_argv(dataclasses.replace(GPT_SPEC, forward_step=forward_step), argv), seen


def test_default_rereads_the_same_batches_advance_moves_on(make_argv):
    flags = dict(train_iters=4, eval_interval=2, eval_iters=1, micro_batch_size=MBS, global_batch_size=GBS)
    _, fixed = run(make_argv(**flags))
    assert len(fixed) == 4 and fixed[:2] == fixed[2:]  # evaluation at 2 and at the end: the same two micro-batches
    result, moving = run(make_argv(eval_advance=True, **flags))
    assert len(moving) == 4 and moving[:2] == fixed[:2]  # the first evaluation starts at the split's start
    assert not set(moving[0] + moving[1]) & set(moving[2] + moving[3])  # the second one reads the next batches
    assert result.state.counters[CONSUMED_VALID_SAMPLES] == 2 * GBS


def test_advance_position_is_saved_and_resumed(make_argv, tmp_path):
    flags = dict(eval_interval=2, eval_iters=1, micro_batch_size=MBS, global_batch_size=GBS, eval_advance=True)
    _, full = run(make_argv(train_iters=6, **flags))
    ckpt = tmp_path / "ckpt"
    run(make_argv(train_iters=6, exit_interval=2, save=ckpt, **flags))
    resumed, rest = run(make_argv(train_iters=6, load=ckpt, save=ckpt, **flags))
    assert rest == full[2:]  # evaluations 4 and 6 continue where evaluation 2 stopped
    assert resumed.state.counters[CONSUMED_VALID_SAMPLES] == 3 * GBS


def test_wraps_around_at_the_end_of_the_split():
    state = TrainState()
    data = AdvancingEvalData(lambda start: [[i] for i in range(start, 10, 2)], 11, state, samples_per_batch=2)
    assert data.usable == 10
    reads = []
    for _ in range(3):
        it = iter(data)
        reads.append([next(it) for _ in range(3)])
    assert reads == [[[0], [2], [4]], [[6], [8], [0]], [[2], [4], [6]]]
    assert state.counters[CONSUMED_VALID_SAMPLES] == 8
