"""Reserved-length schedule of random-LTD and its layer-token accounting (spec §5.2, §3.6).

``r(s)`` for ``s`` completed optimizer steps (``fixed_linear``, the only upstream type)::

    r = floor(s / require_steps * (max - min) + min)
    r = r - r % seq_per_step
    r = min(r, max)

computed here in exact integer arithmetic (upstream uses floats; both agree except where float rounding
would put a value a hair below an integer). Like upstream the value is frozen once it reaches ``max``.

Layer tokens — how ours differs from upstream
---------------------------------------------
Upstream adds ``global_batch × (r·n + max_value·(L − n))`` per optimizer step: it assumes every row has
``max_value`` tokens and that the n dropping layers really process r tokens, even when curriculum
learning has truncated the rows below r (then nothing is dropped). Here a step adds what the layers
*really* process::

    rows × (S·(L − n) + min(r, S)·n)

with ``rows`` the number of sequences in the global batch and ``S`` their actual length (after any
curriculum truncation/reshape). The matching effective length (spec §3.6) is
``actual = (S·(L − n) + r·n) // L`` when ``r < S``, else ``S``.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from megatron.data_efficiency.accounting import actual_seq_length
from megatron.data_efficiency.random_ltd_config import RandomLTDScheduleConfig

logger = logging.getLogger(__name__)

STATE_KEYS = ("consumed_layer_tokens", "current_steps", "current_value", "min_value", "max_value")


def reserved_length_at(step: int, schedule: RandomLTDScheduleConfig) -> int:
    """Reserved length r after ``step`` completed optimizer steps (``fixed_linear``)."""
    if step < 0:
        raise ValueError(f"completed optimizer steps must be >= 0, got {step}")
    span = schedule.max_value - schedule.min_value
    value = step * span // schedule.require_steps + schedule.min_value
    value -= value % schedule.seq_per_step
    return min(value, schedule.max_value)


def ltd_actual_seq_length(seq_length: int, reserved_length: int, num_layers: int, num_ltd_layers: int) -> int:
    """Effective sequence length of spec §3.6: ``(S(L-n) + r n) // L`` when r < S, else S."""
    return actual_seq_length(
        seq_length, reserved_length=reserved_length, num_layers=num_layers, num_ltd_layers=num_ltd_layers
    )


def layer_tokens_per_row(seq_length: int, reserved_length: int, num_layers: int, num_ltd_layers: int) -> int:
    """Tokens processed by all L layers for one row of length S: ``S(L-n) + min(r, S) n``."""
    return seq_length * (num_layers - num_ltd_layers) + min(reserved_length, seq_length) * num_ltd_layers


class RandomLTDScheduler:
    """Reserved length r on completed optimizer steps, plus the consumed layer-token counter."""

    def __init__(self, schedule: RandomLTDScheduleConfig, *, num_layers: int, num_ltd_layers: int) -> None:
        if not 0 < num_ltd_layers <= num_layers:
            raise ValueError(f"expected 0 < num_ltd_layers <= num_layers, got {num_ltd_layers} and {num_layers}")
        self.schedule = schedule
        self.num_layers = num_layers
        self.num_ltd_layers = num_ltd_layers
        self.current_steps = 0
        self.current_value = reserved_length_at(0, schedule)
        self.consumed_layer_tokens = 0

    def value_at(self, step: int) -> int:
        """r for ``step`` completed optimizer steps (pure; no state change)."""
        return reserved_length_at(step, self.schedule)

    def update(self, completed_steps: int) -> int:
        """Move to ``completed_steps``; r changes only while below max (frozen at max, like upstream)."""
        self.current_steps = completed_steps
        if self.current_value < self.schedule.max_value:
            self.current_value = self.value_at(completed_steps)
        return self.current_value

    def layer_tokens(self, rows: int, seq_length: int) -> int:
        """Layer tokens processed by ``rows`` sequences of length ``seq_length`` at the current r."""
        return rows * layer_tokens_per_row(seq_length, self.current_value, self.num_layers, self.num_ltd_layers)

    def add_layer_tokens(self, rows: int, seq_length: int) -> int:
        """Count one step's layer tokens at the current r; returns the amount added."""
        added = self.layer_tokens(rows, seq_length)
        self.consumed_layer_tokens += added
        return added

    def actual_seq_length(self, seq_length: int) -> int:
        """Effective sequence length for rows of length ``seq_length`` at the current r (spec §3.6)."""
        return ltd_actual_seq_length(seq_length, self.current_value, self.num_layers, self.num_ltd_layers)

    def total_layer_tokens(self, train_iters: int, global_batch_size: int, seq_length: int) -> int:
        """Layer tokens a run of ``train_iters`` full-length steps will consume (e.g. for total_layer_tokens)."""
        total = 0
        for step in range(train_iters):
            r = self.value_at(step)
            total += global_batch_size * layer_tokens_per_row(seq_length, r, self.num_layers, self.num_ltd_layers)
        return total

    def state_dict(self) -> dict[str, int]:
        """Upstream's checkpoint keys (the schedule itself comes from the JSON, not the checkpoint)."""
        return {
            "consumed_layer_tokens": self.consumed_layer_tokens,
            "current_steps": self.current_steps,
            "current_value": self.current_value,
            "min_value": self.schedule.min_value,
            "max_value": self.schedule.max_value,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore counters; if the JSON's min/max changed since the save, r is recomputed from the JSON."""
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"random-LTD checkpoint state lacks {', '.join(missing)}; expected keys {STATE_KEYS}")
        self.consumed_layer_tokens = int(state["consumed_layer_tokens"])
        self.current_steps = int(state["current_steps"])
        self.current_value = int(state["current_value"])
        saved = (int(state["min_value"]), int(state["max_value"]))
        if saved != (self.schedule.min_value, self.schedule.max_value):
            logger.info(
                "random-LTD: checkpoint schedule min/max %s differs from the config %s; using the config",
                saved,
                (self.schedule.min_value, self.schedule.max_value),
            )
            self.current_value = self.value_at(self.current_steps)
