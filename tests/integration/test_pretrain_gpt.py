"""Tiny end-to-end GPT runs through pretrain_gpt.py on the DeepSpeed engine (CPU, seeded)."""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC


def run(argv: list[str]):
    """Run pretrain in this process and return its TrainResult."""
    return pretrain_from_argv(GPT_SPEC, argv)


def test_loss_falls_and_tensorboard_written(make_argv, tmp_path):
    tb = tmp_path / "tb"
    result = run(make_argv(train_iters=30, eval_interval=10, tensorboard_dir=tb, log_validation_ppl_to_tensorboard=True,
                           log_batch_size_to_tensorboard=True))
    losses = [step["lm loss"] for step in result.losses]
    assert len(losses) == 30 and result.state.iteration == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    # evaluation every 10 iterations (10, 20) and at the end (30), with finite perplexity
    assert [it for it, _ in result.evaluations] == [10, 20, 30]
    assert all(math.isfinite(m["lm loss"]) for _, m in result.evaluations)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("lm-loss-training/lm loss", "lm-loss-training/lm loss vs samples", "lm-loss-training/lm loss vs tokens",
                "learning-rate/learning-rate", "learning-rate/learning-rate vs tokens", "grad-norm/grad-norm",
                "batch-size/batch-size", "lm-loss-validation/lm loss validation",
                "lm-loss-validation/lm loss validation ppl vs tokens"):  # Megatron-DeepSpeed's tags
        assert tag in tags, (tag, sorted(tags))
    by_tokens = acc.Scalars("lm-loss-training/lm loss vs tokens")
    assert [e.step for e in by_tokens][:3] == [256, 512, 768]  # 8 samples x 32 tokens per iteration
    assert by_tokens[0].value == pytest.approx(losses[0], rel=1e-6)


def test_counters_lr_and_train_tokens_budget(make_argv):
    # 256 tokens per iteration: --train-tokens 1000 stops after 4 iterations although --train-iters is 50
    result = run(make_argv(train_iters=50, train_tokens=1000, lr_warmup_iters=2, lr_decay_style="linear",
                           lr=1e-3, min_lr=0.0))
    state = result.state
    assert (state.iteration, state.consumed_train_samples, state.consumed_train_tokens) == (4, 32, 1024)
    assert state.actual_seq_length == 32
    # Megatron schedule in samples: warmup 2 iters = 16 samples, linear decay over 50 iters = 400 samples;
    # the lr applied at iteration i is the one set after i-1 steps of 8 samples
    expected = []
    for i in range(4):
        samples = 8 * i
        if samples <= 16:
            expected.append(1e-3 * samples / 16)
        else:
            expected.append(1e-3 * (1 - (samples - 16) / (400 - 16)))
    assert result.lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("engine_flags", [{}, {"zero_stage": 1, "bf16": True}], ids=["fp32-zero0", "bf16-zero1"])
def test_resume_equals_uninterrupted(make_argv, tmp_path, engine_flags):
    common = dict(train_iters=10, attention_dropout=0.1, hidden_dropout=0.1, eval_interval=3, **engine_flags)
    full = run(make_argv(save=tmp_path / "full", save_interval=5, **common))
    part = run(make_argv(save=tmp_path / "part", exit_interval=5, **common))  # "killed" after 5 iterations
    assert part.state.iteration == 5 and part.exit_reason.startswith("--exit-interval")
    assert (tmp_path / "part" / "latest").read_text() == "global_step5"
    assert (tmp_path / "part" / "latest_checkpointed_iteration.txt").read_text() == "5"
    resumed = run(make_argv(load=tmp_path / "part", save=tmp_path / "part", **common))
    full_losses = [s["lm loss"] for s in full.losses]
    assert [s["lm loss"] for s in part.losses] == full_losses[:5]
    assert resumed.iterations == [6, 7, 8, 9, 10]
    assert [s["lm loss"] for s in resumed.losses] == full_losses[5:]  # bitwise identical, dropout included
    assert resumed.lrs == full.lrs[5:]
    assert resumed.state.consumed_train_samples == full.state.consumed_train_samples == 80
    assert resumed.state.consumed_train_tokens == full.state.consumed_train_tokens == 80 * 32


