"""Megatron OptimizerParamScheduler semantics: warmup/decay by samples or tokens, state, override."""
from __future__ import annotations

import argparse
import io
import math

import pytest
import torch

from megatron.arguments import parse_args
from megatron.config import lr_schedule_config
from megatron.training.lr_scheduler import LRSchedulerError, OptimizerParamScheduler

MAX, MIN = 0.01, 0.001
GBS = 10


def optimizer(groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(groups)]
    return torch.optim.SGD(params, lr=123.0)


def make(**kwargs: object) -> OptimizerParamScheduler:
    fields: dict[str, object] = dict(
        max_lr=MAX, min_lr=MIN, lr_warmup_steps=100, lr_decay_steps=1100, lr_decay_style="linear"
    )
    fields.update(kwargs)
    opt = fields.pop("optimizer", None) or optimizer()
    return OptimizerParamScheduler(opt, **fields)  # type: ignore[arg-type]


def advance(sched: OptimizerParamScheduler, to_samples: int, tokens_per_sample: int = 0) -> float:
    """Step by global batches until `to_samples` samples were consumed; return the group lr."""
    while sched.num_steps < to_samples:
        sched.step(GBS, token_num=(sched.num_steps + GBS) * tokens_per_sample)
    return sched.optimizer.param_groups[0]["lr"]


def decay(style: str, ratio: float) -> float:
    coeff = {"linear": 1.0 - ratio, "cosine": 0.5 * (math.cos(math.pi * ratio) + 1.0)}[style]
    return MIN + coeff * (MAX - MIN)


def test_initial_lr_is_set_on_construction() -> None:
    sched = make()
    assert sched.optimizer.param_groups[0]["lr"] == 0.0  # warmup starts at 0, not the optimizer's 123


@pytest.mark.parametrize("style", ["linear", "cosine"])
def test_warmup_then_decay_values(style: str) -> None:
    sched = make(lr_decay_style=style)
    assert advance(sched, 50) == pytest.approx(MAX * 50 / 100)
    assert advance(sched, 100) == pytest.approx(MAX)
    assert advance(sched, 350) == pytest.approx(decay(style, 250 / 1000))
    assert advance(sched, 600) == pytest.approx(decay(style, 500 / 1000))
    assert advance(sched, 1100) == pytest.approx(MIN)
    assert advance(sched, 5000) == MIN


def test_constant_style_keeps_max_after_warmup() -> None:
    sched = make(lr_decay_style="constant")
    assert advance(sched, 40) == pytest.approx(MAX * 0.4)
    assert advance(sched, 600) == MAX
    assert advance(sched, 5000) == MAX  # constant ignores the decay length


def test_inverse_square_root_and_min_lr_floor() -> None:
    sched = make(lr_decay_style="inverse-square-root", lr_decay_steps=10**6)
    assert advance(sched, 400) == pytest.approx(MAX * math.sqrt(100 / 400))
    assert advance(sched, 2500) == pytest.approx(MAX * math.sqrt(100 / 2500))
    assert advance(sched, 900_000) == MIN  # MAX * sqrt(100/9e5) < MIN: floored
    assert advance(sched, 1_000_010) == MIN  # past the decay length


@pytest.mark.parametrize("style", ["constant", "linear", "cosine", "inverse-square-root"])
def test_lr_never_below_min_or_above_max(style: str) -> None:
    sched = make(lr_decay_style=style)
    seen = []
    for _ in range(200):
        sched.step(GBS)
        seen.append(sched.optimizer.param_groups[0]["lr"])
    after_warmup = seen[10:]
    assert min(after_warmup) >= MIN - 1e-15 and max(seen) <= MAX + 1e-15


def schedule_steps(gbs: int, **flags: object) -> tuple[int, int, int]:
    """(warmup, decay, wd increment) in samples from megatron.config.lr_schedule_config, given --train-iters or
    --train-samples and --lr-* flags (Megatron's defaults otherwise), with the run length build_configs passes."""
    args = argparse.Namespace(**{**vars(parse_args([])), **flags})
    if args.train_iters is not None:
        train_iters, train_samples = args.train_iters, args.train_iters * gbs
    else:
        train_iters, train_samples = args.train_samples // gbs, args.train_samples
    s = lr_schedule_config(args, train_iters, train_samples, gbs)
    return s.lr_warmup_steps, s.lr_decay_steps, s.wd_incr_steps


