"""The one seam between the training loop and data efficiency (curriculum learning, random-LTD).

The loop calls ``post_process`` on every micro-batch and ``actual_seq_length`` once per step; checkpoints
carry ``state_dict()``; the log line appends ``log_fields()``. ``NoDataEfficiency`` is the default. The
features themselves live in megatron/data_efficiency; ``build_data_efficiency`` is where they get wired.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import torch

from megatron.config import ConfigError, RunConfig
from megatron.training.state import TrainState

Batch = dict[str, torch.Tensor]
DataPostProcess = Callable[[Batch, Mapping[str, Any]], Batch]
"""Entry-point hook ``data_post_process(batch, sampler_state) -> batch``; sampler_state holds
``current_difficulties`` ({metric: value}) as in DeepSpeed's data sampler state."""


class DataEfficiency(Protocol):
    """What the training loop needs from a data-efficiency implementation."""

    def post_process(self, batch: Batch, state: TrainState) -> Batch:
        """Reshape/truncate one training micro-batch (called on every micro-batch)."""
        ...

    def actual_seq_length(self, batch: Batch, state: TrainState) -> tuple[int, int]:
        """(tokens consumed by this step over all ranks, effective sequence length); once per step."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from ``state_dict()``."""
        ...

    def log_fields(self) -> dict[str, float]:
        """Extra `name: value` fields for the training log line and TensorBoard."""
        ...


class NoDataEfficiency:
    """Default: batches pass through the entry point's hook with no difficulties; tokens = samples x seq."""

    def __init__(self, seq_length: int, global_batch_size: int,
                 data_post_process: DataPostProcess | None = None) -> None:
        self.seq_length = seq_length
        self.global_batch_size = global_batch_size
        self.data_post_process = data_post_process

    def post_process(self, batch: Batch, state: TrainState) -> Batch:
        """Apply the entry point's hook with an empty difficulty state (identity for GPT)."""
        if self.data_post_process is None:
            return batch
        return self.data_post_process(batch, {"current_difficulties": {}})

    def actual_seq_length(self, batch: Batch, state: TrainState) -> tuple[int, int]:
        """Every sample is a full-length sequence."""
        return self.global_batch_size * self.seq_length, self.seq_length

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore."""

    def log_fields(self) -> dict[str, float]:
        """No extra fields."""
        return {}


def build_data_efficiency(config: RunConfig, data_post_process: DataPostProcess | None = None) -> DataEfficiency:
    """The data-efficiency object for this run (stops with a clear message for features not wired yet)."""
    de = config.data_efficiency
    if de.any_enabled:
        switched = [name for name, on in (("--data-efficiency-curriculum-learning", de.curriculum_learning),
                                          ("--random-ltd", de.random_ltd),
                                          ("legacy curriculum_learning JSON block", de.legacy_curriculum_enabled))
                    if on]
        raise ConfigError(f"{', '.join(switched)}: accepted and validated, but not wired into the training loop "
                          "yet; run without it")
    return NoDataEfficiency(config.training.seq_length, config.training.global_batch_size, data_post_process)
