"""Training on the DeepSpeed engine: pretrain(spec, config, tokenizer), the loop, TrainState, checkpointing, logging.

Import-light: names are loaded on first use, so importing a submodule does not pull in DeepSpeed. Nothing
here imports the CLI (``megatron.arguments`` / ``megatron.cli``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["pretrain", "ModelSpec", "TrainState", "UsageError"]


def __getattr__(name: str) -> Any:
    if name in ("pretrain", "UsageError"):
        from megatron.training import orchestration

        return getattr(orchestration, name)
    if name == "ModelSpec":
        from megatron.training.spec import ModelSpec

        return ModelSpec
    if name == "TrainState":
        from megatron.training.state import TrainState

        return TrainState
    raise AttributeError(f"module 'megatron.training' has no attribute {name!r}")
