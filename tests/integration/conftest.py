"""Shared fixtures for tiny end-to-end training runs: a preprocessed corpus and a flag builder."""
from __future__ import annotations

import gzip
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
VOCAB = REPO / "data" / "tokenizers" / "gpt2-bpe" / "vocab.json"
MERGES = REPO / "data" / "tokenizers" / "gpt2-bpe" / "merges.txt"
CORPUS = REPO / "data" / "corpus" / "python_docs.jsonl.gz"
WORDPIECE = REPO / "data" / "tokenizers" / "bert-wordpiece" / "vocab.txt"
# A tiny GPT's DeepSpeed JSON with random-LTD on its middle layer (3 layers; reserved length 8 -> 32 in 4 steps)
LTD_JSON = {
    "train_batch_size": 8, "train_micro_batch_size_per_gpu": 4,
    "data_efficiency": {"enabled": True, "seed": 1234, "data_routing": {"enabled": True, "random_ltd": {
        "enabled": True, "total_layer_num": 3, "random_ltd_layer_num": 1, "random_ltd_layer_id": [1],
        "model_mask_name": "attention_mask", "model_type": "decoder", "hidden_state_order": "batch_seq_dim",
        "random_ltd_schedule": {"min_value": 8, "max_value": 32, "schedule_type": "fixed_linear",
                                "schedule_config": {"require_steps": 4, "seq_per_step": 8}}}}},
}


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny models run fastest (and steadily on a shared 2-core machine) with one intra-op thread."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gpt_data_prefix(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The first 300 documents of the bundled corpus, preprocessed with the shipped GPT-2 BPE (8192 ids)."""
    root = tmp_path_factory.mktemp("gpt_data")
    jsonl = root / "docs.jsonl"
    with gzip.open(CORPUS, "rt", encoding="utf-8") as src, open(jsonl, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= 300:
                break
            dst.write(line)
    status = _load_tool("preprocess_data").main([
        "--input", str(jsonl), "--output-prefix", str(root / "docs"), "--tokenizer-type", "GPT2BPETokenizer",
        "--vocab-file", str(VOCAB), "--merge-file", str(MERGES), "--append-eod", "--no-progress"])
    assert status in (0, None)
    return str(root / "docs_text_document")


@pytest.fixture(scope="session")
def bert_data_prefix(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The first 300 documents of the bundled corpus, sentence-split, with the shipped WordPiece vocab (8192)."""
    root = tmp_path_factory.mktemp("bert_data")
    jsonl = root / "docs.jsonl"
    with gzip.open(CORPUS, "rt", encoding="utf-8") as src, open(jsonl, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= 300:
                break
            dst.write(line)
    status = _load_tool("preprocess_data").main([
        "--input", str(jsonl), "--output-prefix", str(root / "docs"), "--tokenizer-type", "BertWordPieceLowerCase",
        "--vocab-file", str(WORDPIECE), "--split-sentences", "--no-progress"])
    assert status in (0, None)
    return str(root / "docs_text_sentence")


def bert_argv(prefix: str, **flags: object) -> list[str]:
    """Tiny BERT flags (2 layers, hidden 32, seq 64) plus overrides, as `gpt_argv`."""
    base: dict[str, object] = {"seq_length": 64, "max_position_embeddings": 64, "lr": 1e-3, "min_lr": 1e-5,
                               "vocab_file": str(WORDPIECE), "merge_file": None}
    base.update(flags)
    return gpt_argv(prefix, **base)


def gpt_argv(prefix: str, **flags: object) -> list[str]:
    """Tiny GPT flags (2 layers, hidden 32, seq 32) plus overrides: key `train_iters=5` -> `--train-iters 5`.

    A value of True adds a bare switch; None removes a default flag.
    """
    base: dict[str, object] = {
        "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 32,
        "max_position_embeddings": 32, "micro_batch_size": 4, "global_batch_size": 8, "train_iters": 10,
        "lr": 3e-3, "min_lr": 1e-4, "lr_decay_style": "cosine", "lr_warmup_iters": 2, "weight_decay": 0.01,
        "clip_grad": 1.0, "seed": 1234, "log_interval": 1, "eval_interval": 1000, "eval_iters": 2,
        "split": "949,50,1", "num_workers": 0, "attention_dropout": 0.0, "hidden_dropout": 0.0,
        "data_path": prefix, "vocab_file": str(VOCAB), "merge_file": str(MERGES),
    }
    base.update(flags)
    argv: list[str] = []
    for key, value in base.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "deepspeed_config":
            flag = "--deepspeed_config"
        if key == "override_opt_param_scheduler":
            flag = "--override-opt_param-scheduler"
        argv.append(flag)
        if value is not True:
            argv.append(str(value))
    return argv


@pytest.fixture
def make_argv(gpt_data_prefix: str) -> Callable[..., list[str]]:
    """`make_argv(train_iters=5, save=...)` -> full argv for pretrain_gpt on the session corpus."""
    return lambda **flags: gpt_argv(gpt_data_prefix, **flags)


def subprocess_env() -> dict[str, str]:
    """Environment for child training processes: repo importable, one thread, CPU accelerator."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("DS_ACCELERATOR", "cpu")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env
