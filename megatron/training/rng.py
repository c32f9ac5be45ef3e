"""RNG states of python, numpy, torch (and CUDA) as checkpoint-safe values, plus a fork for evaluation."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch


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
        state["cuda"] = torch.cuda.get_rng_state_all()
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
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def fork_rng() -> Iterator[None]:
    """Run a block (e.g. evaluation) without disturbing the training RNG streams."""
    saved = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
