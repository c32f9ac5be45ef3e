"""Tiny end-to-end BERT runs through pretrain_bert.py's spec on the one training core (CPU, seeded)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, bert_argv, subprocess_env


def run(argv: list[str], spec=None):
    from megatron.cli import pretrain_from_argv
    from megatron.specs.bert import BERT_SPEC

    return pretrain_from_argv(spec or BERT_SPEC, argv)


def test_loss_falls_log_shows_mlm_and_sop(bert_data_prefix, capsys):
    result = run(bert_argv(bert_data_prefix, train_iters=30, eval_interval=15, lr_warmup_iters=3))
    assert result.state.iteration == 30 and set(result.losses[0]) == {"lm loss", "sop loss"}
    lm = [s["lm loss"] for s in result.losses]
    assert sum(lm[-5:]) / 5 < sum(lm[:5]) / 5 - 0.5, lm
    assert [it for it, _ in result.evaluations] == [15, 30]
    assert set(result.evaluations[-1][1]) == {"lm loss", "sop loss", "mlm accuracy", "sop accuracy"}
    assert 0.0 < result.evaluations[-1][1]["mlm accuracy"] < 1.0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if " iteration       30/" in ln)
    assert "lm loss: " in line and "sop loss: " in line
    assert "validation loss at the end of training" in out and "sop loss PPL" in out
    assert "mlm accuracy value: " in out and "mlm accuracy PPL" not in out
    # no data efficiency: every sample counts --seq-length tokens (the pad trim changes the compute, not the budget)
    assert result.state.consumed_train_tokens == 30 * 8 * 64


def test_no_binary_head_and_token_masking(bert_data_prefix):
    result = run(bert_argv(bert_data_prefix, train_iters=3, bert_no_binary_head=True, masking_style="token"))
    assert set(result.losses[0]) == {"lm loss"}


def test_resume_equals_uninterrupted(bert_data_prefix, tmp_path):
    common = dict(train_iters=6, attention_dropout=0.1, hidden_dropout=0.1, eval_interval=3)
    full = run(bert_argv(bert_data_prefix, **common))
    part = run(bert_argv(bert_data_prefix, save=tmp_path / "c", exit_interval=3, **common))
    resumed = run(bert_argv(bert_data_prefix, load=tmp_path / "c", save=tmp_path / "c", **common))
    assert part.iterations == [1, 2, 3] and resumed.iterations == [4, 5, 6]
    assert resumed.losses == full.losses[3:]  # bitwise: masking, SOP swaps and dropout all resume exactly
    assert resumed.lrs == full.lrs[3:]


def test_dynamic_pad_trim_leaves_the_loss_unchanged(bert_data_prefix):
    """Only padding is removed: the MLM + SOP loss of a batch is the same with and without the trim."""
    from megatron.cli import configure
    from megatron.data.data_samplers import collate_samples
    from megatron.specs.bert import BERT_SPEC

    config, tokenizer = configure(BERT_SPEC, bert_argv(bert_data_prefix, train_iters=1, lr_warmup_iters=0, seq_length=128,
                                                      max_position_embeddings=128))
    torch.manual_seed(0)
    model = BERT_SPEC.build_model(config).eval()
    train, _, _ = BERT_SPEC.build_datasets(config, tokenizer)
    samples = [train[i] for i in range(64)]
    samples.sort(key=lambda s: int(s["padding_mask"].sum()))  # the 4 shortest: a batch that leaves padding
    batch = collate_samples(samples[:4])
    trimmed = BERT_SPEC.batch_layout.make_post_process(128)(batch, {"current_difficulties": {}})
    assert trimmed["text"].shape[1] < 128 and trimmed["text"].shape[1] % 8 == 0  # the corpus leaves padding
    assert int(batch["padding_mask"][:, trimmed["text"].shape[1]:].sum()) == 0  # nothing but pads was cut
    with torch.no_grad():
        full_loss, full_metrics = BERT_SPEC.forward_step(batch, model, config)
        cut_loss, cut_metrics = BERT_SPEC.forward_step(trimmed, model, config)
    torch.testing.assert_close(cut_loss, full_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cut_metrics["sop loss"], full_metrics["sop loss"], rtol=1e-5, atol=1e-6)


def _ltd_json(tmp_path, *, layers: int, ids: list[int], lo: int, hi: int, require: int, truncate=None) -> str:
    de: dict = {"enabled": True, "seed": 1234, "data_routing": {"enabled": True, "random_ltd": {
        "enabled": True, "total_layer_num": layers, "random_ltd_layer_num": len(ids), "random_ltd_layer_id": ids,
        "model_mask_name": "attention_mask", "model_type": "encoder", "hidden_state_order": "batch_seq_dim",
        "random_ltd_schedule": {"min_value": lo, "max_value": hi, "schedule_type": "fixed_linear",
                                "schedule_config": {"require_steps": require, "seq_per_step": 8}}}}}
    if truncate is not None:
        de["data_sampling"] = {"enabled": True, "num_workers": 0, "curriculum_learning": {
            "enabled": True, "data_cluster_path": str(tmp_path / "clusters"), "curriculum_metrics": {
                "seqlen_truncate": {"index_to_sample_path": "dummy", "index_to_metric_path": "dummy",
                                    "difficulty_type": "value", "clustering_type": "single_cluster",
                                    "min_difficulty": truncate[0], "max_difficulty": 64,
                                    "schedule_type": "fixed_linear", "schedule_config": {
                                        "total_curriculum_step": truncate[1], "difficulty_step": 8}}}}}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "data_efficiency": de}))
    return str(path)


def test_random_ltd_at_full_length_is_the_plain_model(bert_data_prefix, tmp_path):
    """Encoder-mode random-LTD with r >= S drops nothing: the same losses as the plain run."""
    plain = run(bert_argv(bert_data_prefix, train_iters=3, num_layers=3))
    js = _ltd_json(tmp_path, layers=3, ids=[1], lo=64, hi=64, require=4)
    ltd = run(bert_argv(bert_data_prefix, train_iters=3, num_layers=3, deepspeed_config=js, random_ltd=True,
                        no_pipeline_parallel=True))
    assert [s["lm loss"] for s in ltd.losses] == pytest.approx([s["lm loss"] for s in plain.losses], rel=1e-5)


def test_curriculum_and_random_ltd_compose_with_exact_token_accounting(bert_data_prefix, tmp_path):
    """seqlen_truncate 16 -> 64 and random-LTD 16 -> 64 on 1 of 3 layers: tokens = sum of (S(L-n)+r n)//L x G."""
    from megatron.inference import load_for_inference
    from megatron.model import BertModel
    from megatron.specs.bert import BERT_SPEC

    seen: list[int] = []
    layout = BERT_SPEC.batch_layout

    def hook(batch, sampler_state):
        out = layout.make_post_process(64)(batch, sampler_state)
        seen.append(int(out["text"].shape[1]))
        return out

    js = _ltd_json(tmp_path, layers=3, ids=[1], lo=16, hi=64, require=6, truncate=(16, 6))
    save = tmp_path / "ckpt"
    result = run(bert_argv(bert_data_prefix, train_iters=8, num_layers=3, deepspeed_config=js, random_ltd=True,
                           data_efficiency_curriculum_learning=True, no_pipeline_parallel=True, save=save,
                           log_interval=1), spec=dataclasses.replace(BERT_SPEC, data_post_process=hook))
    assert result.state.iteration == 8
    assert seen[0] < 64 and seen[-1] == 64 and seen == sorted(seen)  # the curriculum seqlen grows to --seq-length
    # replay spec §3.6 from what the model saw: the step's (last micro-batch's) curriculum seqlen, and the r that
    # random-LTD used for step k (after k completed steps)
    from types import SimpleNamespace

    from megatron.data_efficiency.accounting import actual_seq_length
    from megatron.data_efficiency.random_ltd_schedule import reserved_length_at

    schedule = SimpleNamespace(min_value=16, max_value=64, require_steps=6, seq_per_step=8)
    total = 0
    for k in range(8):
        cs = seen[2 * k + 1]  # 2 micro-batches per step
        total += 8 * actual_seq_length(64, cs, reserved_length_at(k, schedule), 3, 1)
    assert result.state.consumed_train_tokens == total
    loaded = load_for_inference(str(save))
    assert type(loaded.model) is BertModel and loaded.spec.name == "bert"


