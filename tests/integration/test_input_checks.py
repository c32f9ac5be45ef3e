"""Bad inputs to the evaluation and preprocessing tools: one `error:` line, exit 2, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, gpt_argv, subprocess_env
from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC


@pytest.fixture(scope="module")
def tiny_checkpoint(gpt_data_prefix, tmp_path_factory):
    save = tmp_path_factory.mktemp("input_checks") / "ckpt"
    pretrain_from_argv(GPT_SPEC, gpt_argv(gpt_data_prefix, train_iters=3, lr_warmup_iters=1, split="90,5,5", eval_iters=1,
                                          save=save))
    return save


def test_eval_gpt_token_ids_beyond_the_checkpoint_vocab(tiny_checkpoint, tmp_path):
    """Data with ids >= the checkpoint's embedding rows: one error line naming the file, exit 2."""
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder

    prefix = str(tmp_path / "big_ids")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    rng = np.random.default_rng(0)
    for _ in range(64):
        builder.add_item(rng.integers(0, 8192, size=40, dtype=np.int32))
        builder.end_document()
    builder.add_item(np.array([1, 2, 50000, 3], dtype=np.int32))
    builder.end_document()
    builder.finalize(prefix + ".idx")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "eval_gpt.py"), "--load", str(tiny_checkpoint),
                           "--data-path", prefix, "--split", "0,100,0", "--full-split"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "50000" in lines[0] and prefix in lines[0]
    assert "Traceback" not in proc.stderr


def test_ids_are_checked_against_the_loaded_embedding_rows(tmp_path):
    """Weights with fewer embedding rows than the configured padded vocab: ids past the rows are one error."""
    from types import SimpleNamespace

    import torch

    from megatron.config import ConfigError
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
    from megatron.evaluation import _check_ids_fit_embedding

    prefix = str(tmp_path / "ids")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    builder.add_item(np.array([1, 2, 100, 3], dtype=np.int32))
    builder.end_document()
    builder.finalize(prefix + ".idx")
    model = torch.nn.Module()
    model.word_embeddings = torch.nn.Embedding(64, 4)
    config = SimpleNamespace(model=SimpleNamespace(padded_vocab_size=128), data=SimpleNamespace(data_path=[prefix]))
    with pytest.raises(ConfigError, match=r"token id 100 is outside the padded vocabulary \[0, 64\)"):
        _check_ids_fit_embedding(SimpleNamespace(model=model, config=config))
    model.word_embeddings = torch.nn.Embedding(128, 4)
    _check_ids_fit_embedding(SimpleNamespace(model=model, config=config))
