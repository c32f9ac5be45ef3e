"""Every BERT pretraining recipe block parses against the real pretrain_bert.py CLI and data-efficiency parsers.

The BERT counterpart of test_recipes.py: each uncommentable block of
bert/pretrain/ds_pretrain_bert_336M_run.sh is switched on alone in a temporary copy and run with DRY_RUN=1. The
printed pretrain_bert.py command goes through the parser pretrain_bert.py uses (``parse_args`` with
``BERT_SPEC.extra_args`` + ``apply_args_defaults``; unknown flags fail), ``validate_args`` and ``build_configs``;
the generated JSON's data-efficiency blocks through ``parse_deepspeed_config``, the engine dict through
DeepSpeed's own config class, and the data-efficiency object is built with the BERT batch layout. Each block's
values are checked against the spec §7.3 table, and the recipe's analysis paths against what the BERT analysis
scripts write.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from megatron.arguments import apply_args_defaults, parse_args, validate_args
from megatron.config import build_configs, deepspeed_json
from megatron.data.bert_dataset import samples_mapping_filename
from megatron.data.dataset_utils import index_map_prefix
from megatron.data_efficiency.analyzer_io import metric_output_prefix
from megatron.data_efficiency.cluster import MetricIndex
from megatron.data_efficiency.config import parse_deepspeed_config
from megatron.specs.bert import BERT_SPEC, bert_options
from megatron.training.data_efficiency_hooks import ActiveDataEfficiency, NoDataEfficiency, build_data_efficiency
from megatron.training.state import TrainState
from test_recipes import (TOP_LEVEL_KEYS, _load_analyzer_cli, check_with_deepspeed, dry_run, run_script_blocks,
                          stub_analysis_outputs,
                          with_active_blocks)

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "examples_deepspeed" / "data_efficiency"
PRETRAIN = RECIPES / "bert" / "pretrain"
RUN = PRETRAIN / "ds_pretrain_bert_336M_run.sh"
BASE = PRETRAIN / "ds_pretrain_bert_336M_base_script.sh"
TEMPLATES = {1: PRETRAIN / "ds_config_bert_1clmetric_TEMPLATE.json",
             2: PRETRAIN / "ds_config_bert_2clmetrics_TEMPLATE.json"}
SEQ, GBS, MBS = 512, 1024, 16  # MBS: the recipe's default MICRO_BATCH_SIZE
TOKENIZER = SimpleNamespace(padded_vocab_size=30592)  # build_configs needs only this (BERT has no eod)

# Spec §7.3: title -> (lr, baseline iterations, random-LTD (start, steps) or None, [(metric, CL steps)]).
VOC, TRUNC, SVR, SEQLEN = "voc", "seqlen_truncate", "seqlenvocabrarity", "seqlen"
M = 10**6
SPEC_BLOCKS = {
    "Baseline, 1049B tokens (100%)": (1e-4, 2 * M, None, []),
    "Baseline, 703B tokens (67%)": (1.5e-4, 1_340_000, None, []),
    "Baseline, 524B tokens (50%)": (2e-4, 1 * M, None, []),
    "CL (voc + seqlen_truncate) + random-LTD, 1049B tokens (100%)": (1e-4, 2 * M, (128, 2 * M),
                                                                      [(VOC, 960_000), (TRUNC, 960_000)]),
    "CL (voc + seqlen_truncate) + random-LTD, 524B tokens (50%)": (2e-4, 1 * M, (128, 1 * M),
                                                                    [(VOC, 480_000), (TRUNC, 480_000)]),
    "random-LTD, 1049B tokens (100%)": (1e-4, 2 * M, (128, 2 * M), []),
    "random-LTD, 703B tokens (67%)": (1.5e-4, 1_340_000, (128, 1_340_000), []),
    "random-LTD, 524B tokens (50%)": (2e-4, 1 * M, (128, 1 * M), []),
    "CL voc + seqlen_truncate, 524B tokens (50%)": (2e-4, 1 * M, None, [(VOC, 480_000), (TRUNC, 480_000)]),
    "CL voc + seqlen_truncate, 703B tokens (67%)": (1.5e-4, 1_340_000, None, [(VOC, 640_000), (TRUNC, 640_000)]),
    "CL voc + seqlen_truncate, 1049B tokens (100%)": (1e-4, 2 * M, None, [(VOC, 960_000), (TRUNC, 960_000)]),
    'CL seqlen_vocab_rarity ("seqlen reorder" + voc), 1049B tokens (100%)': (1e-4, 2 * M, None, [(SVR, 960_000)]),
    "CL voc only, 1049B tokens (100%)": (1e-4, 2 * M, None, [(VOC, 960_000)]),
    "CL seqlen_truncate only, 1049B tokens (100%)": (1e-4, 2 * M, None, [(TRUNC, 960_000)]),
    'CL "seqlen reorder" (metric seqlen, single_cluster), 1049B tokens (100%)': (1e-4, 2 * M, None,
                                                                                 [(SEQLEN, 960_000)]),
}
# The one block upstream points at the plain (not _percentile_merged) vocab_rarity index.
UNMERGED_VOC_BLOCK = "CL voc + seqlen_truncate, 1049B tokens (100%)"
# Spec §7.3 metric notation: name -> (difficulty_type, clustering_type, min, max, difficulty_step, root,
# analysis metric whose files it reads or None).
METRICS = {
    VOC: ("percentile", "schedule_based", 5, 100, 1, 2.0, "vocab_rarity"),
    TRUNC: ("value", "single_cluster", 128, 512, 8, 1.0, None),
    SVR: ("percentile", "schedule_based", 5, 100, 1, 2.0, "seqlen_vocab_rarity"),
    SEQLEN: ("percentile", "single_cluster", 5, 100, 8, 2.0, "seqlen"),
}
ACTIVE_AS_SHIPPED = "CL (voc + seqlen_truncate) + random-LTD, 1049B tokens (100%)"

RUN_TEXT = RUN.read_text()
BLOCK_TITLES = [title for title, _ in run_script_blocks(RUN_TEXT)]


def recipe_copy(root: Path, run_text: str) -> Path:
    """A copy of the BERT recipe directory (run script replaced) under root, with root/pretrain_bert.py linked."""
    target = root / "examples_deepspeed" / "data_efficiency" / "bert" / "pretrain"
    target.mkdir(parents=True)
    for src in (BASE, *TEMPLATES.values()):
        shutil.copy(src, target / src.name)
    (target / RUN.name).write_text(run_text)
    (root / "pretrain_bert.py").symlink_to(REPO / "pretrain_bert.py")
    return target / RUN.name


def train_idx_path(data_prefix: str, epochs: int = 5) -> str:
    """The samples mapping the BERT dataset writes for the analysis' exact-epoch train split."""
    return samples_mapping_filename(data_prefix, "train", 0, SEQ, 0.1, 1234, exact_epochs=epochs)


