"""Device helpers shared by the benchmarks: ``--device``, synchronised timers and the matmul peak for MFU.

GPU work is asynchronous: a timer read right after launching a step measures the launch, not the step, so every
benchmark calls ``synchronize(device)`` before reading a clock. MFU is measured against the peak this device
reaches on a large matmul in the run's dtype, timed in the same process (fp32 on CUDA runs on TF32 tensor cores,
as training does once ``configure_matmul_precision`` is applied).
"""
from __future__ import annotations

import argparse
import os
import time

import torch


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """--device (default: cuda when there is a GPU, else cpu)."""
    parser.add_argument("--device", default=None,
                        help="cpu or cuda[:N] (default: cuda when a GPU is visible, else cpu)")


def pick_device(name: str | None, parser: argparse.ArgumentParser | None = None) -> torch.device:
    """--device as a torch.device; a usage error (exit 2) for a device that is not here.

    Call before DeepSpeed is imported: ``--device cpu`` on a GPU machine also sets DS_ACCELERATOR=cpu so that the
    engine runs on the CPU too; on CUDA the rank's device is made current and TF32 is enabled for fp32 matmuls.
    """
    def fail(message: str) -> None:
        if parser is not None:
            parser.error(message)
        raise SystemExit(f"error: {message}")

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        fail(f"--device {name!r}: expected cpu or cuda[:N]")
        raise  # unreachable
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"--device {name}: CUDA is not available here")
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
        from megatron.training.model_build import configure_matmul_precision

        configure_matmul_precision(device)
    elif device.type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    else:
        fail(f"--device {name!r}: expected cpu or cuda[:N]")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(dtype: torch.dtype, device: torch.device, n: int | None = None, repeats: int = 10) -> list[float]:
    """FLOP/s of ``repeats`` timed n x n matmuls (n: 8192 on a GPU, 2048 on the CPU), synchronised."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm up
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return [2 * n ** 3 / t for t in times]


def describe(device: torch.device) -> str:
    """'cpu (N threads)' or the GPU's name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
