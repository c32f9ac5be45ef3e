"""RNG states of python, numpy, torch (and CUDA) as checkpoint-safe values, plus a fork for evaluation.

CUDA: only the current device's generator is saved and restored (each rank drives one device), so a resume with
another number of visible devices or another rank-to-device mapping restores every rank's own stream. Checkpoints
written before this kept a list with one state per visible device: the entry of the current device is restored
when the list has one, else the CUDA stream is left as seeded (with a warning).
"""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Iterator

import numpy as np
import torch

logger = logging.getLogger("megatron.training")


def get_rng_state() -> dict[str, Any]:
    """Current RNG states as tensors/ints/lists only (loadable with torch.load(weights_only=True))."""
    py_version, py_state, py_gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "random": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's generator only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by ``get_rng_state``."""
    py = state["random"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], np.asarray(nps["keys"].numpy(), dtype=np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        _set_cuda_rng_state(state["cuda"])


def _set_cuda_rng_state(saved: Any) -> None:
    """The current device's CUDA generator from a saved state (a tensor; or an old per-visible-device list)."""
    if isinstance(saved, torch.Tensor):
        torch.cuda.set_rng_state(saved)
        return
    device = torch.cuda.current_device()
    if isinstance(saved, (list, tuple)) and device < len(saved):
        torch.cuda.set_rng_state(saved[device])
        return
    count = len(saved) if isinstance(saved, (list, tuple)) else 0
    logger.warning("checkpoint holds CUDA RNG states of %d devices and none for device %d: its CUDA RNG stream "
                   "is not restored (dropout draws differ from an uninterrupted run)", count, device)


@contextlib.contextmanager
def fork_rng() -> Iterator[None]:
    """Run a block (e.g. evaluation) without disturbing the training RNG streams."""
    saved = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
