"""TrainState: the run's counters, passed explicitly (never stored in the parsed args)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainState:
    """Progress of a training run; saved in every checkpoint and restored by --load."""

    iteration: int = 0
    """Completed optimizer steps."""
    consumed_train_samples: int = 0
    """Training samples drawn so far, over all data-parallel ranks."""
    consumed_train_tokens: int = 0
    """Training tokens consumed so far (compute-equivalent under random-LTD, spec §3.6)."""
    actual_seq_length: int = 0
    """Effective sequence length of the last step (curriculum / random-LTD corrected)."""
    skipped_iterations: int = 0
    """Steps whose update was skipped (fp16 overflow)."""
    counters: dict[str, float] = field(default_factory=dict)
    """Extra counters owned by data-efficiency features (e.g. consumed layer tokens)."""

    def state_dict(self) -> dict[str, Any]:
        """Plain-dict copy for checkpoints."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` output (unknown keys are ignored, missing keys keep their value)."""
        for key in ("iteration", "consumed_train_samples", "consumed_train_tokens", "actual_seq_length",
                    "skipped_iterations"):
            if key in state:
                setattr(self, key, int(state[key]))
        self.counters = dict(state.get("counters", self.counters))
