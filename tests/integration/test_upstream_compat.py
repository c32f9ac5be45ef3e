"""Upstream Megatron-DeepSpeed's data-efficiency recipe command lines, run as a user bringing them would.

Each entry point's COMPLETE flag set, as upstream's examples_deepspeed/data_efficiency scripts pass it (GPT
pretraining base script, the analysis map/reduce scripts, BERT pretraining base script, GLUE finetuning, the eval
harness), is written here as data; only the values are shrunk (a tiny model, a few steps) and the precision is the
CPU's (upstream's --fp16 becomes fp32). Every run goes through our real CLI (``main(argv)`` of each entry point),
and the TensorBoard files are read back with TensorBoard's own reader under upstream's tags.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from conftest import MERGES, REPO, VOCAB, WORDPIECE, _load_tool

SEQ, GBS, MBS, LAYERS = 32, 8, 4, 3
STEPS = 3
TRAIN_TOKENS = STEPS * GBS * SEQ


def upstream_ds_config(*, zero_stage: int, model_type: str, ltd: bool) -> dict:
    """Upstream's ds_config_{gpt,bert}_1clmetric_TEMPLATE.json with its placeholders filled as the base scripts fill
    them (random-LTD on every layer but the last: upstream's ids plus the first layer, which it also accepts; CL off
    with the dummy metric), fp16 switched off (CPU)."""
    return {
        "train_batch_size": GBS, "train_micro_batch_size_per_gpu": MBS, "steps_per_print": 1,
        "zero_optimization": {"stage": zero_stage}, "gradient_clipping": 1.0, "prescale_gradients": zero_stage == 0,
        "fp16": {"enabled": False, "loss_scale": 0, "loss_scale_window": 500, "hysteresis": 2, "min_loss_scale": 1,
                 "initial_scale_power": 11},
        "wall_clock_breakdown": False, "dataloader_drop_last": True,
        "data_efficiency": {
            "enabled": True, "seed": 1234,
            "data_routing": {"enabled": ltd, "random_ltd": {
                "enabled": ltd, "total_layer_num": LAYERS, "random_ltd_layer_num": LAYERS - 1,
                "random_ltd_layer_id": list(range(LAYERS - 1)), "model_mask_name": "attention_mask",
                "model_type": model_type, "hidden_state_order": "seq_batch_dim",
                "random_ltd_schedule": {"min_value": SEQ // 2, "max_value": SEQ, "schedule_type": "fixed_linear",
                                        "schedule_config": {"require_steps": 2, "seq_per_step": 16}}}},
            "data_sampling": {"enabled": False, "num_workers": 0, "curriculum_learning": {
                "enabled": False, "data_cluster_path": "dummy", "curriculum_metrics": {"dummy": {
                    "index_to_sample_path": "dummy", "index_to_metric_path": "dummy", "difficulty_type": "value",
                    "clustering_type": "single_cluster", "min_difficulty": SEQ, "max_difficulty": SEQ,
                    "schedule_type": "fixed_root",
                    "schedule_config": {"total_curriculum_step": 1, "difficulty_step": 1, "root_degree": 1}}}}},
        },
    }


def write_json(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def gpt_pretrain_flags(data: str, ckpt: Path, tb: Path, ds_json: str) -> list[str]:
    """ds_pretrain_gpt_1.3B_dense_base_script.sh: megatron_options (+ activation checkpointing, optimizer-state
    logging, random-LTD), data_options, deepspeed_options. --save-interval is what the script computes for a short
    run (train_tokens / seq / gbs / 100 = 0); --lr-warmup-tokens is its fixed 3000M, beyond the decay."""
    return [
        "--override-opt_param-scheduler", "--adam-beta1", "0.9", "--adam-beta2", "0.95",
        "--tensor-model-parallel-size", "1", "--init-method-std", "0.013",
        "--lr-decay-tokens", str(TRAIN_TOKENS), "--lr-warmup-tokens", str(3000 * 1000000),
        "--micro-batch-size", str(MBS), "--exit-duration-in-mins", "30000000", "--global-batch-size", str(GBS),
        "--num-layers", str(LAYERS), "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", str(SEQ),
        "--max-position-embeddings", str(SEQ), "--train-tokens", str(TRAIN_TOKENS), "--train-samples", str(20 * GBS),
        "--lr", "2.0e-4", "--min-lr", "1.0e-6", "--lr-decay-style", "cosine", "--split", "949,50,1",
        "--log-interval", "1", "--eval-interval", "2", "--eval-iters", "1",
        "--save-interval", str(TRAIN_TOKENS // SEQ // GBS // 100), "--weight-decay", "0.1", "--clip-grad", "1.0",
        "--hysteresis", "2", "--num-workers", "0", "--seed", "1234", "--load", str(ckpt), "--save", str(ckpt),
        "--tensorboard-queue-size", "1", "--log-timers-to-tensorboard", "--log-batch-size-to-tensorboard",
        "--log-validation-ppl-to-tensorboard", "--tensorboard-dir", str(tb),
        "--checkpoint-activations", "--log-optimizer-states-to-tensorboard", "--random-ltd",
        "--vocab-file", str(VOCAB), "--merge-file", str(MERGES), "--data-path", data, "--data-impl", "mmap",
        "--deepspeed", "--deepspeed_config", ds_json, "--zero-stage", "1", "--pipeline-model-parallel-size", "1",
        "--no-pipeline-parallel", "--deepspeed-activation-checkpointing",
    ]


def analysis_flags(task: str, metric: str, data: str, save: Path) -> list[str]:
    """ds_analyze_gpt_data_map.sh / ds_analyze_gpt_data_reduce.sh options."""
    extra = ["--analyzing-worker-id", "0"] if task == "map" else ["--analyzing-num-threads-reduce", "1"]
    return [
        "--analyzing-task", task, "--analyzing-data-type", "GPT", "--analyzing-metric", metric,
        "--analyzing-num-workers", "1", *extra, "--analyzing-num-threads", "1",
        "--vocab-file", str(VOCAB), "--merge-file", str(MERGES), "--data-path", data, "--data-impl", "mmap",
        "--tokenizer-type", "GPT2BPETokenizer", "--micro-batch-size", "100", "--global-batch-size", "100",
        "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ), "--num-layers", "1", "--hidden-size", "1",
        "--num-attention-heads", "1", "--split", "949,50,1", "--distributed-backend", "gloo",
        "--train-data-exact-num-epochs", "1", "--return-data-index", "--save-interval", "1", "--save", str(save),
    ]


def bert_pretrain_flags(data: str, ckpt: Path, tb: Path, ds_json: str) -> list[str]:
    """ds_pretrain_bert_336M_base_script.sh: megatron_options (+ optimizer-state logging, random-LTD with its
    dropout flags), data_options, deepspeed_options."""
    return [
        "--override-opt_param-scheduler", "--adam-beta1", "0.9", "--adam-beta2", "0.999",
        "--tensor-model-parallel-size", "1", "--init-method-std", "0.02", "--lr-decay-tokens", str(TRAIN_TOKENS),
        "--lr-warmup-iters", "1", "--micro-batch-size", str(MBS), "--exit-duration-in-mins", "30000000",
        "--global-batch-size", str(GBS), "--num-layers", str(LAYERS), "--hidden-size", "32",
        "--num-attention-heads", "4", "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
        "--train-tokens", str(TRAIN_TOKENS), "--train-iters", "40", "--lr", "1e-4", "--min-lr", "1e-5",
        "--lr-decay-style", "linear", "--split", "949,50,1", "--log-interval", "1", "--eval-interval", "2",
        "--eval-iters", "1", "--save-interval", str(TRAIN_TOKENS // SEQ // GBS // 100), "--weight-decay", "1e-2",
        "--clip-grad", "1.0", "--num-workers", "0", "--seed", "1234", "--load", str(ckpt), "--save", str(ckpt),
        "--tensorboard-queue-size", "1", "--log-timers-to-tensorboard", "--log-batch-size-to-tensorboard",
        "--log-validation-ppl-to-tensorboard", "--tensorboard-dir", str(tb), "--log-optimizer-states-to-tensorboard",
        "--attention-dropout", "0.0", "--hidden-dropout", "0.0", "--random-ltd",
        "--vocab-file", str(WORDPIECE), "--data-path", data, "--data-impl", "mmap",
        "--deepspeed", "--deepspeed_config", ds_json, "--zero-stage", "0", "--pipeline-model-parallel-size", "1",
        "--no-pipeline-parallel",
    ]


def finetune_flags(glue: Path, pretrained: Path, ckpt: Path, ds_json: str) -> list[str]:
    """ds_finetune_bert_mnli.sh options (the model shape repeated, as upstream passes it)."""
    return [
        "--finetune", "--deepspeed", "--deepspeed_config", ds_json, "--zero-stage", "0", "--task", "MNLI",
        "--seed", "1234", "--train-data", str(glue / "MNLI" / "train.tsv"),
        "--valid-data", str(glue / "MNLI" / "dev_matched.tsv"), str(glue / "MNLI" / "dev_mismatched.tsv"),
        "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(WORDPIECE), "--epochs", "1",
        "--pretrained-checkpoint", str(pretrained), "--tensor-model-parallel-size", "1",
        "--pipeline-model-parallel-size", "1", "--num-layers", str(LAYERS), "--hidden-size", "32",
        "--num-attention-heads", "4", "--global-batch-size", str(GBS), "--micro-batch-size", str(MBS),
        "--lr", "5e-5", "--lr-decay-style", "linear", "--lr-warmup-fraction", "0.065", "--seq-length", str(SEQ),
        "--max-position-embeddings", str(SEQ), "--save-interval", "500000", "--save", str(ckpt),
        "--log-interval", "10", "--eval-interval", "100", "--eval-iters", "50", "--weight-decay", "1.0e-1",
        "--checkpoint-activations", "--deepspeed-activation-checkpointing", "--no-pipeline-parallel",
    ]


def eval_harness_flags(ckpt: Path, ds_json: str, tasks: str, results: Path, include: str) -> list[str]:
    """ds_evalharness_1gpu.sh command (its dummy model sizes -1 included) + --include_path/--limit for the
    offline task."""
    return [
        "--load", str(ckpt), "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1",
        "--moe-expert-parallel-size", "1", "--vocab-file", str(VOCAB), "--merge-file", str(MERGES),
        "--micro-batch-size", "4", "--no-load-optim", "--no-load-rng", "--inference", "--disable-moe-token-dropping",
        "--tokenizer-type", "GPT2BPETokenizer", "--adaptive_seq_len", "--eval_fp32", "--num_fewshot", "0",
        "--task_list", tasks, "--results_path", str(results), "--deepspeed", "--deepspeed_config", ds_json,
        "--num-layers", "-1", "--hidden-size", "-1", "--num-attention-heads", "-1", "--seq-length", "-1",
        "--max-position-embeddings", "-1", "--no-pipeline-parallel",
        "--include_path", include, "--limit", "2",
    ]


UPSTREAM_TRAINING_TAGS = (
    "steps-vs-samples/y=steps,x=samples", "steps-vs-samples/y=samples,x=steps",
    "steps-vs-tokens/y=steps,x=tokens", "steps-vs-tokens/y=tokens,x=steps",
    "learning-rate/learning-rate", "learning-rate/learning-rate vs samples", "learning-rate/learning-rate vs tokens",
    "batch-size/batch-size", "batch-size/batch-size vs samples", "lm-loss-training/lm loss",
    "lm-loss-training/lm loss vs samples", "lm-loss-training/lm loss vs tokens", "grad-norm/grad-norm",
    "iteration-time/iteration-time", "iteration-time/iteration-time vs samples",
    "lm-loss-validation/lm loss validation", "lm-loss-validation/lm loss validation vs tokens",
    "lm-loss-validation/lm loss validation ppl",
    "seqlen/actual_seq_length", "seqlen/random_ltd_reserved_length",
) + tuple(f"optimizer/{kind}_{stat}{axis}" for kind in ("momentum", "variance", "variance_sqrt", "weight")
          for stat in ("l1", "l2", "abs_max") for axis in ("", " vs tokens"))


def scalars(tb: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpt_run(gpt_data_prefix, tmp_path_factory):
    """pretrain_gpt.py with the GPT base script's flags; returns (result, dir, warnings)."""
    pretrain_gpt = load_script(REPO / "pretrain_gpt.py", "_upstream_pretrain_gpt")
    root = tmp_path_factory.mktemp("upstream_gpt")
    ds_json = write_json(root / "ds_config.json", upstream_ds_config(zero_stage=1, model_type="decoder", ltd=True))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("megatron").addHandler(handler)
    try:
        result = pretrain_gpt.main(gpt_pretrain_flags(gpt_data_prefix, root / "ckpt", root / "tb", ds_json))
    finally:
        logging.getLogger("megatron").removeHandler(handler)
    return result, root, [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def test_gpt_pretraining_recipe_flags(gpt_run):
    result, root, warnings = gpt_run
    n = result.state.iteration  # random-LTD counts fewer tokens per step: the token budget takes a step more
    assert n >= STEPS and result.state.consumed_train_tokens >= TRAIN_TOKENS
    # --save-interval 0: saved once, at the end
    assert sorted(p.name for p in (root / "ckpt").glob("global_step*")) == [f"global_step{n}"]
    # warmup (3000M tokens) >= decay: accepted; the LR only warms up
    assert any("--lr-warmup-tokens 3000000000 >= --lr-decay-tokens" in w for w in warnings), warnings
    assert result.lrs == sorted(result.lrs) and max(result.lrs) < 2.0e-4 * TRAIN_TOKENS / 3e9 * 1.01
    # random-LTD ids with the first layer: accepted with a warning; no-op flags say why
    assert any("includes layer 0, the first layer: accepted" in w for w in warnings), warnings
    assert any(w.startswith("--deepspeed-activation-checkpointing: accepted for Megatron-DeepSpeed compatibility; no "
                            "effect here because") for w in warnings), warnings


def test_gpt_pretraining_writes_upstream_tensorboard_tags(gpt_run):
    result, root, _ = gpt_run
    n = result.state.iteration
    tags = scalars(root / "tb")
    missing = [t for t in UPSTREAM_TRAINING_TAGS if t not in tags]
    assert not missing, (missing, sorted(tags))
    losses = [step["lm loss"] for step in result.losses]
    assert [v for _, v in tags["lm-loss-training/lm loss"]] == pytest.approx(losses, rel=1e-6)
    assert [s for s, _ in tags["steps-vs-tokens/y=steps,x=tokens"]] == [v for _, v in
                                                                        tags["steps-vs-tokens/y=tokens,x=steps"]]
    assert [v for _, v in tags["steps-vs-samples/y=samples,x=steps"]] == [GBS * (i + 1) for i in range(n)]
    assert [v for _, v in tags["batch-size/batch-size"]] == [GBS] * n
    assert [s for s, _ in tags["lm-loss-validation/lm loss validation"]] == [2, n]
    assert all(v > 0 for _, v in tags["optimizer/variance_sqrt_l1"])
    for (_, l2), (_, l1) in zip(tags["optimizer/variance_sqrt_l2"], tags["optimizer/variance_l1"]):
        assert l2 ** 2 == pytest.approx(l1, rel=1e-4)  # |sqrt(v)|_2^2 = |v|_1: the two are consistent


def test_analysis_recipe_flags(gpt_data_prefix, tmp_path):
    cli = load_script(REPO / "examples_deepspeed" / "data_efficiency" / "analyze_data.py", "_upstream_analyze")
    save = tmp_path / "analysis"
    for metric in ("total_vocab_freq", "vocab_rarity"):
        for task in ("map", "reduce"):
            assert cli.main(analysis_flags(task, metric, gpt_data_prefix, save)) == 0, (task, metric)
    assert (save / "vocab_rarity" / "vocab_rarity_index_to_sample.idx").is_file()


@pytest.fixture(scope="module")
def bert_run(bert_data_prefix, tmp_path_factory):
    pretrain_bert = load_script(REPO / "pretrain_bert.py", "_upstream_pretrain_bert")
    root = tmp_path_factory.mktemp("upstream_bert")
    ds_json = write_json(root / "ds_config.json", upstream_ds_config(zero_stage=0, model_type="encoder", ltd=True))
    result = pretrain_bert.main(bert_pretrain_flags(bert_data_prefix, root / "ckpt", root / "tb", ds_json))
    return result, root


def test_bert_pretraining_recipe_flags(bert_run):
    result, root = bert_run
    n = result.state.iteration  # random-LTD: the token budget takes a step more
    assert n >= STEPS and result.state.consumed_train_tokens >= TRAIN_TOKENS
    assert sorted(p.name for p in (root / "ckpt").glob("global_step*")) == [f"global_step{n}"]
    tags = scalars(root / "tb")
    for tag in ("lm-loss-training/lm loss", "lm-loss-training/sop loss", "lm-loss-validation/lm loss validation",
                "optimizer/momentum_l2", "optimizer/weight_abs_max vs tokens", "learning-rate/learning-rate"):
        assert tag in tags, (tag, sorted(tags))


def test_glue_finetuning_recipe_flags(bert_run, tmp_path):
    from tasks.main import main

    _, root = bert_run
    glue = tmp_path / "glue"
    assert _load_tool("make_glue_suite").main(["--output-dir", str(glue), "--tasks", "MNLI", "--train-size", "32",
                                               "--dev-size", "8", "--test-size", "2", "--seed", "7"]) in (0, None)
    ds_json = write_json(tmp_path / "ds_config.json", {
        "train_batch_size": GBS, "train_micro_batch_size_per_gpu": MBS, "steps_per_print": 10,
        "zero_optimization": {"stage": 0}, "gradient_clipping": 1.0, "prescale_gradients": True,
        "fp16": {"enabled": False, "loss_scale": 0, "loss_scale_window": 500, "hysteresis": 2, "min_loss_scale": 1,
                 "initial_scale_power": 11}, "wall_clock_breakdown": False})
    result = main(finetune_flags(glue, root / "ckpt", tmp_path / "finetuned", ds_json))
    assert result.state.iteration == 32 // GBS
    assert result.evaluations and "accuracy" in result.evaluations[-1][1]


def test_eval_harness_recipe_flags(gpt_run, tmp_path, caplog):
    from tasks.eval_harness import evaluate as harness

    _, root, _ = gpt_run
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in (
        "The module defines the following functions.", "Return the path of the directory.")))
    (tmp_path / "tiny_ppl.yaml").write_text(
        f"task: tiny_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'docs.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\nmetadata:\n  version: 1.0\n")
    ds_json = REPO / "examples_deepspeed" / "data_efficiency" / "gpt" / "eval" / "ds_config_eval_dummy.json"
    results = tmp_path / "tiny_ppl_0shot.json"
    with caplog.at_level(logging.WARNING):
        code = harness.main(eval_harness_flags(root / "ckpt", str(ds_json), "tiny_ppl", results, str(tmp_path)))
    assert code == 0
    doc = json.loads(results.read_text())
    assert doc["results"]["tiny_ppl"]["word_perplexity,none"] > 1.0
    for flag in ("--inference", "--no-load-optim", "--no-load-rng", "--disable-moe-token-dropping",
                 "--moe-expert-parallel-size 1", "--deepspeed:", "--deepspeed_config"):
        assert flag in caplog.text, (flag, caplog.text)
    # a model size other than -1 must be the checkpoint's
    assert harness.main(eval_harness_flags(root / "ckpt", str(ds_json), "tiny_ppl", results, str(tmp_path))
                        + ["--num-layers", "7"]) == 2
