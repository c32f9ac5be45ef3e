"""--log-optimizer-states-to-tensorboard: upstream's twelve optimizer/* series, exact for the whole model, and the
same when ZeRO-3 partitions the states over 2 ranks (shard statistics all-reduced)."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from conftest import REPO, subprocess_env
from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC
from megatron.training import training_log
from megatron.training.optimizer_stats import SERIES

FLAGS = dict(train_iters=3, micro_batch_size=2, global_batch_size=8, log_optimizer_states_to_tensorboard=True)


def upstream_formula(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Megatron-DeepSpeed's training_log loop over param groups (full, unpartitioned states), in float64."""
    sq = {"variance": 0.0, "variance_sqrt": 0.0, "momentum": 0.0, "weight": 0.0}
    l1, mx = dict(sq), dict(sq)
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state[p]
            v, m = st["exp_avg_sq"].double(), st["exp_avg"].double()
            for kind, t in (("variance", v), ("variance_sqrt", v.sqrt()), ("momentum", m), ("weight", p.double())):
                sq[kind] += float(torch.norm(t)) ** 2
                l1[kind] += float(torch.norm(t, p=1))
                mx[kind] = max(mx[kind], float(t.abs().max()))
    out = {f"{k}_l2": math.sqrt(v) for k, v in sq.items()}
    out.update({f"{k}_l1": v for k, v in l1.items()})
    out.update({f"{k}_abs_max": v for k, v in mx.items()})
    return out


def optimizer_series(tb) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"optimizer/{n}" for n in SERIES} | {f"optimizer/{n} vs tokens" for n in SERIES} <= tags, sorted(tags)
    return {n: [e.value for e in acc.Scalars(f"optimizer/{n}")] for n in SERIES}


@pytest.fixture(scope="module")
def zero0(gpt_data_prefix, tmp_path_factory):
    """1 rank, ZeRO-0 fp32 (the optimizer holds every state): the series and the upstream formula at each step."""
    from conftest import gpt_argv

    tb = tmp_path_factory.mktemp("opt_stats") / "tb"
    reference: list[dict[str, float]] = []
    real = training_log.TrainingLogger.optimizer_states

    def spy(self, state, engine):
        reference.append(upstream_formula(engine.optimizer))
        real(self, state, engine)

    training_log.TrainingLogger.optimizer_states = spy
    try:
        pretrain_from_argv(GPT_SPEC, gpt_argv(gpt_data_prefix, tensorboard_dir=tb, **FLAGS))
    finally:
        training_log.TrainingLogger.optimizer_states = real
    return optimizer_series(tb), reference


def test_series_equal_upstreams_formula(zero0):
    series, reference = zero0
    assert len(reference) == FLAGS["train_iters"]
    for name in SERIES:
        assert series[name] == pytest.approx([r[name] for r in reference], rel=1e-5), name


def test_two_rank_zero3_equals_one_rank_zero0(zero0, gpt_data_prefix, tmp_path):
    from conftest import gpt_argv

    tb = tmp_path / "tb"
    argv = gpt_argv(gpt_data_prefix, tensorboard_dir=tb, zero_stage=3, **FLAGS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "pretrain_gpt.py"), *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded, (full, _) = optimizer_series(tb), zero0
    for name in SERIES:  # each rank held half of every state: the all-reduced shard statistics are the model's
        assert sharded[name] == pytest.approx(full[name], rel=2e-3), (name, sharded[name], full[name])
