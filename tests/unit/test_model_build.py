"""The model is built on the accelerator (ZeRO-3: under deepspeed.zero.Init), TF32 on CUDA; CPU unchanged."""
from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import torch

from megatron.config import TransformerConfig
from megatron.model import GPTModel
from megatron.training import model_build

CFG = TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4, padded_vocab_size=64,
                        max_position_embeddings=16)


def run_config(zero_stage: int) -> Any:
    return SimpleNamespace(training=SimpleNamespace(zero_stage=zero_stage),
                           deepspeed={"train_batch_size": 2, "zero_optimization": {"stage": zero_stage}})


SPEC = SimpleNamespace(build_model=lambda config: GPTModel(CFG))


def test_cpu_build_is_the_plain_build() -> None:
    assert model_build.accelerator_device() == torch.device("cpu")
    torch.manual_seed(3)
    built = model_build.build_model(SPEC, run_config(3))  # ZeRO-3 on CPU: no zero.Init, as before
    torch.manual_seed(3)
    plain = GPTModel(CFG)
    for a, b in zip(built.parameters(), plain.parameters()):
        assert a.device.type == "cpu" and a.dtype == torch.float32 and torch.equal(a, b)


def test_accelerator_build_creates_parameters_on_the_device() -> None:
    model = model_build.build_model(SPEC, run_config(0), device=torch.device("meta"))  # stands in for cuda:N
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_zero3_builds_under_zero_init(monkeypatch: pytest.MonkeyPatch) -> None:
    import deepspeed

    seen: list[dict] = []

    @contextlib.contextmanager
    def fake_init(config_dict_or_path: dict) -> Iterator[None]:
        seen.append(config_dict_or_path)
        with torch.device("meta"):  # a real zero.Init partitions every parameter as its module is built
            yield

    monkeypatch.setattr(deepspeed.zero, "Init", fake_init)
    model = model_build.build_model(SPEC, run_config(3), device=torch.device("meta"))
    assert seen == [run_config(3).deepspeed]
    assert {p.device.type for p in model.parameters()} == {"meta"}
    model_build.build_model(SPEC, run_config(1), device=torch.device("meta"))
    assert len(seen) == 1, "zero.Init only at stage 3"


def test_tf32_only_on_cuda() -> None:
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        model_build.configure_matmul_precision(torch.device("cpu"))
        assert torch.get_float32_matmul_precision() == "highest"
        model_build.configure_matmul_precision(torch.device("cuda", 0))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def _zero3_init_worker(_rank: int, init_file: str, result_file: str) -> None:
    import os

    import deepspeed
    import torch.distributed as dist

    os.environ.update(LOCAL_RANK="0", RANK="0", WORLD_SIZE="1")  # what a launcher sets; zero.Init reads LOCAL_RANK
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        config = {"train_batch_size": 1, "zero_optimization": {"stage": 3}}
        with deepspeed.zero.Init(config_dict_or_path=config):  # the real partitioning, on the CPU accelerator
            model = GPTModel(CFG)
        params = dict(model.named_parameters())
        assert all(hasattr(p, "ds_id") for p in params.values()), "zero.Init did not partition the parameters"
        stats = {}
        with deepspeed.zero.GatheredParameters(list(params.values())):
            for name, p in params.items():
                stats[name] = (float(p.float().std()) if p.numel() > 1 else 0.0, float(p.abs().max()))
        torch.save(stats, result_file)
    finally:
        dist.destroy_process_group()


def test_megatron_init_survives_real_zero_init(tmp_path) -> None:
    """Under deepspeed.zero.Init a parent's init of a child's (already partitioned) weight must not be lost."""
    import torch.multiprocessing as mp

    result = tmp_path / "stats.pt"
    ctx = mp.start_processes(_zero3_init_worker, args=(str(tmp_path / "init"), str(result)), nprocs=1, join=False,
                             start_method="fork")
    assert ctx.join(timeout=120) and ctx.processes[0].exitcode == 0
    stats = torch.load(result)
    std = CFG.init_method_std
    for name, (sd, amax) in stats.items():
        if name.endswith("bias") and "layernorm" not in name:
            assert amax == 0.0, f"{name}: bias not zeroed under zero.Init (max |b| {amax})"
        elif "layernorm" in name:
            continue
        elif "dense_4h_to_h.weight" in name or "attention.dense.weight" in name:
            assert sd < std, f"{name}: std {sd} (scaled init expected)"
        elif name.endswith("weight"):
            assert abs(sd - std) < 0.3 * std, f"{name}: std {sd}, Megatron init std {std} expected"
