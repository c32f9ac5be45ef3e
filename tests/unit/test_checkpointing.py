"""Checkpointing through the DeepSpeed engine: layout, exact round trip, atomic save, load edge cases."""
from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import pytest
import torch

from megatron.arguments import parse_args
from megatron.config import ConfigError, RunConfig, build_configs
from megatron.model import GPTModel
from megatron.specs.gpt import GPT_SPEC
from megatron.training import checkpointing
from megatron.training.checkpointing import load_checkpoint, save_checkpoint
from megatron.training.data_efficiency_hooks import NoDataEfficiency
from megatron.training.engine import setup_model_and_optimizer
from megatron.training.initialize import initialize_distributed, set_launcher_env_defaults, set_random_seed
from megatron.training.rng import get_rng_state, set_rng_state
from megatron.training.state import TrainState

TOKENIZER = SimpleNamespace(padded_vocab_size=128, eod=0)
FAMILY = GPT_SPEC.name  # "gpt": stored in the client state, checked on load


@pytest.fixture(scope="module", autouse=True)
def _distributed() -> None:
    torch.set_num_threads(1)
    set_launcher_env_defaults()
    initialize_distributed(None, 10)


def make_config(tmp_path, zero_stage: int = 0, **checkpoint: object) -> RunConfig:
    args = parse_args(["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
                       "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "10", "--lr", "1e-2",
                       "--lr-warmup-iters", "1", "--zero-stage", str(zero_stage), "--data-path", "unused",
                       "--save", str(tmp_path / "ckpt"), "--load", str(tmp_path / "ckpt")])
    cfg = build_configs(args, TOKENIZER, 1)
    return dataclasses.replace(cfg, checkpoint=dataclasses.replace(cfg.checkpoint, **checkpoint))


def build(cfg: RunConfig, seed: int):
    set_random_seed(seed, 0)
    engine, scheduler = setup_model_and_optimizer(GPTModel(cfg.model), cfg)
    return engine, scheduler, NoDataEfficiency(cfg.training.seq_length, cfg.training.global_batch_size)


def train_steps(engine, scheduler, state: TrainState, n: int, data_seed: int) -> None:
    gen = torch.Generator().manual_seed(data_seed)
    for _ in range(n):
        for _ in range(2):  # 2 micro-batches per step
            text = torch.randint(0, 128, (2, 17), generator=gen)
            loss = engine(text[:, :-1], labels=text[:, 1:]).mean()
            engine.backward(loss)
            engine.step()
        state.iteration += 1
        state.consumed_train_samples += 4
        state.consumed_train_tokens += 64
        scheduler.step(increment=4, token_num=state.consumed_train_tokens)


def params(engine) -> list[torch.Tensor]:
    return [p.detach().clone().float() for p in engine.module.parameters()]


def test_layout_and_client_state_is_weights_only_safe(tmp_path):
    cfg = make_config(tmp_path)
    engine, scheduler, de = build(cfg, 1)
    state = TrainState()
    train_steps(engine, scheduler, state, 3, data_seed=0)
    path = save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)
    ckpt = tmp_path / "ckpt"
    assert path == str(ckpt / "global_step3")
    assert (ckpt / "latest").read_text() == "global_step3"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "3"
    assert (ckpt / "global_step3" / "mp_rank_00_model_states.pt").is_file()
    assert not [p for p in os.listdir(ckpt) if p.endswith(".tmp")]
    client = checkpointing.client_state(state, scheduler, de, cfg, [get_rng_state()], FAMILY)
    torch.save(client, tmp_path / "client.pt")
    loaded = torch.load(tmp_path / "client.pt", weights_only=True)  # only plain types and tensors inside
    assert loaded["train_state"]["consumed_train_tokens"] == 192
    assert loaded["opt_param_scheduler"]["num_steps"] == 12
    assert loaded["args"]["lr"] == 1e-2
    assert loaded["model_family"] == "gpt"


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_round_trip_is_exact(tmp_path, zero_stage, monkeypatch):
    cfg = make_config(tmp_path, zero_stage=zero_stage)
    engine, scheduler, de = build(cfg, 1)
    state = TrainState()
    train_steps(engine, scheduler, state, 2, data_seed=0)
    rng_at_save = get_rng_state()
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)  # under global_step2.tmp, then renamed

    engine2, scheduler2, de2 = build(cfg, 7)  # different init: everything must come from the checkpoint
    state2 = TrainState()
    calls = []
    real_load = torch.load

    def spy(path, *a, **k):
        calls.append((os.path.basename(str(path)), k.get("weights_only")))
        return real_load(path, *a, **k)

    monkeypatch.setattr(torch, "load", spy)
    loaded = load_checkpoint(engine2, scheduler2, state2, de2, cfg, model_family=FAMILY)
    monkeypatch.undo()
    assert ("mp_rank_00_model_states.pt", True) in calls  # weights + our client state: weights_only
    assert loaded is not None and loaded.iteration == 2 and loaded.rng_state is not None
    assert state2 == state
    assert scheduler2.state_dict() == scheduler.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(params(engine), params(engine2)))
    assert torch.equal(loaded.rng_state["torch"], rng_at_save["torch"])
    assert loaded.rng_state["random"] == rng_at_save["random"]
    set_rng_state(rng_at_save)
    train_steps(engine, scheduler, state, 2, data_seed=5)  # dropout is on: the RNG streams must match too
    set_rng_state(loaded.rng_state)
    train_steps(engine2, scheduler2, state2, 2, data_seed=5)  # the optimizer moments were restored too
    assert all(torch.equal(a, b) for a, b in zip(params(engine), params(engine2)))


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = make_config(tmp_path)
    engine, scheduler, de = build(cfg, 1)
    state = TrainState()
    train_steps(engine, scheduler, state, 1, data_seed=0)
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)
    train_steps(engine, scheduler, state, 1, data_seed=1)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "latest").read_text() == "global_step1"
    assert (ckpt / "global_step2.tmp" / "mp_rank_00_model_states.pt").is_file()
    monkeypatch.undo()

    engine2, scheduler2, de2 = build(cfg, 3)
    state2 = TrainState()
    assert load_checkpoint(engine2, scheduler2, state2, de2, cfg, model_family=FAMILY).iteration == 1
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)  # the next save cleans the leftover
    assert not (ckpt / "global_step2.tmp").exists() and (ckpt / "latest").read_text() == "global_step2"


