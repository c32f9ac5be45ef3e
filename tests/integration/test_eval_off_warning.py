"""Requested evaluation that can never run (issue 13, item 3): one start-up warning naming --split and the sizes."""
from __future__ import annotations

from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC


def warning_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "evaluation is off" in line]


def test_empty_validation_split_warns_once_at_start_up(make_argv, capsys):
    result = pretrain_from_argv(GPT_SPEC, make_argv(train_iters=4, split="100,0,0", eval_interval=2, eval_iters=2))
    assert result.state.iteration == 4  # training itself is unaffected
    lines = warning_lines(capsys.readouterr().out)
    assert len(lines) == 1, lines
    line = lines[0]
    assert "--eval-iters 2 --eval-interval 2 ask for it, but the validation split is empty" in line
    assert "(--split 100,0,0 gives train/valid/test = " in line and "/0/0 samples)" in line


def test_no_warning_when_evaluation_is_not_requested_or_possible(make_argv, capsys):
    pretrain_from_argv(GPT_SPEC, make_argv(train_iters=3, split="100,0,0", eval_iters=0, eval_interval=2))
    pretrain_from_argv(GPT_SPEC, make_argv(train_iters=3, split="949,50,1", eval_iters=1, eval_interval=2))
    assert warning_lines(capsys.readouterr().out) == []
