"""The GLUE finetuning sweep recipe for real: ds_finetune_bert_glue_run.sh launches tasks/main.py (CPU, python
launcher) on the offline GLUE-format suite from a tiny pretrained BERT, then the gather tabulates the runs."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, _load_tool, bert_argv, subprocess_env

SWEEP = REPO / "examples_deepspeed" / "data_efficiency" / "bert" / "finetune_glue" / "ds_finetune_bert_glue_run.sh"


@pytest.fixture(scope="module")
def pretrained(bert_data_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from megatron.cli import pretrain_from_argv
    from megatron.specs.bert import BERT_SPEC

    save = tmp_path_factory.mktemp("bert_pretrained") / "ckpt"
    pretrain_from_argv(BERT_SPEC, bert_argv(bert_data_prefix, train_iters=8, save=save))
    return save


def test_sweep_finetunes_every_run_and_gathers(pretrained, tmp_path):
    glue = tmp_path / "glue"
    assert _load_tool("make_glue_suite").main(["--output-dir", str(glue), "--tasks", "MNLI",
                                               "--train-size", "96", "--dev-size", "40", "--test-size", "8",
                                               "--seed", "7"]) in (0, None)
    out = tmp_path / "out"
    env = subprocess_env()
    for key in ("DRY_RUN", "LAUNCHER", "PRECISION", "GPU_IDS", "CUDA_VISIBLE_DEVICES", "PYTHON", "VOCAB_PATH"):
        env.pop(key, None)
    # DROPOUT=0 as the tiny checkpoint was pretrained; seq 64 = its max positions; a small global batch for 96 rows
    env.update(CHECKPOINT=str(pretrained), GLUE_DIR=str(glue), OUTPUT=str(out), NUM_GPUS="0", TASKS="MNLI",
               SEEDS="1 2", LRS="1e-3", EPOCHS="1", SEQ_LENGTH="64", GLOBAL_BATCH_SIZE="16", DROPOUT="0",
               SAVE_CHECKPOINT="false")
    proc = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.count("done: ") == 2
    for task in ("MNLI",):
        for seed in (1, 2):
            doc = json.loads((out / task / f"seed{seed}_lr1e-3" / "results.json").read_text())
            assert (doc["task"], doc["seed"], doc["lr"], doc["epochs_planned"]) == (task, seed, 1e-3, 1)
            assert [e["epoch"] for e in doc["evaluations"]] == [1]
    summary = json.loads((out / "glue_results.json").read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert sorted(rows) == ["MNLI-m", "MNLI-mm"] and all(r["num_seeds"] == 2 for r in rows.values())
    assert summary["glue_score"]["present"] == ["MNLI-m", "MNLI-mm"]
    assert (out / "glue_results.md").read_text() in proc.stdout