def recipe_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment of a dry run: empty stand-in data and samples mapping, outputs under tmp, one node, one GPU."""
    data = tmp / "data" / "pile_bert_train_text_sentence"
    data.parent.mkdir(exist_ok=True)
    for ext in (".bin", ".idx"):
        data.with_suffix(ext).touch()
    Path(train_idx_path(str(data))).touch()  # validate_args checks that a pinned file exists
    env = {k: v for k, v in os.environ.items()
           if k not in ("LAUNCHER", "PRECISION", "DATA_HOME", "INDEX_MAP_PREFIX", "ANALYSIS_NUM_EPOCHS", "VOCAB_PATH")}
    env.update(DRY_RUN="1", OUTPUT_HOME=str(tmp / "out"), DATA_PATH=str(data), ANALYSIS_PATH=str(tmp / "analysis"),
               NUM_NODE="1", NUM_GPUS_PERNODE="1", HOSTFILE=str(tmp / "no_hostfile"))
    env.update(extra)
    return env


def pretrain_argv(command: list[str]) -> list[str]:
    """The flags after pretrain_bert.py in a launch command."""
    position = next(i for i, word in enumerate(command) if word.endswith("/pretrain_bert.py"))
    return command[position + 1:]


def parse_bert(argv: list[str]):
    """Parse as pretrain_bert.py does (megatron.cli.configure): BERT flags, then the spec's defaults."""
    args = parse_args(argv, BERT_SPEC.extra_args)
    apply_args_defaults(args, dict(BERT_SPEC.args_defaults))
    return args


