"""Every collective of the curriculum sampler, the BERT pad trim and the training loop's stop agreement hands
torch.distributed a tensor on the device its backend serves (issue 15, item 1): the accelerator's current device
under NCCL ("No backend type associated with device type cpu" otherwise), the CPU under gloo.

On CPU the backend and the accelerator are mocked: the process group claims NCCL and the accelerator claims a
device, and a mocked ``all_reduce`` records the device of every tensor it is handed. For the call sites the fake
accelerator's device is ``meta`` (tensors can be made there without a GPU; the mock then stops the caller, since
a meta tensor holds no values). With CUDA present, a real one-rank NCCL group runs the same call sites.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist

from megatron.data_efficiency import collectives
from megatron.data_efficiency.seqlen import bert_effective_seqlen

REPO = Path(__file__).resolve().parents[2]


class _Handed(Exception):
    """Raised by the mocked collective after recording a meta tensor (it cannot produce values)."""


@pytest.fixture
def fake_group(monkeypatch):
    """A 2-rank process group whose backend and accelerator device the test sets; records collective devices."""
    setting = SimpleNamespace(backend="nccl", device="meta", seen=[])
    import deepspeed.accelerator

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: setting.backend)
    accelerator = SimpleNamespace(current_device_name=lambda: setting.device)
    monkeypatch.setattr(deepspeed.accelerator, "get_accelerator", lambda: accelerator)

    def collective(tensor, *args, **kwargs):
        setting.seen.append(tensor.device)
        if tensor.device.type == "meta":
            raise _Handed
        return None  # every rank holds the same values: the reduction leaves them as they are

    monkeypatch.setattr(dist, "all_reduce", collective)
    monkeypatch.setattr(dist, "all_gather", collective)
    monkeypatch.setattr(dist, "all_gather_into_tensor", collective)
    return setting


def test_collective_device_follows_the_backend(fake_group):
    fake_group.device = "cuda:3"
    assert collectives.collective_device() == torch.device("cuda:3")
    fake_group.backend = "gloo"
    assert collectives.collective_device() == torch.device("cpu")
    fake_group.backend = "cpu:gloo,cuda:nccl"  # a group with a CPU backend beside NCCL takes CPU tensors
    assert collectives.collective_device() == torch.device("cpu")
    fake_group.backend = "ccl"  # any other backend: the accelerator's device (DeepSpeed's CPU accelerator: cpu)
    fake_group.device = "cpu"
    assert collectives.collective_device() == torch.device("cpu")


def _sampler():
    from megatron.data_efficiency.cluster import MetricIndex
    from megatron.data_efficiency.config import CurriculumLearningConfig, CurriculumMetricConfig, ScheduleConfig
    from megatron.data_efficiency.sampler import CurriculumSampler

    metric = CurriculumMetricConfig("voc", "value", "schedule_based",
                                    ScheduleConfig("fixed_linear", 1, 4, total_curriculum_step=4, difficulty_step=1),
                                    "idx", "metric")
    values = np.arange(64) % 5
    order = np.argsort(values, kind="stable")
    distinct, starts = np.unique(values[order], return_index=True)
    index = MetricIndex.from_rows(np.split(order, starts[1:]), distinct, "voc")
    return CurriculumSampler(CurriculumLearningConfig(True, None, (metric,)), 64, 2, data_parallel_size=2,
                             indexes={"voc": index})


def _call_sites():
    """Each call site that runs a collective, as a zero-argument callable."""
    from megatron.training.loop import _all_ranks_max

    sampler = _sampler()
    mask = torch.zeros(2, 16, dtype=torch.int64)
    mask[0, :5] = 1
    return {
        "curriculum sampler: ranks agree on the global batch": lambda: sampler.next_global_batch(),
        "BERT pad trim: data-parallel max length": lambda: bert_effective_seqlen(mask, 16),
        "signal stop: ranks agree on the stop step": lambda: _all_ranks_max(15),
    }


def test_every_collective_gets_the_accelerator_device_under_nccl(fake_group):
    for name, call in _call_sites().items():
        fake_group.seen.clear()
        with pytest.raises(_Handed):
            call()
        assert fake_group.seen == [torch.device("meta")], name


def test_every_collective_gets_a_cpu_tensor_under_gloo(fake_group):
    fake_group.backend = "gloo"
    results = {}
    for name, call in _call_sites().items():
        fake_group.seen.clear()
        results[name] = call()
        assert fake_group.seen == [torch.device("cpu")], name
    assert results["BERT pad trim: data-parallel max length"] == 8  # 5 rounded up to a multiple of 8
    assert results["signal stop: ranks agree on the stop step"] == 15


def test_helpers_without_a_process_group_run_no_collective(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert collectives.all_reduce_ints([3, -4]) == [3, -4]
    assert collectives.all_reduce_max(7) == 7
    assert not collectives.is_distributed()


GPU_SCRIPT = textwrap.dedent("""
    import os, sys, tempfile
    import numpy as np, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    torch.cuda.set_device(0)
    store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    from megatron.data_efficiency.collectives import all_reduce_ints, collective_device
    from megatron.data_efficiency.seqlen import bert_effective_seqlen
    sys.path.insert(0, os.path.join(sys.argv[1], "tests", "unit"))
    from test_collectives_device import _sampler
    assert collective_device().type == "cuda", collective_device()
    sampler = _sampler()
    sampler.group = dist.group.WORLD  # an explicit group: the check runs even on one rank
    assert len(sampler.next_global_batch()) == sampler.global_batch_size
    mask = torch.zeros(2, 16, dtype=torch.int64); mask[1, :9] = 1
    assert bert_effective_seqlen(mask, 16) == 16
    assert all_reduce_ints([5, -2], dist.ReduceOp.MAX) == [5, -2]
    dist.destroy_process_group()
    print("ok")
""")


@pytest.mark.skipif(not (torch.cuda.is_available() and dist.is_nccl_available()), reason="needs CUDA and NCCL")
def test_real_nccl_group_runs_the_call_sites(tmp_path):
    script = tmp_path / "nccl_collectives.py"
    script.write_text(GPU_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
