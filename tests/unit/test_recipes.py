"""Every GPT pretraining recipe block parses against the real CLI and the real data-efficiency config parser.

Like litgpt's test_config_hub: each uncommentable block of gpt/pretrain/ds_pretrain_gpt_1.3B_dense_run.sh is
switched on alone in a temporary copy, run with DRY_RUN=1, and the printed pretrain_gpt.py command is parsed by
``megatron.arguments.parse_args`` (unknown flags fail) and ``validate_args``, then checked against the generated
DeepSpeed JSON and bridged by ``build_configs``; the JSON's data-efficiency blocks go through
``parse_deepspeed_config`` (the bridge's typed settings must equal that) and the engine dict through DeepSpeed's
own config class. Each block's values are
checked against the spec §7.2 table, and the recipe's analysis paths against what the analysis scripts write.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from megatron.arguments import parse_args, validate_args
from megatron.config import build_configs, deepspeed_json
from megatron.data.dataset_utils import index_map_prefix
from megatron.data.gpt_dataset import index_map_filenames
from megatron.data_efficiency.analyzer_io import metric_output_prefix
from megatron.data_efficiency.config import parse_deepspeed_config
from megatron.specs.gpt import GPT_SPEC
from megatron.training.data_efficiency_hooks import build_data_efficiency

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "examples_deepspeed" / "data_efficiency"
PRETRAIN = RECIPES / "gpt" / "pretrain"
RUN = PRETRAIN / "ds_pretrain_gpt_1.3B_dense_run.sh"
BASE = PRETRAIN / "ds_pretrain_gpt_1.3B_dense_base_script.sh"
TEMPLATES = {1: PRETRAIN / "ds_config_gpt_1clmetric_TEMPLATE.json",
             2: PRETRAIN / "ds_config_gpt_2clmetrics_TEMPLATE.json"}
SEPARATOR = "#" * 79

# Spec §7.2: title -> (lr, train tokens in billions, random-LTD (start, steps) or None, [(metric, CL steps)]).
VOC, TRUNC, RESHAPE = "voc", "seqlen_truncate", "seqlen_reshape"
SPEC_BLOCKS = {
    "Baseline, 300B tokens (100%)": (2e-4, 300, None, []),
    "Baseline, 200B tokens (67%)": (3e-4, 200, None, []),
    "Baseline, 150B tokens (50%)": (4e-4, 150, None, []),
    "CL (voc + seqlen_truncate) + random-LTD, 300B tokens (100%)": (2e-4, 300, (128, 200000),
                                                                     [(VOC, 110000), (TRUNC, 110000)]),
    "CL (voc + seqlen_truncate) + random-LTD, 150B tokens (50%)": (4e-4, 150, (128, 100000),
                                                                    [(VOC, 55000), (TRUNC, 55000)]),
    "random-LTD, 300B tokens (100%)": (2e-4, 300, (128, 200000), []),
    "random-LTD, 200B tokens (67%)": (3e-4, 200, (128, 133333), []),
    "random-LTD, 150B tokens (50%)": (4e-4, 150, (128, 100000), []),
    "CL voc + seqlen_truncate, 300B tokens (100%)": (2e-4, 300, None, [(VOC, 110000), (TRUNC, 110000)]),
    "CL voc + seqlen_truncate, 200B tokens (67%)": (3e-4, 200, None, [(VOC, 73000), (TRUNC, 73000)]),
    "CL voc + seqlen_truncate, 150B tokens (50%)": (4e-4, 150, None, [(VOC, 55000), (TRUNC, 55000)]),
    "CL voc + seqlen_reshape, 300B tokens (100%)": (2e-4, 300, None, [(VOC, 110000), (RESHAPE, 110000)]),
    "CL voc only, 300B tokens (100%)": (2e-4, 300, None, [(VOC, 110000)]),
    "CL seqlen_truncate only, 300B tokens (100%)": (2e-4, 300, None, [(TRUNC, 110000)]),
    "CL seqlen_reshape only, 300B tokens (100%)": (2e-4, 300, None, [(RESHAPE, 110000)]),
}
# Spec §7.1: the DeepSpeed JSON keys of the templates.
TOP_LEVEL_KEYS = {"train_batch_size", "train_micro_batch_size_per_gpu", "steps_per_print", "zero_optimization",
                  "gradient_clipping", "prescale_gradients", "fp16", "bf16", "data_types", "wall_clock_breakdown",
                  "dataloader_drop_last", "data_efficiency"}
TOKENIZER = SimpleNamespace(padded_vocab_size=50304, eod=50256)  # build_configs only needs these two


# ----------------------------------------------------------------------------------------------------------------
# The run script's blocks
# ----------------------------------------------------------------------------------------------------------------
def run_script_blocks(text: str) -> list[tuple[str, list[int]]]:
    """(title, body line numbers) of every block: the segments between separator lines that call run_base."""
    lines = text.splitlines()
    cuts = [i for i, line in enumerate(lines) if line.strip() == SEPARATOR]
    blocks = []
    for start, end in zip(cuts, cuts[1:]):
        segment = range(start + 1, end)
        if not any(re.match(r"^(# )?run_base ", lines[i]) for i in segment):
            continue
        titles = [lines[i][3:].rstrip(":") for i in segment if lines[i].startswith("## ")]
        body = [i for i in segment if not lines[i].startswith("##")]
        assert len(titles) == 1, f"block at line {start + 2} needs exactly one '## title' line, got {titles}"
        blocks.append((titles[0], body))
    return blocks


def with_active_blocks(text: str, active: set[str]) -> str:
    """The run script with exactly the blocks titled in ``active`` uncommented."""
    lines = text.splitlines()
    for title, body in run_script_blocks(text):
        for i in body:
            plain = lines[i][2:] if lines[i].startswith("# ") else lines[i]
            lines[i] = plain if title in active else "# " + plain
    return "\n".join(lines) + "\n"


RUN_TEXT = RUN.read_text()
BLOCK_TITLES = [title for title, _ in run_script_blocks(RUN_TEXT)]


def recipe_copy(root: Path, run_text: str) -> Path:
    """A copy of the recipe directory (run script replaced) under root, with root/pretrain_gpt.py linked."""
    target = root / "examples_deepspeed" / "data_efficiency" / "gpt" / "pretrain"
    target.mkdir(parents=True)
    for src in (BASE, *TEMPLATES.values()):
        shutil.copy(src, target / src.name)
    (target / RUN.name).write_text(run_text)
    (root / "pretrain_gpt.py").symlink_to(REPO / "pretrain_gpt.py")
    return target / RUN.name


def recipe_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment of a dry run: tiny fake data files, outputs under tmp, one node with one GPU."""
    data = tmp / "data" / "pile_text_document"
    data.parent.mkdir(exist_ok=True)
    for ext in (".bin", ".idx"):
        data.with_suffix(ext).touch()
    for name in index_map_filenames(str(data), "train", 0, 2048, 1234, exact_epochs=1).values():
        Path(name).touch()
    env = {k: v for k, v in os.environ.items() if k not in ("LAUNCHER", "PRECISION", "DATA_HOME", "INDEX_MAP_PREFIX")}
    env.update(DRY_RUN="1", OUTPUT_HOME=str(tmp / "out"), DATA_PATH=str(data), ANALYSIS_PATH=str(tmp / "analysis"),
               NUM_NODE="1", NUM_GPUS_PERNODE="1", HOSTFILE=str(tmp / "no_hostfile"))
    env.update(extra)
    return env


