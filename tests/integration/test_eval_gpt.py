"""tools/eval_gpt.py: checkpoints written by pretrain_gpt.py, evaluated in a plain GPTModel (CPU, tiny)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, _load_tool, subprocess_env
from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC

eval_gpt = _load_tool("eval_gpt")


def train(argv: list[str]):
    """pretrain_gpt in this process; returns its TrainResult."""
    return pretrain_from_argv(GPT_SPEC, argv)


@pytest.fixture(scope="module")
def fp32_run(gpt_data_prefix, tmp_path_factory):
    """6 fp32 steps with validation and test splits, saved."""
    from conftest import gpt_argv

    save = tmp_path_factory.mktemp("eval_fp32") / "ckpt"
    result = train(gpt_argv(gpt_data_prefix, train_iters=6, split="90,5,5", eval_iters=3, save=save))
    return result, save


def reference_loss(save, samples: list[torch.Tensor], micro_batch: int) -> float:
    """Mean of micro-batch losses of an independently built plain model on `samples` (fp32)."""
    from megatron.config import TransformerConfig
    from megatron.model import GPTModel

    states = torch.load(os.path.join(save, "global_step6", "mp_rank_00_model_states.pt"), weights_only=True)
    a, vocab = states["args"], states["module"]["embedding.word_embeddings.weight"].shape[0]
    model = GPTModel(TransformerConfig(num_layers=a["num_layers"], hidden_size=a["hidden_size"],
                                       num_attention_heads=a["num_attention_heads"], padded_vocab_size=vocab,
                                       max_position_embeddings=a["max_position_embeddings"]))
    model.load_state_dict(states["module"])
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, len(samples), micro_batch):
            text = torch.stack(samples[i:i + micro_batch])
            losses.append(model(text[:, :-1], labels=text[:, 1:]).mean())
    return float(torch.stack(losses).mean())


def test_default_evaluation_repeats_training_evaluation(fp32_run, tmp_path):
    """Same split, batches and precision as pretraining's final evaluation: the same loss; JSON written."""
    result, save = fp32_run
    out = tmp_path / "sub" / "eval.json"
    results = eval_gpt.run(["--load", str(save), "--eval-split", "both", "--results-path", str(out)])
    valid = result.evaluations[-1][1]["lm loss"]
    assert results["valid"]["lm loss"] == pytest.approx(valid, rel=1e-6)
    assert results["valid"]["samples"] == 3 * 8 and results["test"]["samples"] == 3 * 8
    assert results["test"]["lm loss"] != results["valid"]["lm loss"]
    assert results["iteration"] == 6 and results["consumed_train_tokens"] == 6 * 8 * 32
    assert results["precision"] == "float32"
    written = json.loads(out.read_text())
    assert written["valid"]["ppl"] == pytest.approx(math.exp(valid), rel=1e-5)
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temp file left behind


def test_full_split_and_other_data_path(fp32_run, gpt_data_prefix):
    """--full-split covers every full micro-batch of one epoch; --data-path/--split evaluate other data."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets

    _, save = fp32_run
    results = eval_gpt.run(["--load", str(save), "--data-path", gpt_data_prefix, "--split", "0,3,97",
                            "--full-split", "--micro-batch-size", "8"])
    _, valid, _ = build_train_valid_test_datasets([gpt_data_prefix], "mmap", "0,3,97", [1, 1, 0], 32, 1234)
    n = len(valid) // 8 * 8
    assert results["valid"]["samples"] == n and results["valid"]["micro_batches"] == n // 8
    expected = reference_loss(save, [torch.from_numpy(valid[i]["text"]) for i in range(n)], 8)
    assert results["valid"]["lm loss"] == pytest.approx(expected, rel=1e-5)


def test_bf16_zero3_checkpoint(gpt_data_prefix, tmp_path):
    """A ZeRO-3 bf16 checkpoint: shards gathered, evaluated in bf16 like training; --eval-fp32 is close."""
    from conftest import gpt_argv

    save = tmp_path / "ckpt"
    result = train(gpt_argv(gpt_data_prefix, train_iters=3, bf16=True, zero_stage=3, eval_iters=2, save=save))
    bf16 = eval_gpt.run(["--load", str(save)])
    assert bf16["precision"] == "bfloat16"
    assert bf16["valid"]["lm loss"] == pytest.approx(result.evaluations[-1][1]["lm loss"], rel=1e-3)
    fp32 = eval_gpt.run(["--load", str(save), "--eval-fp32"])
    assert fp32["precision"] == "float32" and fp32["valid"]["lm loss"] == pytest.approx(bf16["valid"]["lm loss"],
                                                                                         rel=2e-2)


def test_bad_input_is_one_error_line(fp32_run, tmp_path, capsys):
    """Missing checkpoint, not a checkpoint, empty split, wrong shape: exit 2 and one `error:` line."""
    _, save = fp32_run
    (tmp_path / "empty").mkdir()
    (tmp_path / "bogus" / "global_step1").mkdir(parents=True)
    (tmp_path / "bogus" / "latest").write_text("global_step1")
    cases = [
        (["--load", str(tmp_path / "nowhere")], "directory not found"),
        (["--load", str(tmp_path / "empty")], "no checkpoint"),
        (["--load", str(tmp_path / "bogus")], "mp_rank_00_model_states.pt not found"),
        (["--load", str(save), "--eval-split", "test", "--split", "100,0,0"], "test split"),
    ]
    for argv, message in cases:
        assert eval_gpt.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (message, err)

    states = torch.load(save / "global_step6" / "mp_rank_00_model_states.pt", weights_only=True)
    states["args"]["num_layers"] = 3  # the recorded shape no longer fits the weights
    bad = tmp_path / "bad" / "global_step6"
    bad.mkdir(parents=True)
    torch.save(states, bad / "mp_rank_00_model_states.pt")
    (tmp_path / "bad" / "latest").write_text("global_step6")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "eval_gpt.py"), "--load", str(tmp_path / "bad")],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "do not fit a gpt model of the recorded shape" in errors[0], \
        proc.stderr
    assert "Traceback" not in proc.stderr