def test_two_process_gloo_matches_one_process(bert_data_prefix):
    one = run(bert_argv(bert_data_prefix, train_iters=3, micro_batch_size=2, global_batch_size=8))
    argv = bert_argv(bert_data_prefix, train_iters=3, micro_batch_size=2, global_batch_size=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "pretrain_bert.py"), *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if " iteration " in ln and "lm loss: " in ln]
    lm = [float(ln.split("lm loss: ")[1].split(" |")[0]) for ln in lines]
    sop = [float(ln.split("sop loss: ")[1].split(" |")[0]) for ln in lines]
    assert lm == pytest.approx([s["lm loss"] for s in one.losses], abs=1e-5)
    assert sop == pytest.approx([s["sop loss"] for s in one.losses], abs=1e-5)


def test_bad_input_is_one_error_line(bert_data_prefix, gpt_data_prefix):
    def error(script: str, argv: list[str]) -> list[str]:
        proc = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]

    doc_level = error("pretrain_bert.py", bert_argv(gpt_data_prefix, train_iters=1, lr_warmup_iters=0, tokenizer_type="GPT2BPETokenizer",
                                                   vocab_file=str(REPO / "data/tokenizers/gpt2-bpe/vocab.json"),
                                                   merge_file=str(REPO / "data/tokenizers/gpt2-bpe/merges.txt")))
    assert len(doc_level) == 1 and "has no [CLS] token" in doc_level[0]
    assert error("pretrain_bert.py", bert_argv(bert_data_prefix, train_iters=1, lr_warmup_iters=0, mask_prob=1.5)) == [
        "error: --mask-prob must be in [0, 1], got 1.5"]
    # a BERT-only flag is not silently accepted by the GPT entry point
    gpt_err = error("pretrain_gpt.py", bert_argv(bert_data_prefix, train_iters=1, lr_warmup_iters=0, mask_prob=0.2))
    assert len(gpt_err) == 1 and "unrecognized arguments: --mask-prob 0.2" in gpt_err[0]


