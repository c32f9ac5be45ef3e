"""Process setup: launcher env (``megatron.training.launcher``), torch.distributed through DeepSpeed, seeds,
rank-0 logging."""
from __future__ import annotations

import logging
import os
import random
import sys
from datetime import timedelta
from typing import Any

import numpy as np
import torch

from megatron.config import ConfigError, RunConfig

logger = logging.getLogger("megatron")


def set_launcher_env_defaults() -> str:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from the launcher (torchrun/deepspeed, MPI, SLURM srun) or a world of one.

    Returns the launcher's name; ConfigError for a multi-process launch whose ranks cannot be determined
    (``megatron.training.launcher``).
    """
    from megatron.training.launcher import resolve_launch_env

    return resolve_launch_env()


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
    set_launcher_env_defaults()  # idempotent; fills RANK/WORLD_SIZE/... for callers that did not
    if accel.device_name() != "cpu":
        local_rank, count = int(os.environ["LOCAL_RANK"]), accel.device_count()
        # srun --gpus-per-task / per-rank CUDA_VISIBLE_DEVICES: each process sees one device, whatever its local rank
        if count > 1 and local_rank >= count:
            raise ConfigError(f"local rank {local_rank} but this process sees only {count} {accel.device_name()} "
                              "devices: start at most one process per device on each node (or give each process "
                              "its own device, e.g. srun --gpus-per-task=1 or CUDA_VISIBLE_DEVICES per rank)")
        accel.set_device(local_rank % count if count > 0 else local_rank)
    # The launch variables are all set now (DeepSpeed's MPI discovery already ran if it was needed), so DeepSpeed's
    # own discovery would find nothing to do.
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                               timeout=timedelta(minutes=timeout_minutes))


def grad_accum_dtype(ds_config: dict[str, Any]) -> str | None:
    """``data_types.grad_accum_dtype`` of the DeepSpeed dict ("fp32", "bf16", "fp16"), None when not given."""
    block = ds_config.get("data_types")
    value = block.get("grad_accum_dtype") if isinstance(block, dict) else None
    return {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}.get(
        str(value).lower(), str(value).lower()) if value is not None else None


def check_bf16_gradient_accumulation(config: RunConfig) -> None:
    """bf16 with gradient accumulation: warn (one line) where DeepSpeed sums the micro-batch gradients in bf16.

    Only ZeRO-1 with ``data_types.grad_accum_dtype: fp32`` accumulates bf16 gradients in fp32 (DeepSpeed's
    BF16_Optimizer). ZeRO-0 cannot (DeepSpeed refuses that mix: a ConfigError here instead of its traceback).
    """
    t = config.training
    if t.precision != "bf16":
        return
    accum = grad_accum_dtype(config.deepspeed)
    if t.zero_stage == 0 and accum == "fp32":
        raise ConfigError("data_types.grad_accum_dtype fp32 with bf16 needs ZeRO stage 1 (--zero-stage 1): DeepSpeed "
                          "has no fp32 gradient accumulation for bf16 at ZeRO-0")
    if t.num_micro_batches <= 1 or (t.zero_stage == 1 and accum == "fp32"):
        return
    if t.zero_stage == 0:
        logger.warning("bf16 at ZeRO-0 sums the gradients of the %d micro-batches of a step in bf16 (precision is "
                       "lost); use ZeRO-1 (--zero-stage 1) with \"data_types\": {\"grad_accum_dtype\": \"fp32\"} in "
                       "--deepspeed_config", t.num_micro_batches)
    elif t.zero_stage == 1:
        logger.warning("bf16 at ZeRO-1 sums the gradients of the %d micro-batches of a step in bf16 (precision is "
                       "lost); add \"data_types\": {\"grad_accum_dtype\": \"fp32\"} to --deepspeed_config",
                       t.num_micro_batches)


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