def test_killed_save_leaves_previous_checkpoint(make_argv, tmp_path, monkeypatch):
    from megatron.training import checkpointing

    ckpt = tmp_path / "ckpt"
    run(make_argv(train_iters=6, save=ckpt, save_interval=3, exit_interval=3))
    assert (ckpt / "latest").read_text() == "global_step3"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(checkpointing, "_publish", killed)  # the engine has written global_step6.tmp by now
    with pytest.raises(KeyboardInterrupt):
        run(make_argv(train_iters=6, load=ckpt, save=ckpt, save_interval=3))
    assert (ckpt / "latest").read_text() == "global_step3"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "3"
    assert (ckpt / "global_step6.tmp").is_dir() and os.listdir(ckpt / "global_step6.tmp")
    assert not (ckpt / "global_step6").exists()

    monkeypatch.undo()
    resumed = run(make_argv(train_iters=6, load=ckpt, save=ckpt, save_interval=3))
    assert resumed.iterations == [4, 5, 6]  # loaded the older, complete checkpoint
    assert (ckpt / "latest").read_text() == "global_step6"
    assert not (ckpt / "global_step6.tmp").exists()  # the leftover was removed by the next save


def test_two_process_gloo_matches_one_process(make_argv, monkeypatch):
    from megatron.training import training_log

    one_norms = []
    real_record = training_log.TrainingLogger.record

    def record(self, state, step):
        one_norms.append(step.grad_norm)
        real_record(self, state, step)

    monkeypatch.setattr(training_log.TrainingLogger, "record", record)
    one = run(make_argv(train_iters=4, micro_batch_size=2, global_batch_size=8))
    monkeypatch.undo()
    argv = make_argv(train_iters=4, micro_batch_size=2, global_batch_size=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "pretrain_gpt.py"), *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [float(line.split("lm loss: ")[1].split(" |")[0]) for line in proc.stdout.splitlines()
              if " iteration " in line and "lm loss: " in line]
    assert len(losses) == 4, proc.stdout[-3000:]
    assert losses == pytest.approx([s["lm loss"] for s in one.losses], abs=1e-5)
    norms = [float(line.split("grad norm: ")[1].split(" |")[0]) for line in proc.stdout.splitlines()
             if " iteration " in line and "grad norm: " in line]
    assert norms == pytest.approx(one_norms, abs=2e-3)  # gradients were averaged over both ranks before the norm
    assert "consumed samples:           32" in proc.stdout


def test_cli_error_is_one_line_exit_2(make_argv):
    argv = make_argv(global_batch_size=6)  # not divisible by micro-batch 4 x 1 rank
    proc = subprocess.run([sys.executable, str(REPO / "pretrain_gpt.py"), *argv], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --global-batch-size 6 is not divisible by --micro-batch-size 4 x data-parallel size 1 "
                      "(= 4)"], proc.stderr
    assert "Traceback" not in proc.stderr


def test_schedule_errors_are_usage_errors(make_argv):
    from megatron.training import UsageError

    with pytest.raises(UsageError, match="LR warmup .* must be shorter than LR decay"):
        run(make_argv(train_iters=2, lr_warmup_iters=2))


def test_data_post_process_hook_sees_every_training_micro_batch(make_argv):
    seen = []

    def hook(batch, sampler_state):
        seen.append((tuple(batch["text"].shape), dict(sampler_state)))
        return {"text": batch["text"].clone()}

    result = pretrain_from_argv(dataclasses.replace(GPT_SPEC, data_post_process=hook),
                                make_argv(train_iters=2, micro_batch_size=2, lr_warmup_iters=0))
    assert result.state.iteration == 2
    # 2 iterations x 4 micro-batches; evaluation batches do not go through the training hook
    assert seen == [((2, 33), {"current_difficulties": {}})] * 8


def test_evaluation_does_not_perturb_training(make_argv):
    common = dict(train_iters=4, attention_dropout=0.1, hidden_dropout=0.1)
    with_eval = run(make_argv(eval_interval=1, **common))
    without = run(make_argv(eval_interval=1000, **common))
    assert [it for it, _ in with_eval.evaluations] == [1, 2, 3, 4]
    assert [s["lm loss"] for s in with_eval.losses] == [s["lm loss"] for s in without.losses]
