"""The CLI: Megatron flag names/defaults, the config bridge, and one clear error per invalid combination."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from megatron.arguments import parse_args, validate_args
from megatron.config import ConfigError, RunConfig, build_configs
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from megatron.data.validation import check_token_ids, data_prefixes
from megatron.data_efficiency.config import DataEfficiencyConfig, parse_deepspeed_config
from megatron.specs.gpt import validate_data

TOKENIZER = SimpleNamespace(padded_vocab_size=128, eod=0)  # the tokenizer as build_configs/validate_data read it


def make_data(tmp_path: Path, max_id: int = 100, name: str = "toy") -> str:
    prefix = str(tmp_path / name)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    rng = np.random.default_rng(0)
    for _ in range(20):
        builder.add_item(rng.integers(0, max_id, size=50))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


def argv(prefix: str, *extra: str, **flags: object) -> list[str]:
    base = {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 16,
            "micro_batch_size": 2, "global_batch_size": 8, "train_iters": 10, "lr": 1e-3, "data_path": prefix}
    base.update(flags)
    out: list[str] = []
    for key, value in base.items():
        if value is None:
            continue
        out += ["--" + key.replace("_", "-"), str(value)]
    return out + list(extra)


def check(args_list: list[str], world_size: int = 1, tokenizer: SimpleNamespace = TOKENIZER) -> RunConfig:
    """The whole check path of megatron.cli.configure: flags, then the JSON and typed configs, then the data."""
    args = parse_args(args_list)
    validate_args(args, world_size)
    config = build_configs(args, tokenizer, world_size)
    validate_data(config, tokenizer)
    return config


def error_of(args_list: list[str], world_size: int = 1, tokenizer: SimpleNamespace = TOKENIZER) -> str:
    with pytest.raises(ConfigError) as info:
        check(args_list, world_size, tokenizer)
    message = str(info.value)
    assert "\n" not in message
    return message


def write_json(tmp_path: Path, data: dict, name: str = "ds.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_megatron_defaults_and_dests(tmp_path):
    args = parse_args(argv(make_data(tmp_path)))
    assert (args.lr_decay_style, args.min_lr, args.weight_decay, args.adam_beta2, args.adam_eps) == (
        "linear", 0.0, 0.01, 0.999, 1e-8)
    assert (args.log_interval, args.eval_interval, args.eval_iters, args.split, args.seed) == (
        100, 1000, 100, "969, 30, 1", 1234)
    assert (args.make_vocab_size_divisible_by, args.num_workers, args.data_impl) == (128, 2, "infer")
    assert (args.masked_softmax_fusion, args.bias_gelu_fusion, args.log_learning_rate_to_tensorboard) == (
        True, True, True)
    args = parse_args(argv(make_data(tmp_path), "--override-opt_param-scheduler", "--no-masked-softmax-fusion",
                           "--use-flash-attn", "--deepspeed", "--local_rank=0", "--no-pipeline-parallel",
                           "--checkpoint-activations", "--deepspeed-activation-checkpointing",
                           "--tensorboard-queue-size", "1", "--log-timers-to-tensorboard"))
    assert args.override_opt_param_scheduler and not args.masked_softmax_fusion and args.use_flash_attn_v1
    assert args.deepspeed and args.local_rank == 0 and args.no_pipeline_parallel
    assert args.extra_arg_dests == []


def test_extra_args_provider_values_reach_config(tmp_path):
    def extra(parser):
        parser.add_argument("--my-flag", type=int, default=3)
        return parser

    args = parse_args(argv(make_data(tmp_path), "--my-flag", "7"), extra_args_provider=extra)
    assert args.extra_arg_dests == ["my_flag"]
    assert build_configs(args, TOKENIZER, 1).extra == {"my_flag": 7}


def test_bridge_builds_typed_configs(tmp_path):
    args = parse_args(argv(make_data(tmp_path), "--bf16", "--lr-warmup-iters", "2", "--clip-grad", "0.5",
                           "--position-embedding-type", "rotary", train_iters=10))
    validate_args(args, 2)
    cfg = build_configs(args, TOKENIZER, 2)
    assert isinstance(cfg, RunConfig)
    assert cfg.model.padded_vocab_size == 128 and cfg.model.position_embedding_type == "rope"
    assert (cfg.training.num_micro_batches, cfg.training.data_parallel_size, cfg.training.train_samples) == (2, 2, 80)
    assert (cfg.schedule.lr_warmup_steps, cfg.schedule.lr_decay_steps) == (16, 80)  # in samples
    assert cfg.data.train_valid_test_num_samples == (80, 800, 800)
    ds = cfg.deepspeed
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (8, 2, 2)
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_optimization"]["stage"] == 0
    assert json.loads(json.dumps(cfg.args_snapshot))["lr"] == 1e-3


def test_train_tokens_only_and_sample_based_schedule(tmp_path):
    args = parse_args(argv(make_data(tmp_path), "--train-tokens", "1000", "--lr-warmup-samples", "8", train_iters=None))
    validate_args(args, 1)
    cfg = build_configs(args, TOKENIZER, 1)
    # ceil(1000 / 16) = 63 samples, rounded up to whole global batches of 8 -> 64
    assert (cfg.training.train_iters, cfg.training.train_samples, cfg.training.train_tokens) == (None, 64, 1000)
    assert (cfg.schedule.lr_warmup_steps, cfg.schedule.lr_decay_steps) == (8, 64)


def test_train_samples_schedule_uses_the_sample_flags(tmp_path):
    args = parse_args(argv(make_data(tmp_path), "--train-samples", "48", "--lr-decay-samples", "96",
                           "--lr-warmup-samples", "16", train_iters=None))
    validate_args(args, 1)
    cfg = build_configs(args, TOKENIZER, 1)
    assert cfg.training.train_samples == 48
    assert (cfg.schedule.lr_warmup_steps, cfg.schedule.lr_decay_steps, cfg.schedule.wd_incr_steps) == (16, 96, 48)


def test_json_is_reconciled_and_data_efficiency_blocks_removed(tmp_path):
    js = write_json(tmp_path, {
        "train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "gradient_clipping": 0.7,
        "zero_optimization": {"stage": 1, "reduce_bucket_size": 1000}, "bf16": {"enabled": False},
        "curriculum_learning": {"enabled": False}, "data_efficiency": {"enabled": True, "seed": 5},
    })
    args = parse_args(argv(make_data(tmp_path), "--deepspeed", "--deepspeed_config", js, micro_batch_size=None,
                           global_batch_size=None))
    validate_args(args, 1)
    cfg = build_configs(args, TOKENIZER, 1)
    assert (cfg.training.micro_batch_size, cfg.training.global_batch_size, cfg.training.num_micro_batches) == (2, 8, 4)
    assert cfg.optimizer.clip_grad == 0.7 and cfg.training.zero_stage == 1
    assert "data_efficiency" not in cfg.deepspeed and "curriculum_learning" not in cfg.deepspeed
    assert cfg.deepspeed["zero_optimization"] == {"stage": 1, "reduce_bucket_size": 1000}
    assert cfg.data_efficiency.settings.data_efficiency == DataEfficiencyConfig(enabled=True, seed=5)
    assert not cfg.data_efficiency.settings.legacy_curriculum.enabled and not cfg.data_efficiency.any_enabled


@pytest.mark.parametrize("flags, json_data, expected", [
    ({"global_batch_size": 16}, {"train_batch_size": 8}, "--global-batch-size 16 contradicts \"train_batch_size\": 8"),
    ({"micro_batch_size": 4}, {"train_micro_batch_size_per_gpu": 2}, "--micro-batch-size 4 contradicts"),
    ({"zero_stage": 2}, {"zero_optimization": {"stage": 1}}, "--zero-stage 2 contradicts \"zero_optimization.stage\": 1"),
    ({"clip_grad": 1.0}, {"gradient_clipping": 0.5}, "--clip-grad 1.0 contradicts \"gradient_clipping\": 0.5"),
    ({}, {"bf16": {"enabled": True}}, "--bf16 is not given but \"bf16.enabled\" is true"),
    ({}, {"gradient_accumulation_steps": 3}, "\"gradient_accumulation_steps\": 3"),
    ({}, {"scheduler": {"type": "WarmupLR"}}, "remove the \"scheduler\" block"),
    ({"lr": 1e-3}, {"optimizer": {"type": "AdamW", "params": {"lr": 5e-4}}}, "--lr 0.001 contradicts"),
])
def test_json_contradicting_flags_names_both(tmp_path, flags, json_data, expected):
    js = write_json(tmp_path, json_data)
    message = error_of(argv(make_data(tmp_path), "--deepspeed_config", js, **flags))
    assert expected in message and js in message


@pytest.mark.parametrize("extra, flags, world, expected", [
    ((), {"global_batch_size": 7}, 1, "--global-batch-size 7 is not divisible by --micro-batch-size 2 x "
                                      "data-parallel size 1 (= 2)"),
    ((), {"global_batch_size": 8}, 3, "--global-batch-size 8 is not divisible by --micro-batch-size 2 x "
                                      "data-parallel size 3 (= 6)"),
    ((), {"train_iters": None}, 1, "no training budget: give --train-iters, --train-samples or --train-tokens"),
    (("--train-samples", "80"), {}, 1, "give only one of --train-iters and --train-samples"),
    (("--lr-decay-samples", "80"), {}, 1, "--lr-decay-samples needs --train-samples"),
    (("--lr-warmup-fraction", "0.1", "--lr-warmup-iters", "2"), {}, 1, "give only one of --lr-warmup-fraction"),
    (("--lr-warmup-fraction", "1.5"), {}, 1, "--lr-warmup-fraction must be in [0, 1], got 1.5"),
    ((), {"lr": None}, 1, "--lr is required"),
    (("--min-lr", "0.01"), {}, 1, "--min-lr 0.01 is larger than --lr 0.001"),
    ((), {"micro_batch_size": None}, 1, "--micro-batch-size is required"),
    ((), {"seq_length": None}, 1, "--seq-length is required"),
    ((), {"hidden_size": 30}, 1, "--hidden-size 30 is not divisible by --num-attention-heads 4"),
    (("--max-position-embeddings", "8"), {}, 1, "--max-position-embeddings 8 is smaller than --seq-length 16"),
    (("--fp16",), {}, 1, "--fp16 is not supported on CPU"),
    (("--fp16", "--bf16"), {}, 1, "give only one of --fp16 and --bf16"),
    (("--tensor-model-parallel-size", "2"), {}, 2, "tensor parallelism is not supported"),
    (("--pipeline-model-parallel-size", "2"), {}, 2, "pipeline parallelism is not supported"),
    (("--rampup-batch-size", "4", "4", "100"), {}, 1, "--rampup-batch-size is not supported"),
    (("--deepspeed_config", "/nonexistent/ds.json"), {}, 1, "--deepspeed_config /nonexistent/ds.json: file not found"),
    # (the flag-only rule "add --no-pipeline-parallel" comes first: test_data_efficiency_switches_must_match_json)
    (("--data-efficiency-curriculum-learning", "--no-pipeline-parallel"), {}, 1,
     "--data-efficiency-curriculum-learning needs --deepspeed_config with "
     "data_efficiency.data_sampling.curriculum_learning.enabled: true"),
    (("--random-ltd", "--no-pipeline-parallel"), {}, 1,
     "--random-ltd needs --deepspeed_config with data_efficiency.data_routing.random_ltd"),
    (("--load-tag", "x"), {}, 1, "--load-tag needs --load"),
])
def test_invalid_combinations_give_one_clear_error(tmp_path, extra, flags, world, expected):
    assert expected in error_of(argv(make_data(tmp_path), *extra, **flags), world)


def test_missing_data_is_named(tmp_path):
    prefix = str(tmp_path / "nope_text_document")
    assert f"--data-path {prefix}: {prefix}.bin not found" in error_of(argv(prefix))
    assert "--data-path is required" in error_of(argv(None))
    assert "not a non-negative blending weight" in error_of(argv(make_data(tmp_path)) + [make_data(tmp_path, name="b")])


def test_blend_prefixes_are_each_checked(tmp_path):
    a, b = make_data(tmp_path, name="a"), make_data(tmp_path, name="b")
    assert data_prefixes(["0.3", a, "0.7", b]) == [a, b]
    check(argv(a)[:-2] + ["--data-path", "0.3", a, "0.7", b])
    message = error_of(argv(a)[:-2] + ["--data-path", "0.3", a, "0.7", str(tmp_path / "c")])
    assert f"--data-path {tmp_path / 'c'}: {tmp_path / 'c'}.bin not found" in message


def test_token_ids_beyond_padded_vocab(tmp_path):
    prefix = make_data(tmp_path, max_id=300)  # ids up to 299 > padded vocab 128
    message = error_of(argv(prefix), 1)  # validate_data checks the ids against the tokenizer's padded vocab
    assert f"--data-path {prefix}: token id" in message and "outside the padded vocabulary [0, 128)" in message
    check(argv(prefix), 1, SimpleNamespace(padded_vocab_size=384, eod=0))
    check_token_ids([prefix], 300)  # fits once the vocabulary is large enough
    check_token_ids([prefix], 70000)  # uint16 ids can never reach 70000: no scan needed


def test_data_efficiency_switches_must_match_json(tmp_path):
    seqlen = {"index_to_sample_path": "unused", "index_to_metric_path": "unused", "difficulty_type": "value",
              "clustering_type": "single_cluster", "min_difficulty": 8, "max_difficulty": 16,
              "schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 8}}
    cl_json = {"data_efficiency": {"enabled": True, "data_sampling": {"enabled": True, "curriculum_learning": {
        "enabled": True, "curriculum_metrics": {"seqlen_truncate": seqlen}}}}}
    js = write_json(tmp_path, cl_json)
    assert "is true but --data-efficiency-curriculum-learning is not given" in error_of(
        argv(make_data(tmp_path), "--deepspeed_config", js))
    assert "add --no-pipeline-parallel" in error_of(
        argv(make_data(tmp_path), "--deepspeed_config", js, "--data-efficiency-curriculum-learning"))
    cfg = check(argv(make_data(tmp_path), "--deepspeed_config", js, "--data-efficiency-curriculum-learning",
                     "--no-pipeline-parallel"))
    assert cfg.data_efficiency.curriculum_learning and cfg.data_efficiency.any_enabled
    # the blocks are parsed once, into the typed settings the library reads
    assert cfg.data_efficiency.settings == parse_deepspeed_config(cl_json, js, num_layers=2, seq_length=16)
    assert cfg.data_efficiency.settings.data_efficiency.data_sampling.curriculum_learning.enabled
    assert cfg.data_efficiency.source == js
    assert "data_efficiency" not in cfg.deepspeed
    # build_configs parses the blocks before comparing them with the flags: a bad block is named as such
    bad = write_json(tmp_path, {"data_efficiency": {"data_sampling": {"curriculum_learning": {"enabled": True}}}},
                     "no_metrics.json")
    assert error_of(argv(make_data(tmp_path), "--deepspeed_config", bad)) == (
        f"{bad}: data_efficiency.data_sampling.curriculum_learning.curriculum_metrics: required when "
        "curriculum_learning is enabled")


def test_argparse_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv(make_data(tmp_path), "--lr-decay-style", "exponential"))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --lr-decay-style: invalid choice")
