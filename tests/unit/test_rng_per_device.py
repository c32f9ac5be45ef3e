"""CUDA RNG in checkpoints: each rank saves and restores its current device's generator only (CPU, fake torch.cuda).

A resume with fewer visible devices or another rank-to-device mapping must neither raise IndexError nor restore
another device's stream; a checkpoint written the old way (one state per visible device) still loads.
"""
from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
import torch

from megatron.arguments import parse_args
from megatron.config import build_configs
from megatron.model import GPTModel
from megatron.training import rng
from megatron.training.checkpointing import load_checkpoint, save_checkpoint
from megatron.training.data_efficiency_hooks import NoDataEfficiency
from megatron.training.engine import setup_model_and_optimizer
from megatron.training.initialize import initialize_distributed, set_launcher_env_defaults, set_random_seed
from megatron.training.state import TrainState

TOKENIZER = SimpleNamespace(padded_vocab_size=128, eod=0)


class FakeCuda:
    """Enough of torch.cuda for the RNG code: `count` devices, each with its own generator state."""

    def __init__(self, count: int, current: int) -> None:
        self.states = [torch.full((16,), 10 * (i + 1), dtype=torch.uint8) for i in range(count)]
        self.current = current

    def is_available(self) -> bool:
        return True

    def current_device(self) -> int:
        return self.current

    def get_rng_state(self, device: str = "cuda") -> torch.Tensor:
        return self.states[self.current].clone()

    def set_rng_state(self, state: torch.Tensor, device: str = "cuda") -> None:
        self.states[self.current] = state.clone()

    def get_rng_state_all(self):  # the old way: must not be used any more
        raise AssertionError("saved the RNG state of every visible device")

    def set_rng_state_all(self, states):
        raise AssertionError("restored the RNG state of every visible device")


class TorchWithCuda:
    """`torch` as the rng module sees it, with a fake `cuda` (everything else is the real torch)."""

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda

    def __getattr__(self, name: str):
        return getattr(torch, name)


def fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int, current: int) -> FakeCuda:
    cuda = FakeCuda(count, current)
    monkeypatch.setattr(rng, "torch", TorchWithCuda(cuda))
    return cuda


def test_saves_and_restores_the_current_device_only(monkeypatch):
    cuda = fake_cuda(monkeypatch, count=4, current=2)
    state = rng.get_rng_state()
    assert torch.equal(state["cuda"], cuda.states[2])  # one tensor, not a list of 4
    fewer = fake_cuda(monkeypatch, count=1, current=0)  # resumed with one visible device (per-rank visibility)
    rng.set_rng_state(state)
    assert torch.equal(fewer.states[0], cuda.states[2])


def test_old_list_of_every_device_takes_the_current_entry_or_warns(monkeypatch):
    old = rng.get_rng_state()  # no cuda here: add an old-style list
    old["cuda"] = [torch.full((16,), v, dtype=torch.uint8) for v in (1, 2)]
    cuda = fake_cuda(monkeypatch, count=2, current=1)
    rng.set_rng_state(old)
    assert torch.equal(cuda.states[1], old["cuda"][1])
    cuda = fake_cuda(monkeypatch, count=4, current=3)
    before = [s.clone() for s in cuda.states]
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("megatron.training").addHandler(handler)  # the megatron loggers may not reach caplog
    try:
        rng.set_rng_state(old)  # device 3 has no entry: no IndexError, nothing restored, one warning
    finally:
        logging.getLogger("megatron.training").removeHandler(handler)
    assert all(torch.equal(a, b) for a, b in zip(before, cuda.states))
    assert len(warnings) == 1 and "CUDA RNG states of 2 devices and none for device 3" in warnings[0]


@pytest.fixture(scope="module")
def _distributed() -> None:
    torch.set_num_threads(1)
    set_launcher_env_defaults()
    initialize_distributed(None, 10)


def test_checkpoint_round_trip_and_old_checkpoints(tmp_path, monkeypatch, _distributed):
    """Saved on device 1 of 2, resumed on device 0 of 1: the state of device 1 comes back; an old list too."""
    args = parse_args(["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "8",
                       "--micro-batch-size", "1", "--global-batch-size", "1", "--train-iters", "2", "--lr", "1e-2",
                       "--data-path", "unused", "--save", str(tmp_path / "ckpt"), "--load", str(tmp_path / "ckpt")])
    cfg = build_configs(args, TOKENIZER, 1)
    set_random_seed(1, 0)
    engine, scheduler = setup_model_and_optimizer(GPTModel(cfg.model), cfg)
    de = NoDataEfficiency(8, 1)
    state = TrainState(iteration=1)
    saved_on = fake_cuda(monkeypatch, count=2, current=1)
    save_checkpoint(engine, scheduler, state, de, cfg, model_family="gpt")

    resumed_on = fake_cuda(monkeypatch, count=1, current=0)
    loaded = load_checkpoint(engine, scheduler, TrainState(), de, cfg, model_family="gpt")
    assert loaded is not None and isinstance(loaded.rng_state["cuda"], torch.Tensor)
    rng.set_rng_state(loaded.rng_state)
    assert torch.equal(resumed_on.states[0], saved_on.states[1])

    states_file = tmp_path / "ckpt" / "global_step1" / "mp_rank_00_model_states.pt"
    content = torch.load(states_file, weights_only=True)
    content["rng_state"][0]["cuda"] = [torch.full((16,), v, dtype=torch.uint8) for v in (7, 8)]  # the old layout
    torch.save(content, states_file)
    again = fake_cuda(monkeypatch, count=2, current=1)
    loaded = load_checkpoint(engine, scheduler, TrainState(), de, cfg, model_family="gpt")
    rng.set_rng_state(loaded.rng_state)
    assert torch.equal(again.states[1], torch.full((16,), 8, dtype=torch.uint8))
    assert os.path.isdir(tmp_path / "ckpt" / "global_step1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_current_device_round_trip():
    """On a GPU: the saved state is the current device's; restoring it reproduces that device's draws."""
    state = rng.get_rng_state()
    assert isinstance(state["cuda"], torch.Tensor)
    first = torch.rand(4, device="cuda")
    rng.set_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), first)
    if torch.cuda.device_count() > 1:  # saved on device 1, restored on device 0: device 1's stream continues there
        with torch.cuda.device(1):
            saved = rng.get_rng_state()
            on_one = torch.rand(4, device="cuda:1")
        with torch.cuda.device(0):
            rng.set_rng_state(saved)
            assert torch.equal(torch.rand(4, device="cuda:0").cpu(), on_one.cpu())
