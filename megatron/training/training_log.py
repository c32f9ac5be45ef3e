"""The Megatron-style one-line training log and TensorBoard scalars (vs iterations, samples and tokens).

TensorBoard tags are Megatron-DeepSpeed's (``lm-loss-training/lm loss``, ``learning-rate/learning-rate``,
``steps-vs-tokens/y=tokens,x=steps``, ...), so dashboards and scripts keyed on upstream's tags work unchanged.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from megatron.config import RunConfig
from megatron.training.state import TrainState

logger = logging.getLogger("megatron.training")


def _fmt_field(value: float) -> str:
    """Whole numbers (lengths, token counts) print as integers; anything else in short float form."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass
class StepRecord:
    """What one optimizer step reports to the logger."""

    losses: dict[str, float]
    """Loss metrics averaged over micro-batches and data-parallel ranks."""
    lr: float
    """Learning rate applied in this step."""
    grad_norm: float | None
    """Global gradient norm before clipping (None if unknown)."""
    step_seconds: float
    """Wall time of the step."""
    tokens: int
    """Tokens consumed by the step over all ranks."""
    skipped: bool = False
    """The update was skipped (fp16 overflow)."""
    loss_scale: float | None = None
    """fp16 loss scale."""
    params_norm: float | None = None
    """L2 norm of the parameters (--log-params-norm)."""
    extra: dict[str, float] = field(default_factory=dict)
    """Data-efficiency fields."""
    notes: list[str] = field(default_factory=list)
    """Text for the log line only (not TensorBoard), e.g. the curriculum's cluster builds since the last line."""


_UPSTREAM_SEQLEN_TAGS = {"curriculum seqlen": "curriculum_seqlen",
                         "random ltd reserved length": "random_ltd_reserved_length"}
"""Data-efficiency log fields that upstream also writes, under its own tag (``seqlen/<upstream name>``)."""


def _fmt_loss(value: float) -> str:
    return f"{value:.6E}"


