"""Upstream's evaluation order (``--eval-advance``): each evaluation continues through the validation split.

By default every evaluation reads the same first ``--eval-iters`` global batches of the validation split, so the
numbers of a run are comparable with each other. Megatron-DeepSpeed instead keeps one validation iterator for the
whole run: evaluation k reads the batches after those of evaluation k - 1 (and the split is built large enough for
every evaluation). ``AdvancingEvalData`` gives ``loop.evaluate`` that order: its position (samples read so far,
over all ranks) lives in ``TrainState.counters`` and so is saved in checkpoints and restored by ``--load``; at the
end of the split it wraps around to the first sample.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from megatron.training.state import TrainState

CONSUMED_VALID_SAMPLES = "consumed_valid_samples"
"""``TrainState.counters`` key of the validation position (Megatron's ``args.consumed_valid_samples``)."""


class AdvancingEvalData:
    """An iterable over validation micro-batches that starts where the previous iteration stopped.

    ``build_loader(consumed_samples)`` returns this rank's DataLoader starting at that global sample position;
    ``samples_per_batch`` is how far one micro-batch moves it over all ranks (micro-batch x data-parallel size).
    """

    def __init__(self, build_loader: Callable[[int], Any], num_samples: int, state: TrainState,
                 samples_per_batch: int, key: str = CONSUMED_VALID_SAMPLES) -> None:
        if samples_per_batch < 1:
            raise ValueError(f"samples per micro-batch must be >= 1, got {samples_per_batch}")
        self.build_loader = build_loader
        self.samples_per_batch = samples_per_batch
        self.usable = num_samples - num_samples % samples_per_batch
        """Samples the loaders can serve (a short last block is dropped, as by the training sampler)."""
        self.state = state
        self.key = key

    @property
    def position(self) -> int:
        """Validation samples read so far in this run (over all ranks), modulo the usable split size."""
        pos = int(self.state.counters.get(self.key, 0))
        return pos % self.usable if self.usable else 0

    def __iter__(self) -> Iterator[Any]:
        if self.usable == 0:
            return
        while True:
            loader = self.build_loader(self.position)
            served = False
            for batch in loader:
                served = True
                self.state.counters[self.key] = (self.position + self.samples_per_batch) % self.usable
                yield batch
            if not served:
                return
            self.state.counters[self.key] = 0  # end of the split: wrap around
