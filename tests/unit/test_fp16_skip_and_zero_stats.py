"""fp16 overflow steps and ZeRO bookkeeping in the training loop, on CPU with a fake DeepSpeed engine.

fp16 cannot run on CPU (DeepSpeed refuses it), so the engine here reports overflow through the same API the real
one has: ``was_step_applied()`` False after the boundary micro-batch, an infinite global gradient norm, and the
loss scale where DeepSpeed's unfused fp16 optimizer keeps it (``loss_scale_config.cur_scale``, no ``cur_scale``).
"""
from __future__ import annotations

import logging
import types
from types import SimpleNamespace

import pytest
import torch

from megatron.arguments import parse_args
from megatron.config import ConfigError, build_configs
from megatron.training.data_efficiency_hooks import NoDataEfficiency
from megatron.training.initialize import check_bf16_gradient_accumulation
from megatron.training.loop import TrainResult, _loss_scale, train
from megatron.training.state import TrainState
from megatron.training.training_log import TrainingLogger

TOKENIZER = SimpleNamespace(padded_vocab_size=128, eod=0)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def log_lines():
    """Messages of the `megatron` loggers (they may not propagate to the root, so caplog cannot be relied on)."""
    handler = ListHandler()
    root = logging.getLogger("megatron")
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def config(*flags: str):
    args = parse_args(["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "8",
                       "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "4", "--lr", "1e-2",
                       "--lr-warmup-iters", "0", "--log-interval", "1", "--eval-iters", "0", "--data-path", "unused",
                       *flags])
    return build_configs(args, TOKENIZER, 1)


class UnfusedFP16Optimizer:
    """Where DeepSpeed 0.19.8's FP16_UnfusedOptimizer keeps its scale: no `cur_scale` attribute of its own."""

    def __init__(self) -> None:
        self.param_groups = [{"lr": 1e-2, "params": []}]
        self.loss_scale_config = SimpleNamespace(cur_scale=2048.0)


class OverflowingEngine:
    """A DeepSpeed engine stand-in: 2 micro-batches per step; the steps in `overflow_at` overflow (no update)."""

    def __init__(self, overflow_at: set[int]) -> None:
        self.optimizer = UnfusedFP16Optimizer()
        self.module = torch.nn.Linear(2, 2)
        self.overflow_at = overflow_at
        self.micro = 0
        self.steps = 0
        self._step_applied = False
        self.training = True

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def backward(self, loss: torch.Tensor) -> None:
        pass

    def is_gradient_accumulation_boundary(self) -> bool:
        return self.micro % 2 == 1

    def step(self) -> None:
        boundary = self.is_gradient_accumulation_boundary()
        self.micro += 1
        self._step_applied = False
        if boundary:
            self.steps += 1
            self._step_applied = self.steps not in self.overflow_at
            if self._step_applied:
                self.optimizer.param_groups[0]["lr"] *= 0.5  # stands in for the update

    def was_step_applied(self) -> bool:
        return self._step_applied

    def zero_optimization_stage(self) -> int:
        return 0

    def bfloat16_enabled(self) -> bool:
        return False

    def fp16_enabled(self) -> bool:
        return True

    def get_global_grad_norm(self) -> float:
        return float("inf") if not self._step_applied else 1.5


class RecordingScheduler:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def step(self, increment: int, token_num: int | None = None) -> None:
        self.calls.append((increment, token_num))


def batches():
    while True:
        yield {"text": torch.zeros(2, 9, dtype=torch.long)}


def forward_step(batch, model, cfg):
    loss = torch.tensor(2.0)
    return loss, {"lm loss": loss}


