"""Upstream's twelve optimizer-state statistics (``--log-optimizer-states-to-tensorboard``), correct under ZeRO.

L1 norm, L2 norm and largest absolute value of Adam's momentum (``exp_avg``), variance (``exp_avg_sq``), the
variance's square root, and the fp32 master weights, over the whole model; Megatron-DeepSpeed's series names
(``optimizer/momentum_l2``, ...).

Under ZeRO 1-3 (and DeepSpeed's bf16 optimizer) every data-parallel rank holds a disjoint flat partition of the
fp32 master weights and their Adam states, padded with zeros (which changes no L1, L2 or abs-max). Each rank takes
its shard's statistics and one all-reduce of 8 sums (SUM) and one of 4 maxima (MAX) gives the model's: no rank ever
gathers a full parameter or state. Without partitioning (fp32/fp16 ZeRO-0) every rank holds everything and nothing
is communicated. The call is collective whenever states are partitioned: every rank must make it.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

SERIES = ("variance_l2", "variance_sqrt_l2", "momentum_l2", "weight_l2",
          "variance_l1", "variance_sqrt_l1", "momentum_l1", "weight_l1",
          "variance_abs_max", "variance_sqrt_abs_max", "momentum_abs_max", "weight_abs_max")
"""Upstream's names, written as ``optimizer/<name>`` (vs iterations) and ``optimizer/<name> vs tokens``."""

_CHUNK = 1 << 24
"""Elements per piece: the temporaries (abs, square root) of a huge flat ZeRO partition stay bounded."""
_KINDS = ("variance", "variance_sqrt", "momentum", "weight")


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer holding the states: DeepSpeed's ZeRO/bf16/fp16 wrappers keep it as ``.optimizer``."""
    seen = 0
    while optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer) and seen < 4:
        optimizer = getattr(optimizer, "optimizer", None)
        seen += 1
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def states_are_partitioned(engine: Any) -> bool:
    """True when each data-parallel rank holds only its shard of the master weights and optimizer states."""
    stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else 0
    return stage > 0 or type(getattr(engine, "optimizer", None)).__name__ == "BF16_Optimizer"


def _master_weights_and_states(opt: torch.optim.Optimizer) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(master weight, its state) pairs: the param groups' tensors and the state's keys (ZeRO-3 empties the
    groups between steps and keeps its fp32 partitions only as state keys), each once."""
    pairs: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            pairs.setdefault(id(p), (p, opt.state.get(p, {})))
    for p, st in opt.state.items():
        if isinstance(p, torch.Tensor):
            pairs.setdefault(id(p), (p, st))
    return list(pairs.values())


def _pieces(t: torch.Tensor) -> Iterable[torch.Tensor]:
    flat = t.detach().reshape(-1)
    return flat.split(_CHUNK) if flat.numel() > _CHUNK else (flat,)


def _accumulate(sums: torch.Tensor, maxima: torch.Tensor, slot: int, t: torch.Tensor, sqrt: bool = False) -> None:
    """Add |t|_1 and |t|_2^2 into sums[slot], sums[4 + slot]; max |t| into maxima[slot]."""
    for piece in _pieces(t):
        x = piece.float()
        if sqrt:
            x = x.clamp_min(0).sqrt()
        x = x.abs()
        sums[4 + slot] += x.sum(dtype=torch.float64).to(sums.device)
        sums[slot] += x.double().pow(2).sum().to(sums.device)
        if x.numel():
            maxima[slot] = torch.maximum(maxima[slot], x.max().double().to(maxima.device))


def optimizer_state_stats(engine: Any) -> dict[str, float] | None:
    """The twelve statistics over the whole model (see the module docstring); None without an optimizer.

    Adam moments that the optimizer does not keep (e.g. SGD) are left out: only the ``weight_*`` entries are
    returned then. Collective when states are partitioned (ZeRO >= 1, bf16 optimizer) and world size > 1.
    """
    opt = inner_optimizer(getattr(engine, "optimizer", None))
    if opt is None:
        return None
    from deepspeed.accelerator import get_accelerator

    device = torch.device(get_accelerator().current_device_name())  # sums stay there: one transfer at the end
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    reduce = distributed and torch.distributed.get_world_size() > 1 and states_are_partitioned(engine)
    # slots 0..3: variance, variance_sqrt, momentum, weight; sums[0:4] = squared L2, sums[4:8] = L1
    sums = torch.zeros(8, dtype=torch.float64, device=device)
    maxima = torch.zeros(4, dtype=torch.float64, device=device)
    has_moments = torch.zeros(1, dtype=torch.float64, device=device)
    for weight, st in _master_weights_and_states(opt):
        _accumulate(sums, maxima, 3, weight)
        if "exp_avg" in st and "exp_avg_sq" in st:
            has_moments += 1
            _accumulate(sums, maxima, 0, st["exp_avg_sq"])
            _accumulate(sums, maxima, 1, st["exp_avg_sq"], sqrt=True)
            _accumulate(sums, maxima, 2, st["exp_avg"])
    if reduce:
        torch.distributed.all_reduce(sums)
        torch.distributed.all_reduce(has_moments)
        torch.distributed.all_reduce(maxima, op=torch.distributed.ReduceOp.MAX)
    s, m = sums.cpu().tolist(), maxima.cpu().tolist()
    out: dict[str, float] = {}
    for slot, kind in enumerate(_KINDS):
        if kind != "weight" and not float(has_moments.item()):
            continue
        out[f"{kind}_l2"] = math.sqrt(s[slot])
        out[f"{kind}_l1"] = s[4 + slot]
        out[f"{kind}_abs_max"] = m[slot]
    return {name: out[name] for name in SERIES if name in out}