def check_pretrain_command(argv: list[str], world_size: int, monkeypatch: pytest.MonkeyPatch):
    """parse (no unknown flags) + validate_args + build_configs + both config parsers + the BERT data-efficiency
    object; returns (args, config, ds_json, settings, data_efficiency)."""
    args = parse_bert(argv)
    if args.fp16:  # the recipes target GPUs: DeepSpeed refuses fp16 on CPU only
        monkeypatch.setattr(deepspeed_json, "accelerator_name", lambda: "cuda")
    validate_args(args, world_size)
    stub_analysis_outputs(args.deepspeed_config)
    config = build_configs(args, TOKENIZER, world_size)
    with open(args.deepspeed_config) as f:
        ds_json = json.load(f)
    settings = parse_deepspeed_config(ds_json, source=args.deepspeed_config, num_layers=args.num_layers,
                                      seq_length=args.seq_length)
    assert config.data_efficiency.settings == settings  # the bridge parsed the same blocks the same way
    de = build_data_efficiency(config, BERT_SPEC.batch_layout, None, rank=0)  # as pretrain_bert.py wires it
    return args, config, ds_json, settings, de


def bert_batch(rows: int, width: int = SEQ) -> dict[str, torch.Tensor]:
    """A micro-batch in the BERT layout whose every position is a real (non-pad) token."""
    ones = torch.ones(rows, width, dtype=torch.long)
    return {"text": ones * 7, "types": ones * 0, "labels": ones * -1, "loss_mask": ones * 0,
            "padding_mask": ones, "is_random": torch.zeros(rows, dtype=torch.long)}


def first_micro_batch_width(de_obj, metrics) -> int:
    """Width of the first training micro-batch after the data-efficiency post-process. Under a curriculum its
    sampler is built over in-memory stand-ins for the analysis indexes (100 percentile rows) and draws one batch."""
    if getattr(de_obj, "curriculum", None) is not None:
        n = 4 * GBS
        rows = np.array_split(np.arange(n), 100)
        indexes = {m.name: MetricIndex.from_rows(rows, name=m.name) for m in metrics
                   if m.clustering_type == "schedule_based"}
        sampler = de_obj.curriculum.build_sampler(n, indexes=indexes)
        assert len(next(iter(sampler))) == MBS  # the sampler yields one rank's micro-batches
    return int(de_obj.post_process(bert_batch(2), TrainState())["text"].shape[1])


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------
def test_run_script_has_every_spec_block_and_one_active():
    """The §7.3 blocks are all there (no others), and exactly one is uncommented as shipped."""
    assert sorted(BLOCK_TITLES) == sorted(SPEC_BLOCKS)
    lines = RUN_TEXT.splitlines()
    blocks = run_script_blocks(RUN_TEXT)
    active = [title for title, body in blocks if not lines[body[0]].startswith("# ")]
    assert active == [ACTIVE_AS_SHIPPED]
    for title, body in blocks:  # a block is either wholly commented or wholly active
        assert len({lines[i].startswith("# ") for i in body}) == 1, title