def test_overflow_steps_do_not_step_the_lr_schedule_and_log_skipped(log_lines):
    cfg = config()
    engine, scheduler, state = OverflowingEngine(overflow_at={2, 3}), RecordingScheduler(), TrainState()
    result = TrainResult(state=state)
    train(engine, scheduler, batches(), forward_step, NoDataEfficiency(8, 4), state, cfg,
          TrainingLogger(cfg, lambda s: 1.0, rank=0, world_size=1), evaluate_fn=dict, save_fn=None, result=result)
    assert state.iteration == 4 and state.skipped_iterations == 2 and state.consumed_train_samples == 16
    # the scheduler moved after iterations 1 and 4 only; the token count it gets still includes skipped steps
    assert scheduler.calls == [(4, 32), (4, 128)]
    lines = [m for m in log_lines if " iteration " in m]
    assert len(lines) == 4
    for it, line in enumerate(lines, 1):
        skipped = it in (2, 3)
        assert ("grad norm: skipped" in line) == skipped and ("grad norm: 1.500" in line) == (not skipped)
        assert "inf" not in line
        assert "loss scale: 2048.0" in line  # read from loss_scale_config, the unfused optimizer has no cur_scale
        assert f"number of skipped iterations: {int(skipped):3d}" in line


def test_loss_scale_through_deepspeeds_accessor_and_the_zero_optimizer():
    from deepspeed.runtime.engine import DeepSpeedEngine

    engine = OverflowingEngine(set())
    engine._get_optimizer_loss_scale = types.MethodType(DeepSpeedEngine._get_optimizer_loss_scale, engine)
    assert _loss_scale(engine) == 2048.0
    zero = OverflowingEngine(set())
    zero.optimizer = SimpleNamespace(param_groups=[{"lr": 1.0}], loss_scaler=SimpleNamespace(cur_scale=64.0))
    assert _loss_scale(zero) == 64.0


def test_bf16_gradient_accumulation_warning(tmp_path, log_lines):
    check_bf16_gradient_accumulation(config("--bf16", "--zero-stage", "0"))
    assert len(log_lines) == 1 and log_lines[0].startswith("bf16 at ZeRO-0 sums the gradients of the 2 micro-batches")
    assert "use ZeRO-1 (--zero-stage 1)" in log_lines[0] and '"grad_accum_dtype": "fp32"' in log_lines[0]
    log_lines.clear()
    check_bf16_gradient_accumulation(config("--bf16", "--zero-stage", "0", "--global-batch-size", "2"))  # 1 micro
    check_bf16_gradient_accumulation(config("--zero-stage", "0"))  # fp32
    assert log_lines == []
    js = tmp_path / "ds.json"
    js.write_text('{"data_types": {"grad_accum_dtype": "fp32"}}')
    check_bf16_gradient_accumulation(config("--bf16", "--zero-stage", "1", "--deepspeed_config", str(js)))
    assert log_lines == []
    check_bf16_gradient_accumulation(config("--bf16", "--zero-stage", "1"))
    assert len(log_lines) == 1 and "bf16 at ZeRO-1" in log_lines[0]
    with pytest.raises(ConfigError, match="grad_accum_dtype fp32 with bf16 needs ZeRO stage 1"):
        check_bf16_gradient_accumulation(config("--bf16", "--zero-stage", "0", "--deepspeed_config", str(js)))


def test_zero3_params_norm_sums_each_ranks_owned_elements(monkeypatch):
    """3 ranks, a 10-element parameter in shards of 4 (the last padded with garbage): the norm is the full one."""
    from megatron.training import loop

    full = torch.arange(1.0, 11.0)
    shards = [full[0:4], full[4:8], torch.cat([full[8:10], torch.tensor([1e6, -1e6])])]  # padding: not weights
    squares = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 3)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, **kw: squares.append(float(t)))
    for rank, shard in enumerate(shards):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, r=rank: r)
        param = SimpleNamespace(ds_tensor=shard, ds_numel=10, ds_process_group=None)
        engine = SimpleNamespace(module=SimpleNamespace(parameters=lambda p=param: [p]))
        loop._params_norm(engine)
    assert squares == pytest.approx([1 + 4 + 9 + 16, 25 + 36 + 49 + 64, 81 + 100])
    assert sum(squares) ** 0.5 == pytest.approx(float(full.norm()))
    assert loop.parameter_count(SimpleNamespace(parameters=lambda: [SimpleNamespace(ds_numel=10, numel=lambda: 0),
                                                                    torch.zeros(3)])) == 13
