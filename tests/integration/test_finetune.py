"""GLUE finetuning through tasks/main.py on the one training core, from a tiny pretrained BERT (CPU, seeded).

The data is the offline GLUE-format suite built from shipped text by tools/make_glue_suite.py (real GLUE file
layouts; labels that are real properties of the text).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, _load_tool, bert_argv, subprocess_env


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("glue")
    status = _load_tool("make_glue_suite").main(["--output-dir", str(out), "--train-size", "400", "--dev-size", "120",
                                                 "--test-size", "20", "--seed", "7"])
    assert status in (0, None)
    return out


@pytest.fixture(scope="module")
def pretrained(bert_data_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT pretrained for a few steps (the finetuning tests only need its shape, tokenizer and weights)."""
    from megatron.cli import pretrain_from_argv
    from megatron.specs.bert import BERT_SPEC

    save = tmp_path_factory.mktemp("bert_pretrained") / "ckpt"
    pretrain_from_argv(BERT_SPEC, bert_argv(bert_data_prefix, train_iters=8, save=save))
    return save


def finetune_argv(task: str, glue: Path, checkpoint: Path, **flags: object) -> list[str]:
    files = {"MNLI": ("train.tsv", ["dev_matched.tsv", "dev_mismatched.tsv"])}
    train, dev = files.get(task, ("train.tsv", ["dev.tsv"]))
    base: dict[str, object] = {
        "task": task, "train_data": str(glue / task / train), "pretrained_checkpoint": str(checkpoint),
        "epochs": 3, "seq_length": 64, "micro_batch_size": 8, "global_batch_size": 16, "lr": 1e-3,
        "lr_warmup_fraction": 0.1, "lr_decay_style": "linear", "weight_decay": 0.01, "seed": 1234,
        "num_workers": 0, "log_interval": 5, "hidden_dropout": 0.0, "attention_dropout": 0.0,
    }
    base.update(flags)
    argv: list[str] = []
    for key, value in base.items():
        if value is None or value is False:
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    return argv + ["--valid-data", *[str(glue / task / d) for d in dev]]