class TrainingLogger:
    """Accumulates steps and prints the training log line every --log-interval; writes TensorBoard on rank 0."""

    def __init__(self, config: RunConfig, flops_per_token: Callable[[int], float], rank: int, world_size: int) -> None:
        self.config = config
        self.flops_per_token = flops_per_token
        self.world_size = world_size
        self.writer = None
        log = config.logging
        if log.tensorboard_dir and rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(log.tensorboard_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=log.tensorboard_dir, max_queue=log.tensorboard_queue_size)
        self._warned_no_moments = False
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0
        self._seconds = 0.0
        self._tokens = 0
        self._flops = 0.0
        self._skipped = 0
        self._last: StepRecord | None = None

    def record(self, state: TrainState, step: StepRecord) -> None:
        """Add one step; print the log line when the interval completes; write TensorBoard scalars."""
        for key, value in step.losses.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        self._seconds += step.step_seconds
        self._tokens += step.tokens
        self._flops += step.tokens * self.flops_per_token(max(1, state.actual_seq_length))
        self._skipped += int(step.skipped)
        self._last = step
        self._tensorboard(state, step)
        if state.iteration % self.config.logging.log_interval == 0:
            if self.writer is not None and self.config.logging.log_timers_to_tensorboard:
                self._scalars("iteration-time/iteration-time", self._seconds / max(1, self._count), state)
            self._print(state)
            self._reset()

    def _print(self, state: TrainState) -> None:
        t, step = self.config.training, self._last
        assert step is not None
        total = t.train_iters if t.train_iters is not None else t.estimated_train_iters
        if t.train_tokens is not None and step.tokens > 0 and state.consumed_train_tokens < t.train_tokens:
            # Token budget: steps under curriculum/random-LTD count fewer tokens, so project from the last step.
            left = math.ceil((t.train_tokens - state.consumed_train_tokens) / step.tokens)
            total = min(total, state.iteration + left) if t.train_iters is not None else state.iteration + left
        elif t.train_tokens is not None and t.train_iters is None:
            total = max(total, state.iteration)
        ms = 1000.0 * self._seconds / max(1, self._count)
        parts = [f" iteration {state.iteration:8d}/{total:8d}",
                 f"consumed samples: {state.consumed_train_samples:12d}",
                 f"consumed tokens: {state.consumed_train_tokens:14d}",
                 f"elapsed time per iteration (ms): {ms:.1f}",
                 f"learning rate: {step.lr:.3E}",
                 f"global batch size: {t.global_batch_size:5d}"]
        parts += [f"{key}: {_fmt_loss(value / max(1, self._count))}" for key, value in self._sums.items()]
        if step.loss_scale is not None:
            parts.append(f"loss scale: {step.loss_scale:.1f}")
        if step.skipped:  # fp16 overflow: no update, and no finite gradient norm to show
            parts.append("grad norm: skipped")
        elif step.grad_norm is not None:
            parts.append(f"grad norm: {step.grad_norm:.3f}")
        if step.params_norm is not None:
            parts.append(f"params norm: {step.params_norm:.3f}")
        parts.append(f"actual seqlen: {state.actual_seq_length:5d}")
        parts += [f"{key}: {_fmt_field(value)}" for key, value in step.extra.items()]
        parts += step.notes
        parts.append(f"number of skipped iterations: {self._skipped:3d}")
        seconds = max(self._seconds, 1e-9)
        parts.append(f"tokens per second: {self._tokens / seconds:.1f}")
        parts.append(f"TFLOPs: {self._flops / seconds / self.world_size / 1e12:.3f}")
        logger.info(" | ".join(parts) + " |")

    def _scalars(self, name: str, value: float, state: TrainState) -> None:
        assert self.writer is not None
        self.writer.add_scalar(name, value, state.iteration)
        self.writer.add_scalar(f"{name} vs samples", value, state.consumed_train_samples)
        self.writer.add_scalar(f"{name} vs tokens", value, state.consumed_train_tokens)

    def _tensorboard(self, state: TrainState, step: StepRecord) -> None:
        """Megatron-DeepSpeed's tags (``training_log``): ``<group>/<name>`` vs iterations, `` vs samples``,
        `` vs tokens``; the data-efficiency fields keep their ``seqlen/<field>`` names."""
        log = self.config.logging
        if self.writer is None or state.iteration % log.tensorboard_log_interval:
            return
        w, it = self.writer, state.iteration
        w.add_scalar("steps-vs-samples/y=steps,x=samples", it, state.consumed_train_samples)
        w.add_scalar("steps-vs-samples/y=samples,x=steps", state.consumed_train_samples, it)
        w.add_scalar("steps-vs-tokens/y=steps,x=tokens", it, state.consumed_train_tokens)
        w.add_scalar("steps-vs-tokens/y=tokens,x=steps", state.consumed_train_tokens, it)
        if log.log_learning_rate_to_tensorboard:
            self._scalars("learning-rate/learning-rate", step.lr, state)
        if log.log_batch_size_to_tensorboard:
            self._scalars("batch-size/batch-size", self.config.training.global_batch_size, state)
        for key, value in step.losses.items():
            self._scalars(f"lm-loss-training/{key}", value, state)
        if step.loss_scale is not None and log.log_loss_scale_to_tensorboard:
            self._scalars("loss-scale/loss-scale", step.loss_scale, state)
        if log.log_world_size_to_tensorboard:
            self._scalars("world-size/world-size", self.world_size, state)
        if step.grad_norm is not None and not step.skipped:
            self._scalars("grad-norm/grad-norm", step.grad_norm, state)
        if step.params_norm is not None:
            self._scalars("params-norm/params-norm", step.params_norm, state)
        self._scalars("seqlen/actual_seq_length", state.actual_seq_length, state)
        for key, value in step.extra.items():
            self._scalars(f"seqlen/{key}", value, state)
            if key in _UPSTREAM_SEQLEN_TAGS:  # upstream's spelling of the same series as well
                self._scalars(f"seqlen/{_UPSTREAM_SEQLEN_TAGS[key]}", value, state)
        if log.log_memory_to_tensorboard:
            w.add_scalar("mem-max-rss-MB", _max_rss_mb(), it)
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                stats = torch.cuda.memory_stats()
                for tag, key in (("mem-reserved-bytes", "reserved_bytes.all.current"),
                                 ("mem-allocated-bytes", "allocated_bytes.all.current"),
                                 ("mem-allocated-count", "allocation.all.current")):
                    w.add_scalar(tag, stats.get(key, 0), it)

    def optimizer_states(self, state: TrainState, engine: Any) -> None:
        """Upstream's twelve ``optimizer/*`` series (--log-optimizer-states-to-tensorboard): L1, L2 and abs-max
        of Adam's momentum, variance, its square root and the weights, whole-model under every ZeRO stage.

        Collective under ZeRO (shard statistics are all-reduced): call it on every rank; rank 0 writes.
        """
        log = self.config.logging
        if not (log.log_optimizer_states_to_tensorboard and log.tensorboard_dir):
            return
        from megatron.training.optimizer_stats import SERIES, optimizer_state_stats

        stats = optimizer_state_stats(engine)
        if stats is None or self.writer is None:
            return
        if not self._warned_no_moments and not stats.keys() >= set(SERIES):
            self._warned_no_moments = True
            logger.warning("--log-optimizer-states-to-tensorboard: the optimizer keeps no Adam moments "
                           "(exp_avg/exp_avg_sq); only the optimizer/weight_* series are written")
        for name, value in stats.items():
            self.writer.add_scalar(f"optimizer/{name} vs tokens", value, state.consumed_train_tokens)
            self.writer.add_scalar(f"optimizer/{name}", value, state.iteration)

    def validation(self, state: TrainState, results: dict[str, float], split: str = "validation",
                   when: str = "") -> None:
        """Print the `split` loss/perplexity line and write its scalars (`when` e.g. 'end of training').

        Every metric gets ``value``; losses (names containing "loss") also get ``PPL`` (as Megatron prints them).
        """
        parts = []
        for key, value in results.items():  # upstream's tags: lm-loss-validation/<key> validation|test [ppl]
            if "loss" not in key:
                parts.append(f"{key} value: {value:.6E}")
                if self.writer is not None:
                    self._scalars(f"lm-loss-validation/{key} {split}", value, state)
                continue
            ppl = math.exp(min(20.0, value))
            parts.append(f"{key} value: {value:.6E} | {key} PPL: {ppl:.6E}")
            if self.writer is not None:
                self._scalars(f"lm-loss-validation/{key} {split}", value, state)
                if self.config.logging.log_validation_ppl_to_tensorboard:
                    self._scalars(f"lm-loss-validation/{key} {split} ppl", ppl, state)
        where = when or f"iteration {state.iteration}"
        line = f" {split} loss at {where} | " + " | ".join(parts)
        logger.info("-" * len(line) + "\n" + line + "\n" + "-" * len(line))

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def now() -> float:
    """Monotonic seconds, synchronising the accelerator first so step times are real."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
