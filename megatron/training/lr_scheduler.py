"""Megatron's OptimizerParamScheduler: learning-rate warmup/decay and weight-decay increment.

"Steps" are SAMPLES: the training loop calls ``step(increment=global_batch_size,
token_num=consumed_train_tokens)`` once per optimizer step. Warmup is linear, by samples or
(``lr_warmup_tokens``) by tokens; decay (constant, linear, cosine, inverse-square-root) runs
by samples or (``lr_decay_tokens``) by tokens and ends at ``min_lr``. Every param group gets
``lr * group.get("lr_mult", 1)`` and ``weight_decay * group.get("wd_mult", 1)``; groups that
must not decay carry ``wd_mult = 0.0`` (the scheduler writes ``weight_decay`` in every group).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch

from megatron.config import LR_DECAY_STYLES, WD_INCR_STYLES, LRSchedulerError, check_lr_schedule

logger = logging.getLogger(__name__)

class OptimizerParamScheduler:
    """Sets lr and weight decay of every optimizer param group from samples/tokens consumed."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_lr: float,
        min_lr: float,
        lr_warmup_steps: float,
        lr_decay_steps: int,
        lr_decay_style: str,
        lr_warmup_tokens: int | None = None,
        lr_decay_tokens: int | None = None,
        start_wd: float = 0.0,
        end_wd: float = 0.0,
        wd_incr_steps: int | None = None,
        wd_incr_style: str = "constant",
        use_checkpoint_opt_param_scheduler: bool = True,
        override_opt_param_scheduler: bool = False,
    ) -> None:
        self.optimizer = optimizer
        self.max_lr = float(max_lr)
        self.min_lr = float(min_lr)
        self.lr_warmup_steps = lr_warmup_steps
        self.lr_decay_steps = lr_decay_steps
        self.lr_decay_style = lr_decay_style
        self.lr_warmup_tokens = lr_warmup_tokens
        self.lr_decay_tokens = lr_decay_tokens
        self.start_wd = float(start_wd)
        self.end_wd = float(end_wd)
        self.wd_incr_steps = wd_incr_steps
        self.wd_incr_style = wd_incr_style
        self.use_checkpoint_opt_param_scheduler = use_checkpoint_opt_param_scheduler
        self.override_opt_param_scheduler = override_opt_param_scheduler
        self.num_steps = 0
        self.num_tokens = 0
        # Step warmup + token decay: token count when warmup ended (Megatron stores it as lr_warmup_tokens).
        self._captured_warmup_tokens: int | None = None
        self._validate()
        self.step(0)

    def _validate(self) -> None:
        """Raise LRSchedulerError naming the flag for any inconsistent setting (``check_lr_schedule``)."""
        check_lr_schedule(max_lr=self.max_lr, min_lr=self.min_lr, lr_warmup_steps=self.lr_warmup_steps,
                          lr_decay_steps=self.lr_decay_steps, lr_decay_style=self.lr_decay_style,
                          lr_warmup_tokens=self.lr_warmup_tokens, lr_decay_tokens=self.lr_decay_tokens,
                          start_wd=self.start_wd, end_wd=self.end_wd, wd_incr_steps=self.wd_incr_steps,
                          wd_incr_style=self.wd_incr_style)

    @property
    def effective_warmup_tokens(self) -> int | None:
        """Token count where decay-by-tokens starts: the configured or the captured warmup tokens."""
        return self.lr_warmup_tokens if self.lr_warmup_tokens is not None else self._captured_warmup_tokens

    def get_wd(self) -> float:
        """Weight decay for the current step (constant, or linear/cosine increase to end_wd)."""
        if self.wd_incr_style == "constant" or self.wd_incr_steps is None or self.num_steps > self.wd_incr_steps:
            return self.end_wd
        ratio = self.num_steps / self.wd_incr_steps
        if self.wd_incr_style == "linear":
            coeff = ratio
        else:  # cosine
            coeff = 0.5 * (math.cos(math.pi * (1.0 - ratio)) + 1.0)
        return self.start_wd + coeff * (self.end_wd - self.start_wd)

    def get_lr(self) -> float:
        """Learning rate for the current number of samples/tokens consumed."""
        if self.lr_warmup_tokens is not None:
            if self.lr_warmup_tokens > 0 and self.num_tokens <= self.lr_warmup_tokens:
                return self.max_lr * self.num_tokens / self.lr_warmup_tokens
        elif self.lr_warmup_steps > 0 and self.num_steps <= self.lr_warmup_steps:
            return self.max_lr * self.num_steps / self.lr_warmup_steps

        if self.lr_decay_style == "constant":
            return self.max_lr
        if self.lr_decay_tokens is None:
            if self.num_steps > self.lr_decay_steps:
                return self.min_lr
        elif self.num_tokens > self.lr_decay_tokens:
            return self.min_lr

        if self.lr_decay_style == "inverse-square-root":
            if self.lr_warmup_tokens is not None:
                warmup, done = max(self.lr_warmup_tokens, 1), max(self.num_tokens, 1)
            else:
                warmup, done = max(self.lr_warmup_steps, 1), max(self.num_steps, 1)
            return max(self.min_lr, self.max_lr * math.sqrt(warmup / done))

        if self.lr_decay_tokens is None:
            progress = self.num_steps - self.lr_warmup_steps
            length = self.lr_decay_steps - self.lr_warmup_steps
        else:
            start = self.effective_warmup_tokens or 0
            progress = self.num_tokens - start
            length = self.lr_decay_tokens - start
        if length <= 0:
            return self.min_lr
        ratio = min(max(progress / length, 0.0), 1.0)
        if self.lr_decay_style == "linear":
            coeff = 1.0 - ratio
        else:  # cosine
            coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
        return self.min_lr + coeff * (self.max_lr - self.min_lr)

    def step(self, increment: int, token_num: int | None = None) -> None:
        """Advance by ``increment`` samples (and set the consumed-token count), then update every param group."""
        if token_num is not None:
            self.num_tokens = int(token_num)
        self.num_steps += increment
        if (
            self.lr_decay_tokens is not None
            and self.lr_warmup_tokens is None
            and self._captured_warmup_tokens is None
            and self.num_steps >= self.lr_warmup_steps
        ):
            self._captured_warmup_tokens = self.num_tokens
        lr, wd = self.get_lr(), self.get_wd()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
            group["weight_decay"] = wd * group.get("wd_mult", 1.0)

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state with Megatron's checkpoint keys."""
        return {
            "max_lr": self.max_lr,
            "lr_warmup_steps": self.lr_warmup_steps,
            "num_steps": self.num_steps,
            "lr_warmup_tokens": self.effective_warmup_tokens,
            "num_tokens": self.num_tokens,
            "lr_decay_style": self.lr_decay_style,
            "lr_decay_steps": self.lr_decay_steps,
            "min_lr": self.min_lr,
            "lr_decay_tokens": self.lr_decay_tokens,
            "start_wd": self.start_wd,
            "end_wd": self.end_wd,
            "wd_incr_style": self.wd_incr_style,
            "wd_incr_steps": self.wd_incr_steps,
        }

    def _check_and_set(self, current: Any, saved: Any, flag: str) -> Any:
        """Pick the command-line or checkpoint value of one setting, Megatron's rules."""
        if self.override_opt_param_scheduler:
            if not _same(current, saved):
                logger.info("overriding checkpoint %s %s with the command-line value %s", flag, saved, current)
            return current
        if not self.use_checkpoint_opt_param_scheduler and not _same(current, saved):
            raise LRSchedulerError(
                f"LR scheduler: {flag} is {current} on the command line but {saved} in the checkpoint; pass "
                f"--override-opt_param-scheduler to use the command-line value, or "
                f"--use-checkpoint-opt_param-scheduler to use the checkpoint's"
            )
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from a (possibly old-format) Megatron scheduler state, honouring override/use-checkpoint."""
        sd = state_dict
        self.max_lr = self._check_and_set(self.max_lr, _pick(sd, "max_lr", "start_lr"), "--lr")
        self.min_lr = self._check_and_set(self.min_lr, _pick(sd, "min_lr"), "--min-lr")
        self.lr_warmup_steps = self._check_and_set(
            self.lr_warmup_steps, _pick(sd, "lr_warmup_steps", "warmup_steps", "warmup_iter"), "LR warmup (samples)"
        )
        self.lr_decay_steps = self._check_and_set(
            self.lr_decay_steps, _pick(sd, "lr_decay_steps", "decay_steps", "end_iter"), "LR decay (samples)"
        )
        self.lr_decay_style = self._check_and_set(
            self.lr_decay_style, _pick(sd, "lr_decay_style", "decay_style"), "--lr-decay-style"
        )
        if "lr_decay_tokens" in sd or "decay_tokens" in sd:
            saved = _pick(sd, "lr_decay_tokens", "decay_tokens")
            self.lr_decay_tokens = self._check_and_set(self.lr_decay_tokens, saved, "--lr-decay-tokens")
        if "lr_warmup_tokens" in sd or "warmup_tokens" in sd:
            saved = _pick(sd, "lr_warmup_tokens", "warmup_tokens")
            if self.lr_warmup_tokens is not None:
                self.lr_warmup_tokens = self._check_and_set(self.lr_warmup_tokens, saved, "--lr-warmup-tokens")
            else:  # step warmup: the saved value is the token count captured at the end of warmup
                self._captured_warmup_tokens = saved
        if "start_wd" in sd:
            self.start_wd = self._check_and_set(self.start_wd, sd["start_wd"], "--start-weight-decay")
            self.end_wd = self._check_and_set(self.end_wd, sd["end_wd"], "--end-weight-decay")
            self.wd_incr_steps = self._check_and_set(
                self.wd_incr_steps, sd["wd_incr_steps"], "weight-decay increment (samples)"
            )
            self.wd_incr_style = self._check_and_set(
                self.wd_incr_style, sd["wd_incr_style"], "--weight-decay-incr-style"
            )
        self._validate()
        self.num_steps = int(_pick(sd, "num_steps", "num_iters"))
        self.step(0, token_num=int(sd.get("num_tokens", self.num_tokens)))


def _same(a: Any, b: Any) -> bool:
    """Equality that tolerates float round-off."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _pick(sd: dict[str, Any], *keys: str) -> Any:
    """First present key of a scheduler state dict (new name first, then old Megatron names)."""
    for key in keys:
        if key in sd:
            return sd[key]
    raise LRSchedulerError(f"LR scheduler checkpoint state has none of the keys {', '.join(keys)}")