def test_analyzed_seqlen_vocab_rarity_curriculum_with_random_ltd(bert_data_prefix, tmp_path, capsys):
    """The BERT workflow of the recipes on a copy of the corpus: analyze 2 exact epochs (total_vocab_freq then
    seqlen_vocab_rarity), pin the samples mapping, train with the curriculum sampler + encoder random-LTD; every
    sample the model sees is within the difficulty of its step; the checkpoint loads into a plain BertModel."""
    import importlib.util
    import shutil

    import numpy as np

    from megatron.inference import load_for_inference
    from megatron.model import BertModel
    from megatron.specs.bert import BERT_SPEC

    prefix = str(tmp_path / "docs_text_sentence")
    for ext in (".bin", ".idx"):
        shutil.copy(bert_data_prefix + ext, prefix + ext)
    spec = importlib.util.spec_from_file_location("_analyze_data_bert", REPO / "examples_deepspeed" /
                                                  "data_efficiency" / "analyze_data.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    save = str(tmp_path / "analysis")
    common = ["--data-path", prefix, "--data-impl", "mmap", "--tokenizer-type", "BertWordPieceLowerCase",
              "--vocab-file", str(REPO / "data/tokenizers/bert-wordpiece/vocab.txt"), "--split", "949,50,1",
              "--seed", "1234", "--seq-length", "64", "--max-position-embeddings", "64", "--num-layers", "1",
              "--hidden-size", "1", "--num-attention-heads", "1", "--micro-batch-size", "1",
              "--global-batch-size", "1000", "--train-data-exact-num-epochs", "2", "--return-data-index"]
    assert cli.main(["--analyzing-task", "map_reduce", "--analyzing-data-type", "BERT", "--analyzing-metric",
                     "total_vocab_freq", "seqlen_vocab_rarity", "--analyzing-num-threads", "1", "--save", save,
                     *common]) == 0
    mapping = f"{prefix}_train_indexmap_exact2ep_61msl_0.10ssp_1234s.npy"
    assert np.load(mapping).shape[1] == 3
    metric_dir = f"{save}/seqlen_vocab_rarity"
    js = tmp_path / "ds.json"
    js.write_text(json.dumps({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "data_efficiency": {
        "enabled": True, "seed": 1234,
        "data_sampling": {"enabled": True, "num_workers": 0, "curriculum_learning": {
            "enabled": True, "data_cluster_path": str(tmp_path / "clusters"), "curriculum_metrics": {
                "seqlen_vocab_rarity": {
                    "index_to_sample_path": f"{metric_dir}/seqlen_vocab_rarity_index_to_sample_percentile_merged",
                    "index_to_metric_path": f"{metric_dir}/seqlen_vocab_rarity_index_to_metric",
                    "difficulty_type": "percentile", "clustering_type": "schedule_based", "min_difficulty": 10,
                    "max_difficulty": 100, "schedule_type": "fixed_linear",
                    "schedule_config": {"total_curriculum_step": 6, "difficulty_step": 10}}}}},
        "data_routing": {"enabled": True, "random_ltd": {
            "enabled": True, "total_layer_num": 3, "random_ltd_layer_num": 1, "random_ltd_layer_id": [1],
            "model_mask_name": "attention_mask", "model_type": "encoder", "hidden_state_order": "batch_seq_dim",
            "random_ltd_schedule": {"min_value": 16, "max_value": 64, "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": 6, "seq_per_step": 8}}}}}}))
    difficulties: list[dict] = []
    layout = BERT_SPEC.batch_layout

    def hook(batch, sampler_state):
        difficulties.append(dict(sampler_state["current_difficulties"]))
        return layout.make_post_process(64)(batch, sampler_state)

    save_ckpt = tmp_path / "ckpt"
    result = run(bert_argv(prefix, train_iters=6, num_layers=3, deepspeed_config=js, random_ltd=True,
                           data_efficiency_curriculum_learning=True, no_pipeline_parallel=True,
                           train_data_exact_num_epochs=2, train_idx_path=mapping, save=save_ckpt, eval_iters=1),
                 spec=dataclasses.replace(BERT_SPEC, data_post_process=hook))
    assert result.state.iteration == 6 and all(np.isfinite(s["lm loss"]) for s in result.losses)
    steps = [d["seqlen_vocab_rarity"] for d in difficulties]
    assert steps == sorted(steps) and steps[0] < 100 and steps[-1] == 100  # easiest percentiles first
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if " iteration        6/" in ln)
    for field in ("lm loss: ", "sop loss: ", "difficulty seqlen_vocab_rarity: ", "random ltd reserved length: ",
                  "layer tokens: ", "actual seqlen: "):
        assert field in line, (field, line)
    loaded = load_for_inference(str(save_ckpt))
    assert type(loaded.model) is BertModel