def test_warmup_by_iterations_samples_and_fraction() -> None:
    warm, decay_len, wd_len = schedule_steps(8, train_iters=100, lr_warmup_iters=10)
    assert (warm, decay_len, wd_len) == (80, 800, 800)
    sched = make(lr_warmup_steps=warm, lr_decay_steps=decay_len)
    for iteration in range(1, 11):
        sched.step(8)
        assert sched.get_lr() == pytest.approx(MAX * iteration / 10)
    assert schedule_steps(8, train_iters=100, lr_decay_iters=50) == (0, 400, 800)
    assert schedule_steps(8, train_samples=1000, lr_warmup_samples=30) == (30, 1000, 1000)
    assert schedule_steps(8, train_samples=1000, lr_decay_samples=600) == (0, 600, 1000)
    warm, decay_len, _ = schedule_steps(8, train_iters=100, lr_warmup_fraction=0.05)
    assert warm == pytest.approx(0.05 * 800)
    sched = make(lr_warmup_steps=warm, lr_decay_steps=decay_len)
    sched.step(24)
    assert sched.get_lr() == pytest.approx(MAX * 24 / 40)
    # no budget flag, or --lr-warmup-fraction outside [0, 1]: flag errors of validate_args (test_arguments.py)


def test_token_warmup_overrides_step_warmup() -> None:
    sched = make(lr_warmup_steps=0, lr_warmup_tokens=1000)
    sched.step(GBS, token_num=250)
    assert sched.get_lr() == pytest.approx(MAX * 0.25)
    sched.step(GBS, token_num=1000)
    assert sched.get_lr() == pytest.approx(MAX)
    sched.step(GBS)  # token_num None keeps the last token count
    assert sched.num_tokens == 1000 and sched.num_steps == 3 * GBS


@pytest.mark.parametrize("style", ["linear", "cosine"])
def test_token_warmup_and_token_decay(style: str) -> None:
    sched = make(lr_decay_style=style, lr_warmup_steps=0, lr_warmup_tokens=1000, lr_decay_tokens=11000)
    sched.step(GBS, token_num=6000)
    assert sched.get_lr() == pytest.approx(decay(style, 0.5))
    sched.step(GBS, token_num=3500)
    assert sched.get_lr() == pytest.approx(decay(style, 0.25))
    sched.step(10**6, token_num=3500)  # far past the sample decay length: tokens drive decay
    assert sched.get_lr() == pytest.approx(decay(style, 0.25))
    sched.step(GBS, token_num=11001)
    assert sched.get_lr() == MIN


def test_step_warmup_with_token_decay_captures_warmup_tokens() -> None:
    sched = make(lr_warmup_steps=100, lr_decay_tokens=5000)
    advance(sched, 100, tokens_per_sample=10)  # warmup ends at 100 samples = 1000 tokens
    assert sched.get_lr() == pytest.approx(MAX)
    assert sched.state_dict()["lr_warmup_tokens"] == 1000
    sched.step(GBS, token_num=3000)
    assert sched.get_lr() == pytest.approx(decay("linear", (3000 - 1000) / (5000 - 1000)))
    # warmup length not a multiple of the batch (e.g. from a fraction): captured at the first step past it
    sched = make(lr_warmup_steps=95, lr_decay_tokens=5000)
    advance(sched, 100, tokens_per_sample=7)
    assert sched.state_dict()["lr_warmup_tokens"] == 700
    # no warmup at all: decay starts at token 0
    sched = make(lr_warmup_steps=0, lr_decay_tokens=5000, lr_decay_style="cosine")
    sched.step(GBS, token_num=2500)
    assert sched.get_lr() == pytest.approx(decay("cosine", 0.5))


def test_lr_mult_and_wd_mult_per_group() -> None:
    opt = optimizer(groups=2)
    opt.param_groups[1]["lr_mult"] = 0.5
    opt.param_groups[1]["wd_mult"] = 0.0
    sched = make(optimizer=opt, lr_decay_style="constant", start_wd=0.1, end_wd=0.1)
    advance(sched, 200)
    assert opt.param_groups[0]["lr"] == MAX and opt.param_groups[1]["lr"] == pytest.approx(MAX * 0.5)
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("style", ["linear", "cosine"])
def test_weight_decay_increment(style: str) -> None:
    sched = make(start_wd=0.0, end_wd=0.1, wd_incr_steps=1000, wd_incr_style=style)
    advance(sched, 250)
    coeff = 0.25 if style == "linear" else 0.5 * (math.cos(math.pi * 0.75) + 1.0)
    assert sched.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.1 * coeff)
    advance(sched, 1010)
    assert sched.optimizer.param_groups[0]["weight_decay"] == 0.1


def roundtrip(sd: dict) -> dict:
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("token_decay", [False, True])
def test_state_round_trip_continues_identically(token_decay: bool) -> None:
    kwargs: dict[str, object] = dict(
        lr_decay_style="cosine", start_wd=0.0, end_wd=0.1, wd_incr_steps=1100, wd_incr_style="linear"
    )
    if token_decay:
        kwargs["lr_decay_tokens"] = 20000
    a = make(**kwargs)
    advance(a, 370, tokens_per_sample=16)
    b = make(use_checkpoint_opt_param_scheduler=False, **kwargs)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert b.state_dict() == a.state_dict()
    assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"]
    for _ in range(50):
        a.step(GBS, token_num=a.num_tokens + 16 * GBS)
        b.step(GBS, token_num=b.num_tokens + 16 * GBS)
        assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"]
        assert b.optimizer.param_groups[0]["weight_decay"] == a.optimizer.param_groups[0]["weight_decay"]