def dry_run(cmd: list[str], env: dict[str, str]) -> tuple[Path, list[str]]:
    """Run a recipe with DRY_RUN=1: (generated ds_config path, launch command as argv)."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split(": ", 1) for line in proc.stdout.strip().splitlines())
    return Path(out["ds_config"]), shlex.split(out["command"])


def pretrain_argv(command: list[str]) -> list[str]:
    """The flags after pretrain_gpt.py in a launch command."""
    position = next(i for i, word in enumerate(command) if word.endswith("/pretrain_gpt.py"))
    return command[position + 1:]


def stub_analysis_outputs(ds_config_path: str) -> None:
    """Empty ``{prefix}.idx/.bin`` for every analyzer index the JSON's enabled curriculum names (not ``dummy``).

    The parser requires an analyzed metric's index files to exist (only their existence is checked then; the
    real run script refuses missing analysis before launching). The dry runs have no analysis; the training
    wiring below gets in-memory indexes where it needs contents."""
    with open(ds_config_path) as f:
        ds_json = json.load(f)
    cl = ds_json.get("data_efficiency", {}).get("data_sampling", {}).get("curriculum_learning", {})
    if not cl.get("enabled"):
        return
    for block in cl.get("curriculum_metrics", {}).values():
        for key in ("index_to_sample_path", "index_to_metric_path"):
            prefix = block.get(key)
            if prefix and prefix != "dummy":
                Path(prefix).parent.mkdir(parents=True, exist_ok=True)
                for ext in (".idx", ".bin"):
                    Path(prefix + ext).touch()


def check_pretrain_command(argv: list[str], world_size: int, monkeypatch: pytest.MonkeyPatch):
    """parse_args (no unknown flags) + validate_args + build_configs + both config parsers; returns the pieces."""
    args = parse_args(argv)
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
    # the training wiring accepts the block (curriculum facade, random-LTD), as pretrain_gpt.py builds it
    build_data_efficiency(config, GPT_SPEC.batch_layout, GPT_SPEC.data_post_process, rank=0)
    return args, config, ds_json, settings


def check_with_deepspeed(engine_dict: dict, world_size: int) -> None:
    """DeepSpeed's own config class (pydantic, unknown sub-keys rejected) accepts the engine dict."""
    from deepspeed.runtime.config import DeepSpeedConfig

    one_rank = dict(engine_dict)  # without torch.distributed DeepSpeed assumes one rank
    one_rank["train_batch_size"] = engine_dict["train_batch_size"] // world_size
    DeepSpeedConfig(one_rank)


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------
def test_run_script_has_every_spec_block_and_one_active():
    """The §7.2 blocks are all there (no others), and exactly one is uncommented as shipped."""
    assert sorted(BLOCK_TITLES) == sorted(SPEC_BLOCKS)
    lines = RUN_TEXT.splitlines()
    active = [title for title, body in run_script_blocks(RUN_TEXT) if not lines[body[0]].startswith("# ")]
    assert active == ["CL (voc + seqlen_truncate) + random-LTD, 300B tokens (100%)"]
    for title, body in run_script_blocks(RUN_TEXT):  # a block is either wholly commented or wholly active
        assert len({lines[i].startswith("# ") for i in body}) == 1, title


