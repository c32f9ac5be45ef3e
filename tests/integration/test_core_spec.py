"""A model family defined only in this file trains through pretrain(): the core names no family.

The toy family is a bag-of-tokens classifier on synthetic data (tokens 0-15; label = are most of them >= 8?): its own model, batch layout, forward step, metrics, FLOPs and datasets. It goes through
the same CLI bridge, loop, evaluation, checkpointing (family name recorded) and load_for_inference as GPT.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import pytest
import torch
from torch import nn

from conftest import MERGES, VOCAB

class BagOfTokens(nn.Module):
    """Embedding -> mean over positions -> linear: [b, s] token ids -> [b, 2] logits."""

    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(tokens).mean(dim=1)))  # [b, 2]


class ToyDataset(torch.utils.data.Dataset):
    """`n` samples {"tokens": [s] in [0, 16), "label": 1 if more than half the tokens are >= 8}, seeded."""

    def __init__(self, n: int, seq: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, 16, (n, seq), generator=g)
        self.labels = ((self.tokens >= 8).sum(dim=1) * 2 > seq).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"tokens": self.tokens[i].numpy(), "label": self.labels[i].numpy()}


@dataclasses.dataclass(frozen=True)
class IdentityLayout:
    """The toy's batches have no sequence-length curriculum: every hook returns the batch as it is."""

    def make_post_process(self, seq_length: int, group: Any = None):
        return lambda batch, sampler_state: dict(batch)

    def truncate(self, batch: Mapping[str, Any], curriculum_seqlen: int, seq_length: int, group: Any = None):
        return dict(batch), seq_length

    def model_seq_length(self, width: int) -> int:
        return width


def build_model(config) -> nn.Module:
    return BagOfTokens(config.model.padded_vocab_size, config.model.hidden_size)


def forward_step(batch, model, config):
    device = getattr(model, "device", None) or next(model.parameters()).device
    logits = model(batch["tokens"].to(device))
    labels = batch["label"].to(device).reshape(-1)
    loss = nn.functional.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss, {"toy loss": loss.detach(), "accuracy": accuracy.detach()}


def build_datasets(config, tokenizer):
    n_train, n_valid, n_test = config.data.train_valid_test_num_samples
    make = lambda n, split: ToyDataset(n, config.training.seq_length, config.data.seed * 10 + split) if n else None
    return make(n_train, 0), make(max(n_valid, 64), 1), make(n_test, 2)


def toy_flops(model_config, seq_length: int) -> float:
    return 6.0 * model_config.hidden_size * 2


seen_layouts: list[str] = []


def check_data(config, tokenizer) -> None:
    seen_layouts.append("validated")
    if config.training.seq_length > 64:
        from megatron.config import ConfigError

        raise ConfigError(f"toy: --seq-length {config.training.seq_length} is too long (max 64)")


def toy_spec():
    from megatron.training.spec import ModelSpec

    return ModelSpec(name="toy-bag-of-tokens", build_model=build_model, forward_step=forward_step,
                     build_datasets=build_datasets, flops_per_token=toy_flops, batch_layout=IdentityLayout(),
                     validate_data=check_data, eval_metric="toy loss",
                     args_defaults={"tokenizer_type": "GPT2BPETokenizer", "vocab_file": str(VOCAB),
                                    "merge_file": str(MERGES)})


def toy_argv(**flags: object) -> list[str]:
    base: dict[str, object] = {
        "num_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "seq_length": 8, "micro_batch_size": 8,
        "global_batch_size": 16, "train_iters": 40, "lr": 0.05, "lr_decay_style": "constant", "clip_grad": 1.0,
        "seed": 7, "log_interval": 10, "eval_interval": 20, "eval_iters": 4, "num_workers": 0,
    }
    base.update(flags)
    argv: list[str] = []
    for key, value in base.items():
        if value is None:
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    return argv


def test_toy_family_trains_evaluates_saves_and_loads(tmp_path, capsys):
    from megatron.cli import pretrain_from_argv
    from megatron.inference import load_for_inference
    from megatron.training.loop import evaluate

    spec = toy_spec()
    save = tmp_path / "ckpt"
    result = pretrain_from_argv(spec, toy_argv(save=save))
    assert seen_layouts  # the family's own data check ran
    assert result.state.iteration == 40 and result.exit_reason == "budget reached"
    first = sum(s["toy loss"] for s in result.losses[:5]) / 5
    last = sum(s["toy loss"] for s in result.losses[-5:]) / 5
    assert last < first - 0.2, (first, last)
    # evaluation at 20 and at the end, with the family's metrics
    assert [it for it, _ in result.evaluations] == [20, 40]
    final = result.evaluations[-1][1]
    assert set(final) == {"toy loss", "accuracy"} and final["accuracy"] > 0.8
    out = capsys.readouterr().out
    assert "toy loss: " in out and "accuracy: " in out and "lm loss" not in out
    # the seq-length counters are the family-free defaults: samples x --seq-length
    assert result.state.consumed_train_tokens == 40 * 16 * 8

    states = torch.load(save / "global_step40" / "mp_rank_00_model_states.pt", weights_only=True)
    assert states["model_family"] == "toy-bag-of-tokens"
    loaded = load_for_inference(str(save), spec=spec)
    assert isinstance(loaded.model, BagOfTokens) and not loaded.model.training
    _, valid, _ = build_datasets(loaded.config, loaded.tokenizer)
    loader = spec.build_data_loader(valid, 0, loaded.config, rank=0, world=1, dataloader_type="single")
    again = evaluate(loaded.model, loader, spec.forward_step, loaded.config)
    assert again == pytest.approx(final, rel=1e-6)


def test_toy_family_resumes_exactly_and_refuses_other_families(tmp_path):
    from megatron.cli import pretrain_from_argv
    from megatron.inference import load_for_inference
    from megatron.training import UsageError

    spec = toy_spec()
    full = pretrain_from_argv(spec, toy_argv(train_iters=8, eval_interval=100))
    part = pretrain_from_argv(spec, toy_argv(train_iters=8, eval_interval=100, save=tmp_path / "c", exit_interval=4))
    resumed = pretrain_from_argv(spec, toy_argv(train_iters=8, eval_interval=100, load=tmp_path / "c"))
    assert part.iterations == [1, 2, 3, 4] and resumed.iterations == [5, 6, 7, 8]
    assert [s["toy loss"] for s in resumed.losses] == [s["toy loss"] for s in full.losses[4:]]

    other = dataclasses.replace(spec, name="another-family")
    with pytest.raises(UsageError, match="a toy-bag-of-tokens checkpoint cannot resume a another-family run"):
        pretrain_from_argv(other, toy_argv(train_iters=8, load=tmp_path / "c"))
    from megatron.config import ConfigError

    with pytest.raises(ConfigError, match="unknown model family 'toy-bag-of-tokens'"):
        load_for_inference(str(tmp_path / "c"))  # not registered in megatron.specs: the caller must pass the spec


def test_toy_family_data_check_is_one_error_line(tmp_path):
    from megatron.cli import pretrain_from_argv
    from megatron.training import UsageError

    with pytest.raises(UsageError, match=r"^toy: --seq-length 128 is too long \(max 64\)$"):
        pretrain_from_argv(toy_spec(), toy_argv(seq_length=128))