def rows(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return len(lines) - (0 if path.parent.name == "CoLA" else 1)  # GLUE dev files have a header, but CoLA's


def test_learnable_task_beats_majority_and_results_file(glue_dir, pretrained, tmp_path):
    from tasks.main import main

    results = tmp_path / "SST-2" / "results.json"
    result = main(finetune_argv("SST-2", glue_dir, pretrained, results_path=results))
    doc = json.loads(results.read_text())
    assert doc["task"] == "SST-2" and doc["metric"] == "accuracy" and doc["epochs_planned"] == 3
    assert [e["epoch"] for e in doc["evaluations"]] == [1, 2, 3]
    dev = doc["evaluations"][-1]["dev"]["dev.tsv"]
    assert dev["total"] == rows(glue_dir / "SST-2" / "dev.tsv")  # every dev example scored once
    labels = [line.split("\t")[-1] for line in (glue_dir / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    majority = max(labels.count("0"), labels.count("1")) / len(labels)
    assert doc["best"]["accuracy"] > majority + 0.15, (doc["best"], majority)
    assert {"accuracy", "correct", "total"} <= set(dev)
    assert result.evaluations[-1][1]["accuracy"] == pytest.approx(doc["evaluations"][-1]["overall"]["accuracy"])
    best = max(doc["evaluations"], key=lambda e: e["overall"]["accuracy"])
    assert doc["best_epoch"] == best["epoch"]


@pytest.mark.parametrize("task, keys", [("STS-B", {"pearson", "spearman", "corr", "total"}),
                                        ("CoLA", {"mcc", "accuracy", "total"}),
                                        ("MRPC", {"accuracy", "f1", "correct", "total"})])
def test_task_metrics(glue_dir, pretrained, tmp_path, task, keys):
    from tasks.main import main

    results = tmp_path / "results.json"
    main(finetune_argv(task, glue_dir, pretrained, epochs=1, results_path=results))
    doc = json.loads(results.read_text())
    assert keys <= set(doc["evaluations"][0]["dev"]["dev.tsv"])
    assert doc["evaluations"][0]["dev"]["dev.tsv"]["total"] == rows(glue_dir / task / "dev.tsv")


def test_mnli_scores_matched_and_mismatched_separately(glue_dir, pretrained, tmp_path):
    from tasks.main import main

    results = tmp_path / "results.json"
    result = main(finetune_argv("MNLI", glue_dir, pretrained, epochs=1, results_path=results))
    evaluation = json.loads(results.read_text())["evaluations"][0]
    assert set(evaluation["dev"]) == {"dev_matched.tsv", "dev_mismatched.tsv"}
    total = sum(evaluation["dev"][name]["total"] for name in evaluation["dev"])
    assert evaluation["overall"]["total"] == total == (rows(glue_dir / "MNLI" / "dev_matched.tsv")
                                                      + rows(glue_dir / "MNLI" / "dev_mismatched.tsv"))
    assert {"dev_matched.tsv accuracy", "dev_mismatched.tsv accuracy"} <= set(result.evaluations[-1][1])


def test_resume_equals_uninterrupted(glue_dir, pretrained, tmp_path):
    from tasks.main import main

    common = dict(epochs=2, hidden_dropout=0.1)
    full = main(finetune_argv("RTE", glue_dir, pretrained, results_path=tmp_path / "full.json", **common))
    per_epoch = full.state.iteration // 2
    part = main(finetune_argv("RTE", glue_dir, pretrained, save=tmp_path / "c", exit_interval=per_epoch + 3,
                              results_path=tmp_path / "part.json", **common))
    resumed = main(finetune_argv("RTE", glue_dir, pretrained, load=tmp_path / "c", save=tmp_path / "c",
                                 results_path=tmp_path / "part.json", **common))
    assert part.state.iteration == per_epoch + 3 and resumed.iterations[0] == per_epoch + 4
    assert resumed.losses == full.losses[per_epoch + 3:]  # shuffling, dropout and the schedule resume exactly
    a, b = json.loads((tmp_path / "full.json").read_text()), json.loads((tmp_path / "part.json").read_text())
    assert [e["overall"] for e in b["evaluations"]] == [e["overall"] for e in a["evaluations"]]


def test_random_ltd_trained_checkpoint_finetunes(bert_data_prefix, glue_dir, tmp_path):
    from megatron.cli import pretrain_from_argv
    from megatron.specs.bert import BERT_SPEC
    from tasks.main import main

    js = tmp_path / "ds.json"
    js.write_text(json.dumps({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "data_efficiency": {
        "enabled": True, "data_routing": {"enabled": True, "random_ltd": {
            "enabled": True, "total_layer_num": 3, "random_ltd_layer_num": 1, "random_ltd_layer_id": [1],
            "model_mask_name": "attention_mask", "model_type": "encoder", "hidden_state_order": "batch_seq_dim",
            "random_ltd_schedule": {"min_value": 16, "max_value": 64, "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": 4, "seq_per_step": 8}}}}}}))
    ckpt = tmp_path / "ltd"
    pretrain_from_argv(BERT_SPEC, bert_argv(bert_data_prefix, train_iters=4, num_layers=3, deepspeed_config=js,
                                            random_ltd=True, no_pipeline_parallel=True, save=ckpt))
    result = main(finetune_argv("SST-2", glue_dir, ckpt, epochs=1))
    assert result.evaluations and 0.0 <= result.evaluations[-1][1]["accuracy"] <= 1.0


def test_two_rank_evaluation_scores_every_example_once(glue_dir, pretrained, tmp_path):
    results = tmp_path / "results.json"
    argv = finetune_argv("QNLI", glue_dir, pretrained, epochs=1, micro_batch_size=7, global_batch_size=14,
                         results_path=results)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tasks" / "main.py"), *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dev = json.loads(results.read_text())["evaluations"][0]["dev"]["dev.tsv"]
    assert dev["total"] == rows(glue_dir / "QNLI" / "dev.tsv")  # 120 rows over 2 ranks x micro-batch 7: none lost
    assert dev["correct"] <= dev["total"]


def test_bad_input_is_one_error_line(glue_dir, pretrained, tmp_path):
    def error(argv: list[str]) -> str:
        proc = subprocess.run([sys.executable, str(REPO / "tasks" / "main.py"), *argv], cwd=REPO,
                              env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr[-2000:]
        return errors[0]

    assert "--epochs is required" in error(finetune_argv("RTE", glue_dir, pretrained, epochs=None))
    assert "a RTE test file (no labels)" in error(
        finetune_argv("RTE", glue_dir, pretrained, train_data=glue_dir / "RTE" / "test.tsv"))
    assert "--hidden-size 64 differs from" in error(finetune_argv("RTE", glue_dir, pretrained, hidden_size=64))
    assert "invalid choice: 'GLUE'" in error(finetune_argv("GLUE", glue_dir, pretrained))


def _race_dir(root: Path, n_articles: int, seed: int) -> Path:
    """Megatron's RACE layout: <root>/high/<n>.txt JSON articles with 4 options per question (real sentences of the
    shipped corpus: the answer is the option taken from the article)."""
    import gzip
    import random

    from conftest import CORPUS

    rng = random.Random(seed)
    texts = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            words = json.loads(line)["text"].split()
            if len(words) > 60:
                texts.append(words)
            if len(texts) >= 4 * n_articles:
                break
    (root / "high").mkdir(parents=True)
    for i in range(n_articles):
        article = texts[i]
        answer = rng.randrange(4)
        options = [" ".join(rng.choice(texts[n_articles:])[:8]) for _ in range(4)]
        options[answer] = " ".join(article[10:18])
        doc = {"article": " ".join(article[:60]), "questions": ["Which words does the text contain?"],
               "options": [options], "answers": ["ABCD"[answer]], "id": f"{i}.txt"}
        (root / "high" / f"{i}.txt").write_text(json.dumps(doc), encoding="utf-8")
    return root


def test_race_multiple_choice_scores_every_question(pretrained, tmp_path):
    from tasks.main import main

    train, dev = _race_dir(tmp_path / "train", 48, 1), _race_dir(tmp_path / "dev", 21, 2)
    results = tmp_path / "race.json"
    argv = ["--task", "RACE", "--train-data", str(train), "--valid-data", str(dev), "--pretrained-checkpoint",
            str(pretrained), "--epochs", "1", "--seq-length", "64", "--micro-batch-size", "4",
            "--global-batch-size", "8", "--lr", "1e-4", "--lr-warmup-fraction", "0.1", "--num-workers", "0",
            "--results-path", str(results)]
    result = main(argv)
    assert result.state.iteration == 48 // 8
    dev_metrics = json.loads(results.read_text())["evaluations"][0]["dev"]["dev"]
    assert dev_metrics["total"] == 21 and 0 <= dev_metrics["correct"] <= 21


def test_checkpoint_without_binary_head_finetunes(bert_data_prefix, glue_dir, tmp_path):
    from megatron.cli import pretrain_from_argv
    from megatron.specs.bert import BERT_SPEC
    from tasks.main import main

    ckpt = tmp_path / "nobh"
    pretrain_from_argv(BERT_SPEC, bert_argv(bert_data_prefix, train_iters=2, lr_warmup_iters=0,
                                            bert_no_binary_head=True, save=ckpt))
    result = main(finetune_argv("SST-2", glue_dir, ckpt, epochs=1))
    assert result.evaluations and "accuracy" in result.evaluations[-1][1]
