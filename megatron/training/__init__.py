"""Training on the DeepSpeed engine: pretrain(), the loop, TrainState, checkpointing, logging.

Import-light: ``from megatron.training import pretrain`` loads the orchestration lazily, so modules such as
``megatron.training.ds_config`` can be imported by the config bridge without pulling in DeepSpeed.
"""
from __future__ import annotations

from typing import Any

__all__ = ["pretrain", "run_cli", "TrainState", "UsageError"]


def __getattr__(name: str) -> Any:
    if name in ("pretrain", "run_cli", "UsageError"):
        from megatron.training import orchestration

        return getattr(orchestration, name)
    if name == "TrainState":
        from megatron.training.state import TrainState

        return TrainState
    raise AttributeError(f"module 'megatron.training' has no attribute {name!r}")