@pytest.mark.parametrize("title", BLOCK_TITLES)
def test_every_run_block_parses_with_the_real_cli(title, tmp_path, monkeypatch):
    """Each block alone: flags parse and validate, the JSON parses, and the values are the spec's."""
    script = recipe_copy(tmp_path / "repo", with_active_blocks(RUN_TEXT, {title}))
    env = recipe_env(tmp_path)
    ds_path, command = dry_run(["bash", str(script)], env)
    assert command[:5] == ["deepspeed", "--num_nodes", "1", "--num_gpus", "1"]
    assert ds_path.parent == tmp_path / "out" / "ds_config" and ds_path.is_file()
    assert "CONFIG_" not in ds_path.read_text()
    args, config, ds_json, settings = check_pretrain_command(pretrain_argv(command), 1, monkeypatch)
    check_with_deepspeed(config.deepspeed, 1)
    assert set(ds_json) == TOP_LEVEL_KEYS

    lr, billions, ltd, metrics = SPEC_BLOCKS[title]
    tokens = billions * 10**9
    assert (args.lr, args.train_tokens, args.lr_decay_tokens, args.lr_warmup_tokens) == (lr, tokens, tokens, 3 * 10**9)
    assert (args.num_layers, args.hidden_size, args.num_attention_heads, args.seq_length) == (24, 2048, 16, 2048)
    assert (args.min_lr, args.init_method_std, args.lr_decay_style, args.split) == (1e-6, 0.013, "cosine", "949,50,1")
    assert (args.adam_beta1, args.adam_beta2, args.weight_decay, args.clip_grad) == (0.9, 0.95, 0.1, 1.0)
    assert args.train_samples == 300 * 10**9 * 2 // 2048 and args.save_interval == tokens // 2048 // 512 // 100
    t = config.training
    # the recipe's global batch on one GPU: micro-batch 8 (what fits at seq 2048), 64 accumulated micro-batches
    assert (t.global_batch_size, t.micro_batch_size, t.num_micro_batches, t.precision, t.zero_stage) == (
        512, 8, 64, "fp16", 1)
    assert ds_json["data_types"] == {"grad_accum_dtype": "fp16"}  # fp16: the model's dtype (DeepSpeed's default)
    assert config.deepspeed["prescale_gradients"] is False and config.deepspeed["fp16"]["initial_scale_power"] == 11
    de = settings.data_efficiency
    assert de.enabled == (ltd is not None or bool(metrics)) and de.seed == args.seed == 1234

    rl = de.data_routing.random_ltd
    assert args.random_ltd == rl.enabled == de.data_routing.enabled == (ltd is not None)
    assert (rl.total_layer_num, rl.random_ltd_layer_id, rl.model_type) == (24, tuple(range(1, 23)), "decoder")
    assert rl.schedule.max_value == 2048 and rl.schedule.seq_per_step == 16
    if ltd is not None:
        assert (rl.schedule.min_value, rl.schedule.require_steps) == ltd
    else:
        assert rl.schedule.min_value == 2048  # off: nothing would be dropped even if enabled

    cl = de.data_sampling.curriculum_learning
    assert args.data_efficiency_curriculum_learning == cl.enabled == de.data_sampling.enabled == bool(metrics)
    maps = index_map_filenames(env["DATA_PATH"], "train", 0, 2048, 1234, exact_epochs=1)
    pinned = (args.train_doc_idx_path, args.train_sample_idx_path, args.train_shuffle_idx_path)
    assert pinned == ((maps["doc"], maps["sample"], maps["shuffle"]) if metrics else (None, None, None))
    if not metrics:
        return
    assert cl.data_cluster_path.startswith(str(tmp_path / "out" / "data_cluster") + os.sep)
    assert [(m.name, m.schedule.total_curriculum_step) for m in cl.metrics] == metrics
    analysis = Path(env["ANALYSIS_PATH"]) / "vocab_rarity"
    for m in cl.metrics:
        s = m.schedule
        assert s.schedule_type == "fixed_root"
        if m.name == VOC:
            assert (m.difficulty_type, m.clustering_type) == ("percentile", "schedule_based")
            assert (s.min_difficulty, s.max_difficulty, s.difficulty_step, s.root_degree) == (1, 100, 1, 2.0)
            assert m.index_to_sample_path == str(analysis / "vocab_rarity_index_to_sample_percentile_merged")
            assert m.index_to_metric_path == str(analysis / "vocab_rarity_index_to_metric")
        else:
            assert (m.difficulty_type, m.clustering_type) == ("value", "single_cluster")
            assert (s.min_difficulty, s.max_difficulty, s.difficulty_step, s.root_degree) == (80, 2048, 8, 1.0)
    assert cl.seqlen_metric == next((m for m, _ in metrics if m != VOC), None)