def test_resaving_an_iteration_replaces_it(tmp_path):
    cfg = make_config(tmp_path)
    engine, scheduler, de = build(cfg, 1)
    state = TrainState(iteration=4)
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)
    state.consumed_train_tokens = 999
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)
    engine2, scheduler2, de2 = build(cfg, 2)
    state2 = TrainState()
    load_checkpoint(engine2, scheduler2, state2, de2, cfg, model_family=FAMILY)
    assert state2.consumed_train_tokens == 999
    assert [p for p in sorted(os.listdir(tmp_path / "ckpt")) if p.startswith("global_step")] == ["global_step4"]


def test_missing_checkpoints(tmp_path):
    cfg = make_config(tmp_path)
    engine, scheduler, de = build(cfg, 1)
    assert load_checkpoint(engine, scheduler, TrainState(), de, cfg, model_family=FAMILY) is None  # fresh start
    strict = make_config(tmp_path, exit_on_missing_checkpoint=True)
    with pytest.raises(ConfigError, match="no checkpoint found"):
        load_checkpoint(engine, scheduler, TrainState(), de, strict, model_family=FAMILY)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "latest").write_text("global_step9")
    with pytest.raises(ConfigError, match="checkpoint directory global_step9 .* does not exist"):
        load_checkpoint(engine, scheduler, TrainState(), de, cfg, model_family=FAMILY)
    (tmp_path / "ckpt" / "latest").unlink()
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("release")
    with pytest.raises(ConfigError, match="expected an iteration number"):
        load_checkpoint(engine, scheduler, TrainState(), de, cfg, model_family=FAMILY)


def test_finetune_and_no_load_flags(tmp_path):
    cfg = make_config(tmp_path)
    engine, scheduler, de = build(cfg, 1)
    state = TrainState()
    train_steps(engine, scheduler, state, 2, data_seed=0)
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)

    engine2, scheduler2, de2 = build(cfg, 5)
    fresh_opt_state = len(engine2.optimizer.state)
    state2 = TrainState()
    loaded = load_checkpoint(engine2, scheduler2, state2, de2,
                             make_config(tmp_path, finetune=True), model_family=FAMILY)
    assert loaded.iteration == 0 and state2 == TrainState() and loaded.rng_state is None
    assert all(torch.equal(a, b) for a, b in zip(params(engine), params(engine2)))
    assert len(engine2.optimizer.state) == fresh_opt_state == 0  # optimizer not restored

    engine3, scheduler3, de3 = build(cfg, 5)
    loaded = load_checkpoint(engine3, scheduler3, TrainState(), de3,
                             make_config(tmp_path, no_load_optim=True, no_load_rng=True), model_family=FAMILY)
    assert loaded.iteration == 2 and loaded.rng_state is None and len(engine3.optimizer.state) == 0


def test_atomic_write_text_leaves_no_temp(tmp_path):
    target = tmp_path / "latest"
    checkpointing.atomic_write_text(str(target), "global_step1")
    checkpointing.atomic_write_text(str(target), "global_step2")
    assert target.read_text() == "global_step2" and os.listdir(tmp_path) == ["latest"]


def test_checkpoint_of_another_model_shape_is_one_clear_error(tmp_path):
    cfg = make_config(tmp_path)
    engine, scheduler, de = build(cfg, 1)
    state = TrainState()
    train_steps(engine, scheduler, state, 1, data_seed=0)
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden_size=64))
    engine2, scheduler2, de2 = build(wider, 1)
    with pytest.raises(ConfigError, match=r"does not fit this run .*--hidden-size"):
        load_checkpoint(engine2, scheduler2, TrainState(), de2, wider, model_family=FAMILY)


def test_checkpoint_of_another_model_family_resumes_only_with_finetune(tmp_path):
    cfg = make_config(tmp_path)
    engine, scheduler, de = build(cfg, 1)
    state = TrainState()
    train_steps(engine, scheduler, state, 1, data_seed=0)
    save_checkpoint(engine, scheduler, state, de, cfg, model_family=FAMILY)
    engine2, scheduler2, de2 = build(cfg, 2)
    with pytest.raises(ConfigError, match=r"global_step1: a gpt checkpoint cannot resume a other-family run "
                                          r"\(use --finetune"):
        load_checkpoint(engine2, scheduler2, TrainState(), de2, cfg, model_family="other-family")
    loaded = load_checkpoint(engine2, scheduler2, TrainState(), de2, make_config(tmp_path, finetune=True),
                             model_family="other-family")
    assert loaded.iteration == 0
    assert all(torch.equal(a, b) for a, b in zip(params(engine), params(engine2)))
