"""Process setup: launcher env defaults, torch.distributed through DeepSpeed, seeds, rank-0 logging."""
from __future__ import annotations

import logging
import os
import random
import socket
import sys
from datetime import timedelta

import numpy as np
import torch

logger = logging.getLogger("megatron")


def set_launcher_env_defaults() -> None:
    """Make a plain `python pretrain_gpt.py` a world of one: RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* if absent."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:  # a free port, so concurrent single-process runs do not collide
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


def world_size_from_env() -> int:
    """WORLD_SIZE set by the launcher (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    """RANK set by the launcher (0 without one)."""
    return int(os.environ.get("RANK", "0"))


def initialize_distributed(backend: str | None, timeout_minutes: int) -> None:
    """Start torch.distributed via deepspeed.init_distributed (gloo on CPU); reuses an existing process group."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    if backend is None or (backend == "nccl" and accel.device_name() == "cpu"):
        if backend == "nccl":
            logger.warning("--distributed-backend nccl needs CUDA; using the accelerator's backend instead")
        backend = accel.communication_backend_name()
    if accel.device_name() != "cpu":
        accel.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                               timeout=timedelta(minutes=timeout_minutes))


def set_random_seed(seed: int, rank: int) -> None:
    """Seed torch/numpy with `seed` (same on all data-parallel ranks, as Megatron) and python with seed + rank."""
    random.seed(seed + rank)  # random-LTD wants per-rank python randomness (spec §5.4)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class _RankZeroFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


class _StdoutHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.stdout`` is when a record is emitted (not when it was built),
    so a redirected or replaced stdout (pytest capture, a caller's redirect_stdout) never gets a closed stream."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property always reads sys.stdout
        pass


def setup_logging(rank: int, level: int = logging.INFO) -> None:
    """Send `megatron.*` logs to stdout from rank 0 only (warnings from every rank); quieten DeepSpeed."""
    root = logging.getLogger("megatron")
    root.setLevel(level)
    if not any(getattr(h, "_megatron", False) for h in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._megatron = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    for handler in root.handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, _RankZeroFilter)]
        handler.addFilter(_RankZeroFilter(rank))
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
