"""optimizer_state_stats: upstream's twelve statistics from whichever torch optimizer holds the states."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from megatron.training.optimizer_stats import SERIES, inner_optimizer, optimizer_state_stats


def stepped(opt_class, **kwargs) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    opt = opt_class(params, lr=0.1, **kwargs)
    for _ in range(2):
        opt.zero_grad()
        sum((p ** 2).sum() * (i + 1) for i, p in enumerate(params)).backward()
        opt.step()
    return opt, params


def engine(opt, stage: int = 0) -> SimpleNamespace:
    return SimpleNamespace(optimizer=opt, zero_optimization_stage=lambda: stage)


def test_adam_statistics_are_the_whole_model_norms():
    opt, params = stepped(torch.optim.AdamW)
    stats = optimizer_state_stats(engine(opt))
    assert list(stats) == list(SERIES)
    v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in params]).double()
    m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in params]).double()
    w = torch.cat([p.detach().reshape(-1) for p in params]).double()
    for kind, t in (("variance", v), ("variance_sqrt", v.sqrt()), ("momentum", m), ("weight", w)):
        assert stats[f"{kind}_l2"] == pytest.approx(float(t.norm()), rel=1e-6)
        assert stats[f"{kind}_l1"] == pytest.approx(float(t.abs().sum()), rel=1e-6)
        assert stats[f"{kind}_abs_max"] == pytest.approx(float(t.abs().max()), rel=1e-6)
    assert stats["variance_sqrt_l2"] == pytest.approx(math.sqrt(stats["variance_l1"]), rel=1e-6)


def test_states_kept_only_as_state_keys_are_counted():
    """ZeRO-3 empties its inner optimizer's param groups between steps; the fp32 partitions stay state keys."""
    opt, params = stepped(torch.optim.Adam)
    full = optimizer_state_stats(engine(opt))
    for group in opt.param_groups:
        group["params"] = []
    assert optimizer_state_stats(engine(opt)) == pytest.approx(full)


def test_wrapped_optimizer_and_sgd():
    opt, _ = stepped(torch.optim.SGD, momentum=0.9)
    wrapper = SimpleNamespace(optimizer=SimpleNamespace(optimizer=opt))  # DeepSpeed wrappers keep .optimizer
    assert inner_optimizer(wrapper) is opt
    stats = optimizer_state_stats(engine(wrapper))
    assert sorted(stats) == ["weight_abs_max", "weight_l1", "weight_l2"]  # SGD keeps no Adam moments
    assert optimizer_state_stats(engine(None)) is None
