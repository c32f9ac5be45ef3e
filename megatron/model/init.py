"""Parameter initialisation that also works on parameters partitioned by ``deepspeed.zero.Init`` (ZeRO-3).

Under ``zero.Init`` DeepSpeed partitions a module's parameters as soon as that module's own ``__init__`` returns, so
a parent that builds an ``nn.Linear`` and then calls ``nn.init.normal_(linear.weight)`` would write into an empty
placeholder and the Megatron init would be lost without a word. These helpers gather such a parameter for the
write (rank 0's values are kept and re-partitioned) and are the plain ``nn.init`` call otherwise, consuming the
random stream exactly as before.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def _writable(param: torch.Tensor) -> Iterator[None]:
    if not hasattr(param, "ds_id"):  # an ordinary parameter
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
        yield


def normal_(param: torch.Tensor, std: float) -> None:
    """``param ~ normal(0, std)``."""
    with _writable(param), torch.no_grad():
        nn.init.normal_(param, mean=0.0, std=std)


def zeros_(param: torch.Tensor) -> None:
    """``param = 0``."""
    with _writable(param), torch.no_grad():
        nn.init.zeros_(param)