@pytest.mark.parametrize("title", BLOCK_TITLES)
def test_every_run_block_parses_with_the_real_cli(title, tmp_path, monkeypatch):
    """Each block alone: flags parse and validate, the JSON parses, and the values are the spec's."""
    script = recipe_copy(tmp_path / "repo", with_active_blocks(RUN_TEXT, {title}))
    env = recipe_env(tmp_path)
    ds_path, command = dry_run(["bash", str(script)], env)
    assert command[:5] == ["deepspeed", "--num_nodes", "1", "--num_gpus", "1"]
    assert sum(Path(word).name == "pretrain_bert.py" for word in command) == 1
    assert ds_path.parent == tmp_path / "out" / "ds_config" and ds_path.is_file()
    assert "CONFIG_" not in ds_path.read_text()
    args, config, ds_json, settings, de_obj = check_pretrain_command(pretrain_argv(command), 1, monkeypatch)
    check_with_deepspeed(config.deepspeed, 1)
    assert set(ds_json) == TOP_LEVEL_KEYS

    lr, iters, ltd, metrics = SPEC_BLOCKS[title]
    tokens = iters * SEQ * GBS
    billions = int(title.split(", ")[-1].split("B tokens")[0])
    assert round(tokens / 1e9) == billions  # the title's budget is the script's
    assert (args.lr, args.train_tokens, args.lr_decay_tokens, args.lr_warmup_iters) == (lr, tokens, tokens, 10000)
    assert (args.train_iters, args.lr_warmup_tokens, args.lr_decay_style) == (4 * M, None, "linear")
    assert (args.num_layers, args.hidden_size, args.num_attention_heads) == (24, 1024, 16)
    assert (args.seq_length, args.max_position_embeddings, args.init_method_std) == (SEQ, SEQ, 0.02)
    assert (args.min_lr, args.split, args.num_workers, args.eval_interval) == (1e-5, "949,50,1", 4, 1000)
    assert (args.adam_beta1, args.adam_beta2, args.weight_decay, args.clip_grad) == (0.9, 0.999, 0.01, 1.0)
    assert not args.checkpoint_activations and args.no_pipeline_parallel
    assert args.save_interval == iters // 100
    assert args.tokenizer_type == "BertWordPieceLowerCase" and Path(args.vocab_file).name == "vocab.txt"
    opts = bert_options(config)  # the BERT flags reach the typed config
    assert (opts.short_seq_prob, opts.mask_prob, opts.binary_head, opts.masking_style) == (
        0.1, 0.15, True, "whole-word")
    t = config.training
    # the recipe's global batch on one GPU: micro-batch 16 (upstream's per-GPU batch), 64 accumulated micro-batches
    assert (t.global_batch_size, t.micro_batch_size, t.num_micro_batches, t.precision, t.zero_stage) == (
        GBS, MBS, GBS // MBS, "fp16", 0)
    assert ds_json["data_types"] == {"grad_accum_dtype": "fp16"}
    assert (t.train_iters, t.train_tokens) == (4 * M, tokens)
    assert config.schedule.lr_warmup_steps == 10000 * GBS and config.schedule.lr_decay_tokens == tokens
    assert config.deepspeed["prescale_gradients"] is True and config.deepspeed["fp16"]["initial_scale_power"] == 11
    de = settings.data_efficiency
    assert de.enabled == (ltd is not None or bool(metrics)) and de.seed == args.seed == 1234
    assert isinstance(de_obj, ActiveDataEfficiency if de.enabled else NoDataEfficiency)

    rl = de.data_routing.random_ltd
    assert args.random_ltd == rl.enabled == de.data_routing.enabled == (ltd is not None)
    assert (rl.total_layer_num, rl.random_ltd_layer_id, rl.model_type) == (24, tuple(range(1, 23)), "encoder")
    assert (rl.hidden_state_order, rl.model_mask_name) == ("seq_batch_dim", "attention_mask")
    assert rl.schedule.max_value == SEQ and rl.schedule.seq_per_step == 16
    if ltd is not None:
        assert (rl.schedule.min_value, rl.schedule.require_steps) == ltd
        assert (args.attention_dropout, args.hidden_dropout) == (0.1, 0.1)
        assert de_obj.random_ltd is not None and de_obj.random_ltd.reserved_length == 128
    else:
        assert rl.schedule.min_value == SEQ  # off: nothing would be dropped even if enabled

    cl = de.data_sampling.curriculum_learning
    assert args.data_efficiency_curriculum_learning == cl.enabled == de.data_sampling.enabled == bool(metrics)
    if metrics:  # the train split is pinned to the analysis' 5-epoch samples mapping
        assert args.train_data_exact_num_epochs == 5 and args.train_idx_path == train_idx_path(env["DATA_PATH"])
    else:
        assert args.train_data_exact_num_epochs is None and args.train_idx_path is None
    # The first training micro-batch through the BERT post-process: cut to the curriculum's first seqlen under
    # seqlen_truncate, else only padding would be trimmed (there is none here)
    assert first_micro_batch_width(de_obj, cl.metrics) == (128 if TRUNC in dict(metrics) else SEQ)
    if not metrics:
        return
    assert cl.data_cluster_path.startswith(str(tmp_path / "out" / "data_cluster") + os.sep)
    assert [(m.name, m.schedule.total_curriculum_step) for m in cl.metrics] == metrics
    for m in cl.metrics:
        dtype, ctype, lo, hi, step, root, analysis_metric = METRICS[m.name]
        s = m.schedule
        assert (m.difficulty_type, m.clustering_type, s.schedule_type) == (dtype, ctype, "fixed_root")
        assert (s.min_difficulty, s.max_difficulty, s.difficulty_step, s.root_degree) == (lo, hi, step, root)
        if analysis_metric is None:
            assert m.index_to_sample_path == m.index_to_metric_path == "dummy"
            continue
        merged = "" if title == UNMERGED_VOC_BLOCK else "_percentile_merged"
        assert m.index_to_sample_path == metric_output_prefix(env["ANALYSIS_PATH"], analysis_metric,
                                                              "index_to_sample" + merged)
        assert m.index_to_metric_path == metric_output_prefix(env["ANALYSIS_PATH"], analysis_metric,
                                                              "index_to_metric")
    assert cl.seqlen_metric == (TRUNC if TRUNC in dict(metrics) else None)


def test_bert_flags_need_the_bert_parser(tmp_path):
    """The command carries a BERT-only flag (--short-seq-prob): pretrain_gpt.py's parser would refuse it."""
    _, command = dry_run(["bash", str(BASE), "1e-4", "2"], recipe_env(tmp_path))
    argv = pretrain_argv(command)
    assert "--short-seq-prob" in argv
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_shipped_scripts_point_at_this_checkout(tmp_path):
    """Run from its real place, the active block launches this repo's pretrain_bert.py with the bundled vocab."""
    env = recipe_env(tmp_path)
    ds_path, command = dry_run(["bash", str(RUN)], env)
    script = next(word for word in command if word.endswith("/pretrain_bert.py"))
    assert Path(script).resolve() == REPO / "pretrain_bert.py"
    argv = pretrain_argv(command)
    assert Path(argv[argv.index("--vocab-file") + 1]).is_file()
    assert ds_path.is_file() and ds_path.parent == tmp_path / "out" / "ds_config"


@pytest.mark.parametrize("active", [set(), {"Baseline, 1049B tokens (100%)", "random-LTD, 1049B tokens (100%)"}])
def test_run_script_refuses_zero_or_two_active_blocks(active, tmp_path):
    """Nothing is launched unless exactly one block is uncommented."""
    script = recipe_copy(tmp_path / "repo", with_active_blocks(RUN_TEXT, active))
    proc = subprocess.run(["bash", str(script)], env=recipe_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {RUN.name}: uncomment exactly one block (found {len(active)} active)"]


def test_multi_node_geometry_launchers_and_bf16(tmp_path, monkeypatch):
    """64 ranks: micro-batch 16 (1024/64) agrees with the JSON; torchrun/python launchers; PRECISION=bf16 runs
    at ZeRO-1 with fp32 gradient accumulation."""
    args_ltd = ["1e-4", "2", "true", "128", "2", "0"]  # dropout 0: the variant upstream suggests trying
    env = recipe_env(tmp_path, NUM_NODE="8", NUM_GPUS_PERNODE="8")
    ds_path, command = dry_run(["bash", str(BASE), *args_ltd], env)
    assert command[:5] == ["deepspeed", "--num_nodes", "8", "--num_gpus", "8"]
    args, config, ds_json, _, _ = check_pretrain_command(pretrain_argv(command), 64, monkeypatch)
    assert (args.micro_batch_size, ds_json["train_micro_batch_size_per_gpu"], config.training.num_micro_batches) == (
        16, 16, 1)
    assert (args.attention_dropout, args.hidden_dropout) == (0.0, 0.0)
    assert (config.model.attention_dropout, config.model.hidden_dropout) == (0.0, 0.0)
    check_with_deepspeed(config.deepspeed, 64)

    _, command = dry_run(["bash", str(BASE), *args_ltd], dict(env, LAUNCHER="torchrun"))
    assert command[:6] == ["torchrun", "--nnodes", "8", "--nproc_per_node", "8", str(REPO / "pretrain_bert.py")]

    one = recipe_env(tmp_path, LAUNCHER="python", PYTHON=sys.executable, PRECISION="bf16")
    ds_path, command = dry_run(["bash", str(BASE), *args_ltd], one)
    assert command[:2] == [sys.executable, str(REPO / "pretrain_bert.py")]
    monkeypatch.undo()
    args, config, ds_json, _, _ = check_pretrain_command(pretrain_argv(command), 1, monkeypatch)
    assert args.bf16 and not args.fp16 and ds_json["bf16"]["enabled"] and not ds_json["fp16"]["enabled"]
    assert config.training.precision == "bf16"
    assert (config.training.zero_stage, config.training.num_micro_batches) == (1, 64)
    assert ds_json["data_types"] == {"grad_accum_dtype": "fp32"} and ds_json["prescale_gradients"] is False
    assert "_z1_" in ds_path.name


@pytest.mark.parametrize("gpus,micro,expected", [(1, None, (16, 64)), (128, None, (8, 1)), (2, "32", (32, 16))])
def test_micro_batch_is_chosen_and_the_global_batch_kept(gpus, micro, expected, tmp_path, monkeypatch):
    """Global batch 1024 on any GPU count: MICRO_BATCH_SIZE (default 16, at most 1024 / GPUs) and accumulation."""
    env = recipe_env(tmp_path, NUM_GPUS_PERNODE=str(gpus), **({"MICRO_BATCH_SIZE": micro} if micro else {}))
    _, command = dry_run(["bash", str(BASE), "1e-4", "2"], env)
    args, config, ds_json, _, _ = check_pretrain_command(pretrain_argv(command), gpus, monkeypatch)
    t = config.training
    assert (t.micro_batch_size, t.num_micro_batches, t.global_batch_size) == (*expected, GBS)
    assert ds_json["train_micro_batch_size_per_gpu"] == expected[0]
    check_with_deepspeed(config.deepspeed, gpus)


@pytest.mark.parametrize("argv,extra_env,message", [
    (["1e-4", "2", "true", "128", "2"], {}, "expected 2, 6, 18 or 28 positional arguments"),
    (["1e-4", "2", "yes", "128", "2", "0.1"], {}, "argument 3 (ltd_enabled) must be true or false, got 'yes'"),
    (["fast", "2"], {}, "argument 1 (lr) must be a number"),
    (["1e-4", "two"], {}, "argument 2 (train_iters_in_million) must be a positive number of millions"),
    (["1e-4", "2", "true", "128", "2", "1.5"], {}, "argument 6 (dropout) must be a number in [0, 1]"),
    (["1e-4", "2", "false", "512", "1", "0.1", "true", "2", "seqlen_truncate", "dummy", "dummy", "value",
      "single_cluster", "128", "512", "0.96", "8", "1"], {}, "argument 8 (cl_num_metric) is 2: give 28 arguments"),
    (["1e-4", "2"], {"LAUNCHER": "mpirun"}, "LAUNCHER must be deepspeed, torchrun or python"),
    (["1e-4", "2"], {"NUM_GPUS_PERNODE": "3"}, "global batch 1024 is not divisible by the 3 data-parallel ranks"),
    (["1e-4", "2"], {"NUM_GPUS_PERNODE": "2", "LAUNCHER": "python"}, "LAUNCHER=python runs one process"),
    (["1e-4", "2"], {"PRECISION": "fp8"}, "PRECISION must be fp16, bf16 or fp32"),
    (["1e-4", "2"], {"ANALYSIS_NUM_EPOCHS": "0"}, "ANALYSIS_NUM_EPOCHS must be >= 1"),
    (["1e-4", "2"], {"MICRO_BATCH_SIZE": "x"}, "MICRO_BATCH_SIZE must be a positive integer, got 'x'"),
])
def test_base_script_bad_input_is_one_error_line(argv, extra_env, message, tmp_path):
    """Bad arguments or environment: exit 2, one `error:` line naming what to fix, no ds_config written."""
    proc = subprocess.run(["bash", str(BASE), *argv], env=recipe_env(tmp_path, **extra_env), capture_output=True,
                          text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith(f"error: {BASE.name}: "), proc.stderr
    assert message in err[0]
    assert not (tmp_path / "out" / "ds_config").exists()


def test_dry_run_prints_only_the_config_and_the_command(tmp_path):
    """DRY_RUN=1: stdout is exactly the two lines, nothing is launched or created besides the ds_config; missing
    analysis outputs are noted on stderr with the analysis step that writes them."""
    env = recipe_env(tmp_path, LAUNCHER="python", PYTHON="/bin/false")  # would fail if it were launched
    proc = subprocess.run(["bash", str(RUN)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == ["ds_config", "command"]
    assert lines[1].startswith("command: /bin/false ") and "pretrain_bert.py" in lines[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ds_config"]
    assert "note: needed for a real run, not found:" in proc.stderr
    assert "vocab_rarity_index_to_sample_percentile_merged.bin/.idx (CL index: run ../ds_analyze_bert_data_map.sh" \
        in proc.stderr and "METRIC=vocab_rarity" in proc.stderr


def test_real_run_stops_early_when_analysis_is_missing(tmp_path):
    """Without DRY_RUN, a CL block whose samples mapping or index files are missing stops before launching."""
    env = recipe_env(tmp_path, LAUNCHER="python", PYTHON="/bin/false")
    env.pop("DRY_RUN")
    os.remove(train_idx_path(env["DATA_PATH"]))
    proc = subprocess.run(["bash", str(RUN)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "_train_indexmap_exact5ep_509msl_0.10ssp_1234s.npy (samples mapping: written by " \
           "../ds_analyze_bert_data_map.sh with NUM_EPOCHS=5)" in proc.stderr
    assert not (tmp_path / "out" / "checkpoint").exists()


@pytest.mark.parametrize("num_metrics", [1, 2])
def test_templates_fill_completely_and_match_the_gpt_convention(num_metrics, tmp_path):
    """Each TEMPLATE: the GPT templates' placeholders and key tree, random-LTD as an encoder; fills completely."""
    template = TEMPLATES[num_metrics].read_text()
    gpt_template = (RECIPES / "gpt" / "pretrain" / TEMPLATES[num_metrics].name.replace("bert", "gpt")).read_text()
    assert set(re.findall(r"CONFIG_[A-Z0-9_]+", template)) == set(re.findall(r"CONFIG_[A-Z0-9_]+", gpt_template))
    assert '"model_type": "encoder"' in template and '"decoder"' not in template
    metric = ["m{n}", "/idx/m{n}_index_to_sample", "/idx/m{n}_index_to_metric", "value", "schedule_based", "3",
              "90", "0.001", "1", "1.5"]
    argv = ["1e-4", "0.01", "true", "64", "0.0005", "0.1", "true", str(num_metrics)]
    for n in range(1, num_metrics + 1):
        argv += [v.format(n=n) for v in metric]
    ds_path, _ = dry_run(["bash", str(BASE), *argv], recipe_env(tmp_path))
    text = ds_path.read_text()
    assert not re.search(r"CONFIG_[A-Z0-9_]+", text)
    ds_json = json.loads(text)
    assert set(ds_json) == TOP_LEVEL_KEYS
    settings = parse_deepspeed_config(ds_json, source=str(ds_path), num_layers=24, seq_length=SEQ,
                                      check_index_files=False)  # the fill is checked here, not the /idx files
    metrics = settings.data_efficiency.data_sampling.curriculum_learning.metrics
    assert [m.name for m in metrics] == [f"m{n}" for n in range(1, num_metrics + 1)]
    for n, m in enumerate(metrics, 1):
        assert (m.index_to_sample_path, m.schedule.min_difficulty, m.schedule.max_difficulty) == (
            f"/idx/m{n}_index_to_sample", 3, 90)
        assert (m.schedule.total_curriculum_step, m.schedule.root_degree) == (1000, 1.5)  # millions -> steps
    ltd = settings.data_efficiency.data_routing.random_ltd
    assert (ltd.model_type, ltd.schedule.min_value, ltd.schedule.max_value, ltd.schedule.require_steps) == (
        "encoder", 64, SEQ, 500)


@pytest.mark.parametrize("title,analysis_metric", [
    (ACTIVE_AS_SHIPPED, "vocab_rarity"),
    ('CL seqlen_vocab_rarity ("seqlen reorder" + voc), 1049B tokens (100%)', "seqlen_vocab_rarity"),
])
def test_pretraining_reads_what_the_bert_analysis_writes(title, analysis_metric, tmp_path):
    """With the same DATA_HOME, the run script's CL index paths and pinned samples mapping are the analysis outputs."""
    stub = tmp_path / "stub.py"
    stub.write_text("import json, os, sys\njson.dump(sys.argv[1:], open(os.environ['ARGV_OUT'], 'w'))\n")
    data_home = tmp_path / "pile"
    data_home.mkdir()
    shared = {k: v for k, v in os.environ.items()
              if k not in ("DATA_PATH", "SAVE_PATH", "ANALYSIS_PATH", "SEQ_LEN", "SEED", "SPLIT", "NUM_EPOCHS",
                           "VOCAB_PATH", "INDEX_MAP_PREFIX", "ANALYSIS_NUM_EPOCHS")}
    shared["DATA_HOME"] = str(data_home)
    cli = _load_analyzer_cli()
    stages = {}
    for stage in ("map", "reduce"):
        out = tmp_path / f"{stage}.json"
        analysis_env = dict(shared, PYTHON=f"{sys.executable} {stub}", ARGV_OUT=str(out), METRIC=analysis_metric,
                            LOG_DIR=str(tmp_path / "logs"))
        subprocess.run(["bash", str(RECIPES / "bert" / f"ds_analyze_bert_data_{stage}.sh")], env=analysis_env,
                       check=True, capture_output=True, timeout=60)
        stages[stage] = cli.parse_args(json.loads(out.read_text())[1:], cli.add_analyzer_args)
    analysis = stages["map"]  # the map stage builds the dataset (and its samples mapping); reduce writes the files
    assert stages["reduce"].save == analysis.save and stages["reduce"].analyzing_metric == [analysis_metric]

    copy_root = tmp_path / "repo"  # a checkout whose run script has this block on; same bundled vocabulary
    script = recipe_copy(copy_root, with_active_blocks(RUN_TEXT, {title}))
    (copy_root / "data").symlink_to(REPO / "data")
    pre_env = dict(shared, DRY_RUN="1", OUTPUT_HOME=str(tmp_path / "out"), NUM_NODE="1", NUM_GPUS_PERNODE="1",
                   HOSTFILE=str(tmp_path / "no_hostfile"))
    ds_path, command = dry_run(["bash", str(script)], pre_env)
    pretrain = parse_bert(pretrain_argv(command))
    assert pretrain.data_path == analysis.data_path == [str(data_home / "pile_bert_train_text_sentence")]
    for name in ("seq_length", "seed", "split", "tokenizer_type", "short_seq_prob", "bert_binary_head",
                 "train_data_exact_num_epochs"):
        assert getattr(pretrain, name) == getattr(analysis, name), name
    assert Path(pretrain.vocab_file).resolve() == Path(analysis.vocab_file).resolve()
    mapping = samples_mapping_filename(index_map_prefix(analysis.data_path[0], analysis.data_cache_path), "train", 0,
                                       analysis.seq_length, analysis.short_seq_prob, analysis.seed,
                                       exact_epochs=analysis.train_data_exact_num_epochs)
    assert pretrain.train_idx_path == mapping
    metric = next(iter(json.loads(ds_path.read_text())["data_efficiency"]["data_sampling"]["curriculum_learning"][
        "curriculum_metrics"].values()))
    # both default to <checkout>/output/data_efficiency/analysis_pile_bert_5epoch
    reduce = stages["reduce"]
    for key, kind in (("index_to_sample_path", "index_to_sample_percentile_merged"),
                      ("index_to_metric_path", "index_to_metric")):
        written = Path(metric_output_prefix(reduce.save, analysis_metric, kind)).relative_to(REPO)
        assert Path(metric[key]).relative_to(copy_root) == written, key
