"""Small collectives on the right device: what the curriculum sampler, the BERT pad trim and the training loop's
stop agreement hand to ``torch.distributed``.

A process group only moves tensors of the device types its backend serves: gloo takes CPU tensors, NCCL only
CUDA tensors ("No backend type associated with device type cpu" otherwise). :func:`collective_device` picks
the device for a group — CPU under gloo (or a mixed group with a CPU backend, ``"cpu:gloo,cuda:nccl"``),
the accelerator's current device otherwise (DeepSpeed's ``get_accelerator().current_device_name()``, which is
``cpu`` for its CPU accelerator; ``torch.cuda.current_device()`` when DeepSpeed is not installed).

The helpers take and return plain Python numbers, so callers never see the device: one tiny tensor is built
on the collective's device, reduced, and read back.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["accelerator_device", "all_reduce_ints", "all_reduce_max", "collective_device", "is_distributed"]


def is_distributed(group: Any = None) -> bool:
    """True when torch.distributed is initialised and ``group`` (default: the world) has more than one rank."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def accelerator_device() -> torch.device:
    """The accelerator's current device (DeepSpeed's view; torch's CUDA device without DeepSpeed; else CPU)."""
    try:
        from deepspeed.accelerator import get_accelerator
    except ImportError:
        get_accelerator = None
    if get_accelerator is not None:
        return torch.device(get_accelerator().current_device_name())
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def collective_device(group: Any = None) -> torch.device:
    """The device a tensor must be on for a collective over ``group`` (torch.distributed must be initialised)."""
    backend = str(torch.distributed.get_backend(group)).lower()
    if backend in ("gloo", "mpi") or "cpu:" in backend:  # the group serves CPU tensors
        return torch.device("cpu")
    return accelerator_device()


def all_reduce_ints(values: Sequence[int], op: Any = None, group: Any = None) -> list[int]:
    """All-reduce int64 ``values`` over ``group`` (``op`` default SUM) on the collective's device; Python ints back.

    Without an initialised process group the values come back unchanged.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return [int(v) for v in values]
    tensor = torch.tensor([int(v) for v in values], dtype=torch.int64, device=collective_device(group))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op is None else op, group=group)
    return [int(v) for v in tensor.tolist()]


def all_reduce_max(value: int, group: Any = None) -> int:
    """The largest of every rank's integer ``value`` (no collective on a single rank)."""
    if not is_distributed(group):
        return int(value)
    return all_reduce_ints([value], torch.distributed.ReduceOp.MAX, group)[0]