def test_old_checkpoint_keys_are_accepted() -> None:
    old = {
        "start_lr": MAX, "min_lr": MIN, "warmup_iter": 100, "end_iter": 1100, "decay_style": "linear",
        "num_iters": 600, "warmup_tokens": None, "decay_tokens": None, "num_tokens": 4242,
    }
    sched = make(use_checkpoint_opt_param_scheduler=False)
    sched.load_state_dict(old)
    assert sched.num_steps == 600 and sched.num_tokens == 4242
    assert sched.get_lr() == pytest.approx(decay("linear", 0.5))


def test_mismatch_without_override_is_a_clear_error() -> None:
    saved = make(max_lr=0.02).state_dict()
    sched = make(use_checkpoint_opt_param_scheduler=False)
    expected = r"--lr is 0\.01 on the command line but 0\.02 in the checkpoint.*--override-opt_param-scheduler"
    with pytest.raises(LRSchedulerError, match=expected):
        sched.load_state_dict(saved)
    saved = make(lr_decay_style="cosine").state_dict()
    with pytest.raises(LRSchedulerError, match="--lr-decay-style"):
        make(use_checkpoint_opt_param_scheduler=False).load_state_dict(saved)


def test_override_uses_command_line_and_use_checkpoint_uses_saved() -> None:
    old = make(max_lr=0.02, lr_decay_steps=2100)
    advance(old, 600)
    saved = old.state_dict()
    overridden = make(override_opt_param_scheduler=True)
    overridden.load_state_dict(saved)
    assert overridden.max_lr == MAX and overridden.lr_decay_steps == 1100
    assert overridden.num_steps == 600  # progress always comes from the checkpoint
    assert overridden.get_lr() == pytest.approx(decay("linear", 0.5))
    from_ckpt = make(use_checkpoint_opt_param_scheduler=True)
    from_ckpt.load_state_dict(saved)
    assert from_ckpt.max_lr == 0.02 and from_ckpt.lr_decay_steps == 2100
    assert from_ckpt.get_lr() == pytest.approx(old.get_lr())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr_decay_style="exponential"), "--lr-decay-style"),
        (dict(min_lr=0.1), "--min-lr"),
        (dict(lr_warmup_steps=1100), "shorter than LR decay"),
        (dict(lr_decay_steps=0), "must be > 0"),
        (dict(lr_warmup_tokens=-1, lr_decay_tokens=400), "--lr-warmup-tokens must be >= 0"),
        (dict(start_wd=0.1, end_wd=0.2), "constant"),
        (dict(start_wd=0.0, end_wd=0.1, wd_incr_style="linear"), "increment length"),
    ],
)
def test_invalid_settings_name_the_flag(kwargs: dict, match: str) -> None:
    with pytest.raises(LRSchedulerError, match=match):
        make(**kwargs)


@pytest.mark.parametrize("style", ["linear", "cosine", "inverse-square-root"])
def test_token_warmup_at_least_decay_warms_up_then_holds_min_lr(style: str) -> None:
    """Upstream's base script fixes 3e9 warmup tokens: with a shorter decay it warms up, then holds min_lr."""
    sched = make(lr_decay_style=style, lr_warmup_tokens=5000, lr_decay_tokens=4000)
    assert advance(sched, 100, tokens_per_sample=10) == pytest.approx(MAX * 1000 / 5000)
    assert advance(sched, 500, tokens_per_sample=10) == pytest.approx(MAX)  # warmup ends at 5000 tokens
    assert advance(sched, 510, tokens_per_sample=10) == MIN
    assert advance(sched, 2000, tokens_per_sample=10) == MIN
    restored = make(lr_decay_style=style, lr_warmup_tokens=5000, lr_decay_tokens=4000)
    restored.load_state_dict(sched.state_dict())
    assert restored.get_lr() == MIN


def test_token_warmup_at_least_decay_is_a_warning_on_the_command_line() -> None:
    from megatron.arguments import startup_warnings

    base = ["--num-layers", "2", "--hidden-size", "8", "--num-attention-heads", "2", "--seq-length", "8",
            "--micro-batch-size", "1", "--lr", "0.1", "--train-tokens", "100", "--lr-decay-style", "cosine"]
    args = parse_args(base + ["--lr-warmup-tokens", "300", "--lr-decay-tokens", "100"])
    assert any("--lr-warmup-tokens 300 >= --lr-decay-tokens 100" in w and "holds --min-lr" in w
               for w in startup_warnings(args))
    args = parse_args(base + ["--lr-warmup-tokens", "30", "--lr-decay-tokens", "100"])
    assert not [w for w in startup_warnings(args) if "lr-warmup-tokens" in w]
