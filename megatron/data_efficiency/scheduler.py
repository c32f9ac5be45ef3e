"""Pacing functions (spec §3.2): a metric's difficulty as a function of the curriculum step.

``fixed_root``:  d = floor((s / total) ** (1 / root_degree) * (max - min) + min), rounded DOWN to a multiple of
                 ``difficulty_step`` in absolute terms (not relative to min), then capped at max.
``fixed_linear``: fixed_root with root_degree 1.
``fixed_discrete``: difficulty[i] for the first i with s <= max_step[i]; difficulty[-1] after max_step[-1].
``custom``:      a user function ``f(step) -> int`` set with ``set_custom_get_difficulty``.

:meth:`CurriculumScheduler.update_difficulty` follows DeepSpeed exactly: it recomputes only while the current
difficulty is below ``max_difficulty``. Caveat (kept on purpose, for compatibility): a non-monotone discrete or
custom schedule freezes for good the first time it reaches max.
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Callable

import torch

from .config import SEQLEN_METRICS, ScheduleConfig

logger = logging.getLogger(__name__)

__all__ = ["CurriculumScheduler", "ScheduleFn", "SCHEDULES", "fixed_root_difficulty", "fixed_discrete_difficulty"]

ScheduleFn = Callable[[int], int]


def fixed_root_difficulty(step: int, cfg: ScheduleConfig) -> int:
    """Difficulty of the fixed_root (and fixed_linear, root 1) schedule at ``step``."""
    assert cfg.total_curriculum_step is not None
    root = cfg.root_degree if cfg.schedule_type == "fixed_root" else 1.0
    frac = (float(step) / cfg.total_curriculum_step) ** (1.0 / root)
    d = math.floor(frac * (cfg.max_difficulty - cfg.min_difficulty) + cfg.min_difficulty)
    d -= d % cfg.difficulty_step
    return min(d, cfg.max_difficulty)


def fixed_discrete_difficulty(step: int, cfg: ScheduleConfig) -> int:
    """Difficulty of the fixed_discrete schedule at ``step``."""
    for level, last in zip(cfg.difficulty, cfg.max_step):
        if step <= last:
            return level
    return cfg.difficulty[-1]


SCHEDULES: dict[str, Callable[[int, ScheduleConfig], int]] = {
    "fixed_linear": fixed_root_difficulty,
    "fixed_root": fixed_root_difficulty,
    "fixed_discrete": fixed_discrete_difficulty,
}
"""Built-in pacing functions by ``schedule_type`` (``custom`` is set per scheduler)."""


class CurriculumScheduler:
    """The pacing state of one metric: current difficulty, updated from the curriculum step."""

    def __init__(self, config: ScheduleConfig, name: str = "curriculum") -> None:
        self.config = config
        self.name = name
        self.current_difficulty: int = config.min_difficulty
        self._custom: ScheduleFn | None = None
        if (config.schedule_type in ("fixed_linear", "fixed_root") and config.difficulty_step % 8
                and name in (*SEQLEN_METRICS, "seqlen") and torch.cuda.is_available()):
            logger.warning("curriculum metric %s: difficulty_step %d is not a multiple of 8; sequence lengths that are "
                           "multiples of 8 run faster on Tensor Cores", name, config.difficulty_step)

    @property
    def min_difficulty(self) -> int:
        """The configured minimum."""
        return self.config.min_difficulty

    @property
    def max_difficulty(self) -> int:
        """The configured maximum."""
        return self.config.max_difficulty

    def set_custom_get_difficulty(self, fn: ScheduleFn) -> None:
        """Install the user's schedule ``fn(step) -> difficulty`` (only for schedule_type custom)."""
        if self.config.schedule_type != "custom":
            raise ValueError(f"curriculum metric {self.name}: a custom schedule function was given but its "
                             f"schedule_type is {self.config.schedule_type}; set schedule_type to custom")
        if not callable(fn):
            raise ValueError(f"curriculum metric {self.name}: the custom schedule must be callable, got {fn!r}")
        self._custom = fn

    def get_difficulty(self, step: int) -> int:
        """The schedule's difficulty at ``step`` (pure: does not change the state)."""
        if self.config.schedule_type == "custom":
            if self._custom is None:
                raise ValueError(f"curriculum metric {self.name}: schedule_type is custom but no function was set; "
                                 f"call set_custom_curriculum_learning_schedule({{'{self.name}': fn}}) first")
            value = self._custom(step)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                if isinstance(value, numbers.Real) and float(value).is_integer():
                    return int(value)
                raise ValueError(f"curriculum metric {self.name}: the custom schedule returned {value!r} at step "
                                 f"{step}; expected an integer difficulty")
            return int(value)
        return SCHEDULES[self.config.schedule_type](step, self.config)

    def update_difficulty(self, step: int) -> int:
        """Advance to ``step`` and return the current difficulty (frozen once it reaches max, as DeepSpeed)."""
        if self.current_difficulty < self.config.max_difficulty:
            self.current_difficulty = self.get_difficulty(step)
        return self.current_difficulty

    def state_dict(self) -> dict[str, Any]:
        """Serializable state (plain Python types)."""
        return {"current_difficulty": int(self.current_difficulty)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.current_difficulty = int(state["current_difficulty"])