def test_shipped_scripts_point_at_this_checkout(tmp_path):
    """Run from its real place, the active block launches this repo's pretrain_gpt.py with the bundled tokenizer."""
    env = recipe_env(tmp_path)
    ds_path, command = dry_run(["bash", str(RUN)], env)
    script = next(word for word in command if word.endswith("/pretrain_gpt.py"))
    assert Path(script).resolve() == REPO / "pretrain_gpt.py"
    argv = pretrain_argv(command)
    for flag in ("--vocab-file", "--merge-file"):
        assert Path(argv[argv.index(flag) + 1]).is_file()
    assert ds_path.is_file() and ds_path.parent == tmp_path / "out" / "ds_config"


@pytest.mark.parametrize("active", [set(), {"Baseline, 300B tokens (100%)", "random-LTD, 300B tokens (100%)"}])
def test_run_script_refuses_zero_or_two_active_blocks(active, tmp_path):
    """Nothing is launched unless exactly one block is uncommented."""
    script = recipe_copy(tmp_path / "repo", with_active_blocks(RUN_TEXT, active))
    proc = subprocess.run(["bash", str(script)], env=recipe_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {RUN.name}: uncomment exactly one block (found {len(active)} active)"]


def test_multi_node_geometry_launchers_and_bf16(tmp_path, monkeypatch):
    """64 ranks: micro-batch 8 (512/64) agrees with the JSON; torchrun/python launchers; PRECISION=bf16 validates."""
    args_ltd = ["2.0e-4", "300", "true", "128", "200000"]
    env = recipe_env(tmp_path, NUM_NODE="8", NUM_GPUS_PERNODE="8")
    ds_path, command = dry_run(["bash", str(BASE), *args_ltd], env)
    assert command[:5] == ["deepspeed", "--num_nodes", "8", "--num_gpus", "8"]
    args, config, ds_json, _ = check_pretrain_command(pretrain_argv(command), 64, monkeypatch)
    assert (args.micro_batch_size, ds_json["train_micro_batch_size_per_gpu"], config.training.num_micro_batches) == (
        8, 8, 1)
    check_with_deepspeed(config.deepspeed, 64)

    _, command = dry_run(["bash", str(BASE), *args_ltd], dict(env, LAUNCHER="torchrun"))
    assert command[:6] == ["torchrun", "--nnodes", "8", "--nproc_per_node", "8", str(REPO / "pretrain_gpt.py")]

    one = recipe_env(tmp_path, LAUNCHER="python", PYTHON=sys.executable, PRECISION="bf16")
    ds_path, command = dry_run(["bash", str(BASE), *args_ltd], one)
    assert command[:2] == [sys.executable, str(REPO / "pretrain_gpt.py")]
    monkeypatch.undo()
    args, config, ds_json, _ = check_pretrain_command(pretrain_argv(command), 1, monkeypatch)
    assert args.bf16 and not args.fp16 and ds_json["bf16"]["enabled"] and not ds_json["fp16"]["enabled"]
    assert config.training.precision == "bf16"


@pytest.mark.parametrize("gpus,micro,expected", [(1, None, (8, 64)), (8, None, (8, 8)), (64, None, (8, 1)),
                                                 (128, None, (4, 1)), (2, "16", (16, 16)), (4, "512", (128, 1))])
def test_micro_batch_is_chosen_and_the_global_batch_kept(gpus, micro, expected, tmp_path, monkeypatch):
    """Any GPU count: global batch 512 stays; micro-batch MICRO_BATCH_SIZE (default 8, at most 512 / GPUs) and
    the rest is gradient accumulation, in the JSON and the flags alike (DeepSpeed's own config agrees)."""
    env = recipe_env(tmp_path, NUM_GPUS_PERNODE=str(gpus), **({"MICRO_BATCH_SIZE": micro} if micro else {}))
    ds_path, command = dry_run(["bash", str(BASE), "2.0e-4", "300"], env)
    args, config, ds_json, _ = check_pretrain_command(pretrain_argv(command), gpus, monkeypatch)
    t = config.training
    assert (t.micro_batch_size, t.num_micro_batches) == expected and t.global_batch_size == 512
    assert (args.micro_batch_size, ds_json["train_micro_batch_size_per_gpu"]) == (expected[0], expected[0])
    assert config.deepspeed["gradient_accumulation_steps"] == expected[1]
    check_with_deepspeed(config.deepspeed, gpus)


def test_bf16_recipe_accumulates_gradients_in_fp32_at_zero1(tmp_path, monkeypatch):
    """PRECISION=bf16: ZeRO-1 with data_types.grad_accum_dtype fp32 (DeepSpeed's BF16_Optimizer), so the start-up
    check that warns about bf16 gradient sums stays silent; DeepSpeed's config class reads the dtype."""
    import logging

    from deepspeed.runtime.config import DeepSpeedConfig

    from megatron.training.initialize import check_bf16_gradient_accumulation

    ds_path, command = dry_run(["bash", str(BASE), "2.0e-4", "300"], recipe_env(tmp_path, PRECISION="bf16"))
    args, config, ds_json, _ = check_pretrain_command(pretrain_argv(command), 1, monkeypatch)
    assert ds_json["data_types"] == {"grad_accum_dtype": "fp32"} and ds_json["bf16"]["enabled"]
    assert (config.training.zero_stage, config.training.num_micro_batches) == (1, 64)
    assert DeepSpeedConfig(dict(config.deepspeed)).grad_accum_dtype == "fp32"
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("megatron").addHandler(handler)
    try:
        check_bf16_gradient_accumulation(config)
    finally:
        logging.getLogger("megatron").removeHandler(handler)
    assert seen == []


@pytest.mark.parametrize("argv,extra_env,message", [
    (["2.0e-4", "300", "true"], {}, "expected 2, 5, 17 or 27 positional arguments"),
    (["2.0e-4", "300", "yes", "128", "1000"], {}, "argument 3 (ltd_enabled) must be true or false, got 'yes'"),
    (["fast", "300"], {}, "argument 1 (lr) must be a number"),
    (["2.0e-4", "300", "false", "2048", "1", "true", "2", "seqlen_truncate", "dummy", "dummy", "value",
      "single_cluster", "80", "2048", "1000", "8", "1"], {},
     "argument 7 (cl_num_metric) is 2: give 27 arguments"),
    (["2.0e-4", "300"], {"LAUNCHER": "mpirun"}, "LAUNCHER must be deepspeed, torchrun or python"),
    (["2.0e-4", "300"], {"NUM_GPUS_PERNODE": "3"}, "global batch 512 is not divisible by the 3 data-parallel ranks"),
    (["2.0e-4", "300"], {"NUM_GPUS_PERNODE": "2", "LAUNCHER": "python"}, "LAUNCHER=python runs one process"),
    (["2.0e-4", "300"], {"PRECISION": "fp8"}, "PRECISION must be fp16, bf16 or fp32"),
    (["2.0e-4", "300"], {"MICRO_BATCH_SIZE": "0"}, "MICRO_BATCH_SIZE must be a positive integer, got '0'"),
    (["2.0e-4", "300"], {"MICRO_BATCH_SIZE": "3"}, "the 512 samples per rank of a step (global batch 512 / 1 ranks) "
                                                   "are not a multiple of MICRO_BATCH_SIZE 3"),
])
def test_base_script_bad_input_is_one_error_line(argv, extra_env, message, tmp_path):
    """Bad arguments or environment: exit 2, one `error:` line naming what to fix, no ds_config written."""
    proc = subprocess.run(["bash", str(BASE), *argv], env=recipe_env(tmp_path, **extra_env), capture_output=True,
                          text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith(f"error: {BASE.name}: "), proc.stderr
    assert message in err[0]
    assert not (tmp_path / "out" / "ds_config").exists()


def test_real_run_stops_early_when_analysis_is_missing(tmp_path):
    """Without DRY_RUN, a CL block whose index files were never analyzed stops with a hint, before launching."""
    env = recipe_env(tmp_path, LAUNCHER="python", PYTHON="/bin/false")
    env.pop("DRY_RUN")
    proc = subprocess.run(["bash", str(RUN)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "vocab_rarity_index_to_sample_percentile_merged.bin/.idx (CL index: run ../ds_analyze_gpt_data_map.sh" \
        in proc.stderr
    assert not (tmp_path / "out" / "checkpoint").exists()


@pytest.mark.parametrize("num_metrics", [1, 2])
def test_templates_fill_completely_and_hold_only_known_keys(num_metrics, tmp_path):
    """Each TEMPLATE: every placeholder is substituted, the result is JSON with the spec §7.1 key tree."""
    template = TEMPLATES[num_metrics].read_text()
    placeholders = set(re.findall(r"CONFIG_[A-Z0-9_]+", template))
    assert {"CONFIG_BATCH_SIZE", "CONFIG_MBSIZE", "CONFIG_LTD_MIN", "CONFIG_CL1_NAME"} <= placeholders
    assert ("CONFIG_CL2_NAME" in placeholders) == (num_metrics == 2)
    metric = ["m{n}", "/idx/m{n}_index_to_sample", "/idx/m{n}_index_to_metric", "value", "schedule_based", "3",
              "90", "1000", "1", "1.5"]
    argv = ["2.0e-4", "10", "true", "64", "500", "true", str(num_metrics)]
    for n in range(1, num_metrics + 1):
        argv += [v.format(n=n) for v in metric]
    ds_path, _ = dry_run(["bash", str(BASE), *argv], recipe_env(tmp_path))
    text = ds_path.read_text()
    assert not re.search(r"CONFIG_[A-Z0-9_]+", text)
    ds_json = json.loads(text)
    assert set(ds_json) == TOP_LEVEL_KEYS
    de = ds_json["data_efficiency"]
    assert set(de) == {"enabled", "seed", "data_routing", "data_sampling"}
    assert set(de["data_routing"]) == {"enabled", "random_ltd"}
    assert set(de["data_sampling"]) == {"enabled", "num_workers", "curriculum_learning"}
    assert set(de["data_sampling"]["curriculum_learning"]) == {"enabled", "data_cluster_path", "curriculum_metrics"}
    settings = parse_deepspeed_config(ds_json, source=str(ds_path), num_layers=24, seq_length=2048,
                                      check_index_files=False)  # the fill is checked here, not the /idx files
    metrics = settings.data_efficiency.data_sampling.curriculum_learning.metrics
    assert [m.name for m in metrics] == [f"m{n}" for n in range(1, num_metrics + 1)]
    for n, m in enumerate(metrics, 1):
        assert (m.index_to_sample_path, m.schedule.min_difficulty, m.schedule.max_difficulty) == (
            f"/idx/m{n}_index_to_sample", 3, 90)
        assert (m.schedule.total_curriculum_step, m.schedule.root_degree) == (1000, 1.5)
    schedule = settings.data_efficiency.data_routing.random_ltd.schedule
    assert (schedule.min_value, schedule.max_value, schedule.require_steps) == (64, 2048, 500)


def _load_analyzer_cli():
    spec = importlib.util.spec_from_file_location("_analyze_data_for_recipes", RECIPES / "analyze_data.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_pretraining_reads_what_the_gpt_analysis_writes(tmp_path):
    """With the same DATA_HOME, the run script's CL index paths and pinned index maps are the analysis outputs."""
    stub = tmp_path / "stub.py"
    stub.write_text("import json, os, sys\njson.dump(sys.argv[1:], open(os.environ['ARGV_OUT'], 'w'))\n")
    data_home = tmp_path / "pile"
    data_home.mkdir()
    shared = {k: v for k, v in os.environ.items()
              if k not in ("DATA_PATH", "SAVE_PATH", "ANALYSIS_PATH", "SEQ_LEN", "SEED", "SPLIT", "NUM_EPOCHS")}
    shared["DATA_HOME"] = str(data_home)
    cli = _load_analyzer_cli()
    stages = {}
    for stage in ("map", "reduce"):
        out = tmp_path / f"{stage}.json"
        analysis_env = dict(shared, PYTHON=f"{sys.executable} {stub}", ARGV_OUT=str(out), METRIC="vocab_rarity",
                            LOG_DIR=str(tmp_path / "logs"))
        subprocess.run(["bash", str(RECIPES / "gpt" / f"ds_analyze_gpt_data_{stage}.sh")], env=analysis_env,
                       check=True, capture_output=True, timeout=60)
        stages[stage] = cli.parse_args(json.loads(out.read_text())[1:], cli.add_analyzer_args)
    analysis = stages["map"]  # the map stage builds the dataset (and its index maps); reduce writes the files
    assert stages["reduce"].save == analysis.save and stages["reduce"].analyzing_metric == ["vocab_rarity"]

    pre_env = dict(shared, DRY_RUN="1", OUTPUT_HOME=str(tmp_path / "out"), NUM_NODE="1", NUM_GPUS_PERNODE="1",
                   HOSTFILE=str(tmp_path / "no_hostfile"))
    ds_path, command = dry_run(["bash", str(RUN)], pre_env)
    argv = pretrain_argv(command)
    pretrain = parse_args(argv)
    assert pretrain.data_path == analysis.data_path == [str(data_home / "pile_text_document")]
    for name in ("seq_length", "seed", "split", "vocab_file", "merge_file", "tokenizer_type"):
        assert getattr(pretrain, name) == getattr(analysis, name), name
    maps = index_map_filenames(index_map_prefix(analysis.data_path[0], analysis.data_cache_path), "train", 0,
                               analysis.seq_length, analysis.seed, exact_epochs=analysis.train_data_exact_num_epochs)
    assert (pretrain.train_doc_idx_path, pretrain.train_sample_idx_path, pretrain.train_shuffle_idx_path) == (
        maps["doc"], maps["sample"], maps["shuffle"])
    voc = json.loads(ds_path.read_text())["data_efficiency"]["data_sampling"]["curriculum_learning"][
        "curriculum_metrics"]["voc"]
    assert voc["index_to_sample_path"] == metric_output_prefix(stages["reduce"].save, "vocab_rarity",
                                                               "index_to_sample_percentile_merged")
    assert voc["index_to_metric_path"] == metric_output_prefix(analysis.save, "vocab_rarity", "index_to_metric")
