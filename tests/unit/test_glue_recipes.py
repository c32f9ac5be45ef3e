"""The BERT finetuning recipes: bert/finetune_glue/ (GLUE sweep, spec §7.5) and bert/finetune/ (MNLI, QQP, RACE).

* The gather script on synthetic results files (the results JSON of tasks/main.py --results-path): each run's
  best epoch, median_high (even seed counts) and stdev over seeds, the best learning rate, the 9-number GLUE
  score and its mean, missing tasks, malformed files (warning naming them), no results (one error line).
* DRY_RUN=1 of every script: the printed tasks/main.py command (task, data files, seed, lr, the original-BERT or
  Megatron-paper hyperparameters, results path; no model-shape flags) goes through the real parser and the
  DeepSpeed-JSON reconciliation when tasks/finetune.py is there; the sweep covers task x seed x lr.
* The sweep end to end with a stand-in for tasks/main.py (sequential and one run per device in parallel), and
  bad input as one error line.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BERT = REPO / "examples_deepspeed" / "data_efficiency" / "bert"
GLUE = BERT / "finetune_glue"
OLD = BERT / "finetune"
SINGLE = GLUE / "ds_finetune_bert_glue.sh"
SWEEP = GLUE / "ds_finetune_bert_glue_run.sh"
GATHER = GLUE / "ds_finetune_gather_result.py"
OLD_GATHER = OLD / "ds_finetune_gather_result.py"
GLUE_TASKS = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
SWEEP_TASKS = ("RTE", "MRPC", "STS-B", "CoLA", "SST-2", "QNLI", "QQP", "MNLI")  # spec §7.5
SWEEP_SEEDS = ("1234", "1235", "1236", "1237", "1238")
SWEEP_LRS = ("2e-5", "3e-5", "4e-5", "5e-5")
MODEL_SHAPE_FLAGS = ("--num-layers", "--hidden-size", "--num-attention-heads", "--ffn-hidden-size",
                     "--max-position-embeddings", "--make-vocab-size-divisible-by")
ENV_DROP = ("TASK", "SEED", "LR", "EPOCHS", "GLUE_DIR", "RACE_DIR", "DATA_HOME", "CHECKPOINT", "OUTPUT", "LAUNCHER",
            "PRECISION", "NUM_GPUS", "GPU_IDS", "MASTER_PORT", "VOCAB_PATH", "TASKS", "SEEDS", "LRS", "SKIP_DONE",
            "TRAIN_DATA", "VALID_DATA", "SEQ_LENGTH", "GLOBAL_BATCH_SIZE", "MICRO_BATCH_SIZE", "LR_WARMUP_FRACTION",
            "WEIGHT_DECAY", "EVAL_INTERVAL", "DROPOUT", "SAVE_CHECKPOINT", "SAVE_INTERVAL", "DS_CONFIG_TEMPLATE",
            "RECIPE_NAME", "CUDA_VISIBLE_DEVICES", "PYTHON", "DRY_RUN", "FAIL_TASK")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gather_mod = _load(GATHER, "glue_gather_under_test")


# ----------------------------------------------------------------------------------------------------------------
# Synthetic results files (the format tasks/main.py --results-path writes)
# ----------------------------------------------------------------------------------------------------------------
HEADLINE = {"CoLA": "mcc", "STS-B": "corr"}


def _metrics(task: str, value: float) -> dict[str, float]:
    metric = HEADLINE.get(task, "accuracy")
    if metric == "mcc":
        return {"mcc": value, "accuracy": 0.5, "total": 100}
    if metric == "corr":
        return {"pearson": value + 0.01, "spearman": value - 0.01, "corr": value, "total": 100}
    out = {"accuracy": value, "correct": round(value * 100), "total": 100}
    if task in ("MRPC", "QQP"):
        out["f1"] = 0.5
    return out


def write_run(root: Path, task: str, seed: int, lr: str, epochs: list, dev_names: tuple[str, ...] | None = None
              ) -> Path:
    """results.json of one run. `epochs`: one entry per evaluated epoch: the overall headline value, or for
    several dev files a dict {dev name: headline value} (overall = their mean)."""
    if dev_names is None:
        dev_names = ("dev_matched.tsv", "dev_mismatched.tsv") if task == "MNLI" else ("dev.tsv",)
    metric = HEADLINE.get(task, "accuracy")
    evaluations = []
    for i, value in enumerate(epochs, 1):
        per_dev = value if isinstance(value, dict) else {name: value for name in dev_names}
        overall = sum(per_dev.values()) / len(per_dev)
        evaluations.append({"epoch": i, "iteration": 10 * i,
                            "dev": {name: _metrics(task, v) for name, v in per_dev.items()},
                            "overall": _metrics(task, overall)})
    best = max(evaluations, key=lambda e: e["overall"][metric])  # first on ties
    doc = {"task": task, "seed": seed, "lr": float(lr), "epochs_planned": 3, "pretrained_checkpoint": "/ckpt",
           "metric": metric, "evaluations": evaluations, "best_epoch": best["epoch"], "best": best["overall"]}
    path = root / task / f"seed{seed}_lr{lr}" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def full_glue(root: Path) -> dict[str, float]:
    """Every GLUE task, one lr, 3 seeds; returns the expected 9 numbers (x100)."""
    expected = {}
    for task, base in (("QQP", 0.90), ("QNLI", 0.91), ("SST-2", 0.92), ("CoLA", 0.60), ("STS-B", 0.88),
                       ("MRPC", 0.86), ("RTE", 0.70)):
        for k, seed in enumerate((1, 2, 3)):
            write_run(root, task, seed, "2e-5", [base - 0.02, base + 0.01 * k])
        expected[task] = 100 * (base + 0.01)  # the middle one of base, base + .01, base + .02
    for k, seed in enumerate((1, 2, 3)):
        write_run(root, "MNLI", seed, "2e-5", [{"dev_matched.tsv": 0.84 + 0.01 * k, "dev_mismatched.tsv": 0.83}])
    expected["MNLI-m"], expected["MNLI-mm"] = 85.0, 83.0
    return expected


def run_gather(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------------------------------------------------------
# The gather
# ----------------------------------------------------------------------------------------------------------------
def test_best_epoch_median_high_even_seeds_stdev_and_best_lr(tmp_path):
    # lr 2e-5: best epochs 0.60 0.80 0.70 0.65 (4 seeds: median_high = 0.70, not the 0.675 mean of the middle)
    for seed, best in zip((1, 2, 3, 4), (0.60, 0.80, 0.70, 0.65)):
        write_run(tmp_path, "RTE", seed, "2e-5", [best - 0.1, best, best - 0.05])  # best epoch is epoch 2
    # lr 3e-5: higher mean but lower median_high (0.66): 2e-5 wins
    for seed, best in zip((1, 2, 3, 4), (0.95, 0.90, 0.66, 0.50)):
        write_run(tmp_path, "RTE", seed, "3e-5", [best])
    summary = gather_mod.gather(str(tmp_path))
    row = summary.rows["RTE"]
    assert [s.lr for s in row.by_lr] == [2e-5, 3e-5]
    lr2 = row.by_lr[0]
    assert lr2.values == pytest.approx({1: 60.0, 2: 80.0, 3: 70.0, 4: 65.0})
    assert lr2.median == pytest.approx(70.0)
    assert lr2.stdev == pytest.approx(statistics.stdev([60.0, 80.0, 70.0, 65.0]))
    assert row.by_lr[1].median == pytest.approx(90.0)  # median_high of 50 66 90 95
    assert row.best.lr == 3e-5
    # now make 3e-5's median lower: 2e-5 must be chosen
    for seed, best in zip((1, 2, 3, 4), (0.95, 0.60, 0.66, 0.50)):
        write_run(tmp_path, "RTE", seed, "3e-5", [best])
    row = gather_mod.gather(str(tmp_path)).rows["RTE"]
    assert row.by_lr[1].median == pytest.approx(66.0) and row.best.lr == 2e-5
    text = gather_mod.markdown(gather_mod.gather(str(tmp_path)))
    assert f"| RTE | accuracy | 2e-05 | 70.00 \u00b1 {statistics.stdev([60, 80, 70, 65]):.2f} | 4 |" in text


def test_equal_medians_pick_the_smaller_lr_and_one_seed_has_zero_stdev(tmp_path):
    write_run(tmp_path, "MRPC", 1, "5e-5", [0.8])
    write_run(tmp_path, "MRPC", 1, "2e-5", [0.8])
    row = gather_mod.gather(str(tmp_path)).rows["MRPC"]
    assert row.best.lr == 2e-5 and row.best.stdev == 0.0 and len(row.best.values) == 1


def test_headline_metrics_and_mnli_from_the_best_overall_epoch(tmp_path):
    # MNLI: epoch 1 has the best matched accuracy, epoch 2 the best overall: both numbers come from epoch 2
    write_run(tmp_path, "MNLI", 1, "2e-5", [{"dev_matched.tsv": 0.90, "dev_mismatched.tsv": 0.70},
                                            {"dev_matched.tsv": 0.85, "dev_mismatched.tsv": 0.80}])
    write_run(tmp_path, "CoLA", 1, "2e-5", [0.55, 0.61])
    write_run(tmp_path, "STS-B", 1, "2e-5", [0.89, 0.87])
    rows = gather_mod.gather(str(tmp_path)).rows
    assert rows["MNLI-m"].best.median == pytest.approx(85.0)
    assert rows["MNLI-mm"].best.median == pytest.approx(80.0)
    assert (rows["CoLA"].metric, rows["CoLA"].best.median) == ("mcc", pytest.approx(61.0))
    assert (rows["STS-B"].metric, rows["STS-B"].best.median) == ("corr", pytest.approx(89.0))


def test_glue_score_all_nine_numbers_and_mean(tmp_path):
    expected = full_glue(tmp_path)
    summary = gather_mod.gather(str(tmp_path))
    numbers = summary.glue_numbers()
    assert list(numbers) == ["MNLI-m", "MNLI-mm", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE"]
    assert numbers == pytest.approx(expected)
    assert summary.glue_mean() == pytest.approx(sum(expected.values()) / 9)
    proc = run_gather(GATHER, str(tmp_path))
    assert proc.returncode == 0 and proc.stderr == ""
    score_line = [line for line in proc.stdout.splitlines() if line.startswith("| 85.00 | 83.00 |")]
    assert score_line == ["| " + " | ".join(f"{expected[n]:.2f}" for n in numbers) +
                          f" | {sum(expected.values()) / 9:.2f} |"]
    assert "Note:" not in proc.stdout


def test_missing_tasks_show_a_dash_and_the_mean_is_over_the_present_ones(tmp_path):
    write_run(tmp_path, "RTE", 1, "2e-5", [0.70])
    write_run(tmp_path, "CoLA", 1, "2e-5", [0.50])
    proc = run_gather(GATHER, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "| MNLI-m | - | - | - | 0 |" in lines and "| QQP | - | - | - | 0 |" in lines
    assert "| - | - | - | - | - | 50.00 | - | - | 70.00 | 60.00 |" in lines
    assert ("Note: mean over the 2 present of 9 numbers; missing: MNLI-m, MNLI-mm, QQP, QNLI, SST-2, STS-B, MRPC."
            in lines)


def test_malformed_files_are_skipped_with_a_warning_naming_them(tmp_path):
    write_run(tmp_path, "RTE", 1, "2e-5", [0.70])
    bad_json = tmp_path / "RTE" / "seed2_lr2e-5" / "results.json"
    bad_json.parent.mkdir(parents=True)
    bad_json.write_text('{"task": "RTE", "evaluations": [')
    no_best = write_run(tmp_path, "RTE", 3, "2e-5", [0.9])
    doc = json.loads(no_best.read_text())
    del doc["best"]
    no_best.write_text(json.dumps(doc))
    wrong_task = write_run(tmp_path, "MRPC", 1, "2e-5", [0.9])
    doc = json.loads(wrong_task.read_text())
    doc["task"] = "QQP"
    wrong_task.write_text(json.dumps(doc))
    mnli = write_run(tmp_path, "MNLI", 1, "2e-5", [0.8], dev_names=("dev.tsv",))  # no matched/mismatched files
    proc = run_gather(GATHER, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 4 and all(w.startswith("warning: ") and w.endswith("; skipped") for w in warnings)
    assert any(str(bad_json) in w and "invalid JSON" in w for w in warnings)
    assert any(str(no_best) in w and '"best"' in w for w in warnings)
    assert any(str(wrong_task) in w and "'QQP'" in w for w in warnings)
    assert any(str(mnli) in w and "dev_matched.tsv" in w for w in warnings)
    assert "| RTE | accuracy | 2e-05 | 70.00 \u00b1 0.00 | 1 |" in proc.stdout
    assert "Skipped 4 results file(s)" in proc.stdout


@pytest.mark.parametrize("make", ["empty", "missing", "only_bad"])
def test_no_results_is_one_error_line(make, tmp_path):
    root = tmp_path / "out"
    if make != "missing":
        root.mkdir()
    if make == "only_bad":
        (root / "RTE" / "seed1_lr2e-5").mkdir(parents=True)
        (root / "RTE" / "seed1_lr2e-5" / "results.json").write_text("not json")
    proc = run_gather(GATHER, str(root))
    err = [line for line in proc.stderr.splitlines() if not line.startswith("warning: ")]
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(err) == 1 and err[0].startswith(f"error: {GATHER.name}: ") and str(root) in err[0]


def test_output_and_json_summary(tmp_path):
    expected = full_glue(tmp_path / "out")
    table, summary_path = tmp_path / "report" / "glue.md", tmp_path / "report" / "glue.json"
    proc = run_gather(GATHER, str(tmp_path / "out"), "--output", str(table), "--json", "--all-lrs")
    assert proc.returncode == 0, proc.stderr
    assert table.read_text() == proc.stdout and "Every learning rate:" in proc.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["glue_score"]["numbers"] == pytest.approx(expected)
    assert summary["glue_score"]["mean"] == pytest.approx(sum(expected.values()) / 9)
    assert summary["glue_score"]["missing"] == []
    rte = next(r for r in summary["rows"] if r["name"] == "RTE")
    assert (rte["best_lr"], rte["num_seeds"], rte["metric"]) == (2e-5, 3, "accuracy")
    assert rte["by_lr"][0]["values"] == pytest.approx({"1": 70.0, "2": 71.0, "3": 72.0})
    other = tmp_path / "x.json"
    assert run_gather(GATHER, str(tmp_path / "out"), "--json", str(other)).returncode == 0 and other.is_file()
    proc = run_gather(GATHER, str(tmp_path / "out"), "--json")  # no FILE and no --output
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "--json" in proc.stderr


def test_old_recipe_gather_reports_mnli_qqp_race_without_glue_score(tmp_path):
    write_run(tmp_path, "RACE", 1, "2e-5", [{"middle": 0.80, "high": 0.70}, {"middle": 0.78, "high": 0.76}])
    write_run(tmp_path, "MNLI", 1, "1e-5", [0.84])
    write_run(tmp_path, "RTE", 1, "2e-5", [0.70])  # not one of this recipe's tasks: ignored
    proc = run_gather(OLD_GATHER, str(tmp_path), "--json", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert sorted(rows) == ["MNLI-m", "MNLI-mm", "RACE", "RACE-high", "RACE-middle"]
    assert rows["RACE"]["median"] == pytest.approx(77.0)  # epoch 2: overall (0.78 + 0.76) / 2
    assert (rows["RACE-middle"]["median"], rows["RACE-high"]["median"]) == (pytest.approx(78.0), pytest.approx(76.0))
    assert "GLUE score" not in proc.stdout and "RTE" not in proc.stdout
    empty = tmp_path / "empty"
    write_run(empty, "RTE", 1, "2e-5", [0.7])
    proc = run_gather(OLD_GATHER, str(empty))
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {OLD_GATHER.name}: no usable results for MNLI")


# ----------------------------------------------------------------------------------------------------------------
# DRY_RUN of the scripts
# ----------------------------------------------------------------------------------------------------------------
def glue_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A dry-run environment: empty GLUE files and checkpoint dir, outputs under tmp, one device."""
    glue = tmp / "GlueData"
    for task in GLUE_TASKS:
        (glue / task).mkdir(parents=True, exist_ok=True)
        names = ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv") if task == "MNLI" else ("train.tsv", "dev.tsv")
        for name in names:
            (glue / task / name).touch()
    for split in ("train", "dev"):
        for level in ("middle", "high"):
            (tmp / "RACE" / split / level).mkdir(parents=True, exist_ok=True)
    (tmp / "ckpt").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    env.update(DRY_RUN="1", GLUE_DIR=str(glue), RACE_DIR=str(tmp / "RACE"), CHECKPOINT=str(tmp / "ckpt"),
               OUTPUT=str(tmp / "out"))
    env.update(extra)
    return env


def dry_runs(cmd: list[str], env: dict[str, str]) -> tuple[list[tuple[Path, list[str]]], list[str]]:
    """Run a script with DRY_RUN=1: ([(ds_config path, command argv)], all stdout lines)."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    configs = [Path(line.split(": ", 1)[1]) for line in lines if line.startswith("ds_config: ")]
    commands = [shlex.split(line.split(": ", 1)[1]) for line in lines if line.startswith("command: ")]
    assert len(configs) == len(commands)
    return list(zip(configs, commands)), lines


def main_argv(command: list[str]) -> list[str]:
    position = next(i for i, word in enumerate(command) if word.endswith("/tasks/main.py"))
    assert Path(command[position]).resolve() == REPO / "tasks" / "main.py"
    return command[position + 1:]


def flag(argv: list[str], name: str, count: int = 1):
    i = argv.index(name)
    values = argv[i + 1:i + 1 + count]
    return values[0] if count == 1 else values


def parse_with_tasks_main(argv: list[str]):
    """tasks/main.py's parser (Megatron flags + the finetuning flags)."""
    from megatron.arguments import parse_args
    from tasks.finetune import add_finetune_args

    return parse_args(argv, add_finetune_args)


def check_engine(args, ds_config: Path, world_size: int) -> None:
    """The flags and the generated JSON agree as megatron.config reconciles them; DeepSpeed accepts the JSON."""
    from deepspeed.runtime.config import DeepSpeedConfig

    from megatron.config.deepspeed_json import build_deepspeed_dict, resolve_engine_settings

    ds_json = json.loads(ds_config.read_text())
    settings = resolve_engine_settings(micro_batch_size=args.micro_batch_size,
                                       global_batch_size=args.global_batch_size, world_size=world_size,
                                       bf16=args.bf16, fp16=args.fp16, zero_stage=args.zero_stage,
                                       clip_grad=args.clip_grad, ds_json=ds_json, json_path=str(ds_config))
    one_rank = build_deepspeed_dict(settings, ds_json)
    one_rank["train_batch_size"] //= world_size
    DeepSpeedConfig(one_rank)


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_single_run_dry_run_command(task, tmp_path):
    env = glue_env(tmp_path, TASK=task, SEED="1235", LR="3e-5")
    [(ds_config, command)], _ = dry_runs(["bash", str(SINGLE)], env)
    assert command[:3] == ["deepspeed", "--num_gpus", "1"]
    argv = main_argv(command)
    glue = tmp_path / "GlueData" / task
    run_dir = tmp_path / "out" / task / "seed1235_lr3e-5"
    assert flag(argv, "--task") == task
    assert flag(argv, "--train-data") == str(glue / "train.tsv")
    valid = argv[argv.index("--valid-data") + 1:argv.index("--pretrained-checkpoint")]
    if task == "MNLI":
        assert valid == [str(glue / "dev_matched.tsv"), str(glue / "dev_mismatched.tsv")]
    else:
        assert valid == [str(glue / "dev.tsv")]
    expected = {"--pretrained-checkpoint": str(tmp_path / "ckpt"), "--epochs": "3", "--seq-length": "512",
                "--micro-batch-size": "8", "--global-batch-size": "32", "--lr": "3e-5", "--lr-warmup-fraction": "0.1",
                "--lr-decay-style": "linear", "--weight-decay": "0.1", "--seed": "1235",
                "--tokenizer-type": "BertWordPieceLowerCase", "--results-path": str(run_dir / "results.json"),
                "--save": str(run_dir / "checkpoint"), "--load": str(run_dir / "checkpoint"),
                "--deepspeed_config": str(run_dir / "ds_config.json"), "--zero-stage": "0"}
    for name, value in expected.items():
        assert flag(argv, name) == value, name
    assert "--fp16" in argv and "--deepspeed" in argv
    assert not set(MODEL_SHAPE_FLAGS) & set(argv)  # taken from the checkpoint by tasks/main.py
    assert "--vocab-file" not in argv and "--eval-interval" not in argv  # the checkpoint's vocab; eval per epoch
    assert ds_config == run_dir / "ds_config.json"
    ds_json = json.loads(ds_config.read_text())
    assert (ds_json["train_batch_size"], ds_json["train_micro_batch_size_per_gpu"]) == (32, 8)
    assert ds_json["fp16"]["enabled"] is True and ds_json["zero_optimization"]["stage"] == 0
    assert ds_json["data_types"] == {"grad_accum_dtype": "fp16"}  # fp16: the model's dtype (DeepSpeed's default)
    assert sorted(p.name for p in run_dir.iterdir()) == ["ds_config.json"]  # nothing else is created
    args = parse_with_tasks_main(argv)
    assert (args.task, args.epochs, args.seed, args.lr, args.weight_decay) == (task, 3, 1235, 3e-5, 0.1)
    assert args.valid_data == valid and args.results_path == str(run_dir / "results.json")
    check_engine(args, ds_config, 1)


def test_positional_args_launchers_devices_and_options(tmp_path):
    env = glue_env(tmp_path)
    [(_, command)], _ = dry_runs(["bash", str(SINGLE), "RTE", "7", "5e-5"], env)
    argv = main_argv(command)
    assert (flag(argv, "--task"), flag(argv, "--seed"), flag(argv, "--lr")) == ("RTE", "7", "5e-5")

    extra = dict(TASK="CoLA", LAUNCHER="torchrun", NUM_GPUS="8", MASTER_PORT="29600", PRECISION="bf16",
                 VOCAB_PATH=str(REPO / "data" / "tokenizers" / "bert-wordpiece" / "vocab.txt"), EVAL_INTERVAL="100",
                 SAVE_CHECKPOINT="false", SEQ_LENGTH="128", DROPOUT="0")
    [(ds_config, command)], _ = dry_runs(["bash", str(SINGLE)], glue_env(tmp_path, **extra))
    assert command[:5] == ["torchrun", "--nproc_per_node", "8", "--master_port", "29600"]
    argv = main_argv(command)
    # 32 / 8 ranks = 4 samples per rank: the micro-batch drops to 4
    assert (flag(argv, "--micro-batch-size"), flag(argv, "--global-batch-size")) == ("4", "32")
    assert flag(argv, "--vocab-file") == extra["VOCAB_PATH"] and flag(argv, "--eval-interval") == "100"
    assert flag(argv, "--seq-length") == "128"
    assert (flag(argv, "--hidden-dropout"), flag(argv, "--attention-dropout")) == ("0", "0")
    assert "--bf16" in argv and "--fp16" not in argv and "--save" not in argv and "--load" not in argv
    # bf16: ZeRO-1 with fp32 gradient accumulation (ZeRO-0 would sum the micro-batch gradients in bf16)
    assert flag(argv, "--zero-stage") == "1"
    assert json.loads(ds_config.read_text())["data_types"] == {"grad_accum_dtype": "fp32"}
    args = parse_with_tasks_main(argv)
    check_engine(args, ds_config, 8)

    [(ds_config, command)], _ = dry_runs(["bash", str(SINGLE)], glue_env(tmp_path, TASK="RTE", GPU_IDS="2,3"))
    assert command[:4] == ["deepspeed", "--include", "localhost:2,3", str(REPO / "tasks" / "main.py")]
    assert flag(main_argv(command), "--micro-batch-size") == "8"  # 16 per rank = 2 micro-batches of 8

    env = glue_env(tmp_path, TASK="RTE", LAUNCHER="python", PYTHON=sys.executable, GPU_IDS="1", PRECISION="fp32")
    [(ds_config, command)], _ = dry_runs(["bash", str(SINGLE)], env)
    assert command[:3] == ["env", "CUDA_VISIBLE_DEVICES=1", sys.executable]
    assert "--fp16" not in main_argv(command) and json.loads(ds_config.read_text())["fp16"]["enabled"] is False


def test_sweep_covers_every_task_seed_and_lr(tmp_path):
    runs, lines = dry_runs(["bash", str(SWEEP)], glue_env(tmp_path, NUM_GPUS="1"))
    assert lines[0].startswith("sweep: 8 tasks x 5 seeds x 4 lrs = 160 runs on 1 device(s)")
    seen = []
    for ds_config, command in runs:
        assert command[:3] == ["deepspeed", "--num_gpus", "1"]  # one device: nothing pinned, default port
        argv = main_argv(command)
        seen.append((flag(argv, "--task"), flag(argv, "--seed"), flag(argv, "--lr")))
        assert flag(argv, "--epochs") == "3"
        assert ds_config.parent == tmp_path / "out" / seen[-1][0] / f"seed{seen[-1][1]}_lr{seen[-1][2]}"
    assert len(seen) == 160 and set(seen) == {(t, s, l) for t in SWEEP_TASKS for s in SWEEP_SEEDS for l in SWEEP_LRS}
    assert [t for t, _, _ in seen[::20]] == list(SWEEP_TASKS)  # task order of the spec
    gather = shlex.split(lines[-1].split(": ", 1)[1])
    assert lines[-1].startswith("gather: ") and gather[1:] == [str(GATHER), str(tmp_path / "out"), "--output",
                                                               str(tmp_path / "out" / "glue_results.md"), "--json"]


def test_sweep_deals_runs_to_devices_and_cpu_defaults(tmp_path):
    env = glue_env(tmp_path, TASKS="RTE MNLI", SEEDS="1 2 3", LRS="2e-5", GPU_IDS="4,6", MASTER_PORT="30000")
    runs, _ = dry_runs(["bash", str(SWEEP)], env)
    pinned = {}
    for _, command in runs:
        argv = main_argv(command)
        pinned[(flag(argv, "--task"), flag(argv, "--seed"))] = (command[2], command[4])
    # jobs in order RTE 1, RTE 2, RTE 3, MNLI 1, MNLI 2, MNLI 3 dealt round-robin to the two devices
    assert pinned == {("RTE", "1"): ("localhost:4", "30000"), ("RTE", "2"): ("localhost:6", "30001"),
                      ("RTE", "3"): ("localhost:4", "30000"), ("MNLI", "1"): ("localhost:6", "30001"),
                      ("MNLI", "2"): ("localhost:4", "30000"), ("MNLI", "3"): ("localhost:6", "30001")}
    runs, lines = dry_runs(["bash", str(SWEEP)], glue_env(tmp_path, NUM_GPUS="0", TASKS="SST-2", SEEDS="1",
                                                          LRS="2e-5 4e-5", PYTHON=sys.executable))
    assert "on CPU" in lines[0] and len(runs) == 2
    for ds_config, command in runs:
        assert command[:2] == [sys.executable, str(REPO / "tasks" / "main.py")]  # python, no device pinning
        assert "--fp16" not in command and json.loads(ds_config.read_text())["fp16"]["enabled"] is False


def test_sweep_counts_devices_with_torch(tmp_path):
    """Without NUM_GPUS the sweep asks torch; on a machine without GPUs that is the CPU mode."""
    import torch

    env = glue_env(tmp_path, TASKS="RTE", SEEDS="1", LRS="2e-5", PYTHON=sys.executable)
    _, lines = dry_runs(["bash", str(SWEEP)], env)
    n = torch.cuda.device_count()
    assert lines[0].endswith(f"= 1 runs on {'CPU' if n == 0 else f'{n} device(s)'}, output {tmp_path / 'out'}")


@pytest.mark.parametrize("script,task,gbs,lr,epochs,warmup,mbs", [
    ("ds_finetune_bert_mnli.sh", "MNLI", "128", "1e-5", "10", "0.065", "8"),
    ("ds_finetune_bert_qqp.sh", "QQP", "128", "5e-5", "12", "0.065", "8"),
    ("ds_finetune_bert_race.sh", "RACE", "32", "2e-5", "3", "0.06", "4"),
])
def test_megatron_paper_recipes(script, task, gbs, lr, epochs, warmup, mbs, tmp_path):
    env = glue_env(tmp_path, NUM_GPUS="1", OUTPUT=str(tmp_path / "old"))
    [(ds_config, command)], _ = dry_runs(["bash", str(OLD / script)], env)
    argv = main_argv(command)
    run_dir = tmp_path / "old" / task / f"seed1234_lr{lr}"
    expected = {"--task": task, "--global-batch-size": gbs, "--lr": lr, "--epochs": epochs,
                "--lr-warmup-fraction": warmup, "--micro-batch-size": mbs, "--seq-length": "512",
                "--weight-decay": "0.1", "--lr-decay-style": "linear", "--seed": "1234",
                "--results-path": str(run_dir / "results.json")}
    for name, value in expected.items():
        assert flag(argv, name) == value, name
    valid = argv[argv.index("--valid-data") + 1:argv.index("--pretrained-checkpoint")]
    train = argv[argv.index("--train-data") + 1:argv.index("--valid-data")]
    if task == "RACE":
        race = tmp_path / "RACE"
        assert train == [str(race / "train" / "middle"), str(race / "train" / "high")]
        assert valid == [str(race / "dev" / "middle"), str(race / "dev" / "high")]
    elif task == "MNLI":
        assert valid == [str(tmp_path / "GlueData" / "MNLI" / n) for n in ("dev_matched.tsv", "dev_mismatched.tsv")]
    else:
        assert valid == [str(tmp_path / "GlueData" / "QQP" / "dev.tsv")]
    assert ds_config == run_dir / "ds_config.json" and not set(MODEL_SHAPE_FLAGS) & set(argv)
    # the recipe's own template
    assert json.loads(ds_config.read_text())["train_batch_size"] == int(gbs)
    args = parse_with_tasks_main(argv)
    check_engine(args, ds_config, 1)
    # the environment overrides a default; 8 GPUs split the global batch
    [(_, command)], _ = dry_runs(["bash", str(OLD / script)], dict(env, LR="3e-5", NUM_GPUS="8"))
    argv = main_argv(command)
    assert flag(argv, "--lr") == "3e-5" and command[:3] == ["deepspeed", "--num_gpus", "8"]
    assert flag(argv, "--micro-batch-size") == str(min(int(mbs), int(gbs) // 8))


def test_old_recipe_template_is_the_glue_template():
    assert (GLUE / "ds_config_bert_TEMPLATE.json").read_text() == (OLD / "ds_config_bert_TEMPLATE.json").read_text()


# ----------------------------------------------------------------------------------------------------------------
# The sweep end to end, with a stand-in for tasks/main.py
# ----------------------------------------------------------------------------------------------------------------
FAKE_MAIN = r'''
import json, os, sys
argv = sys.argv[1:]
def values(name):
    i = argv.index(name) + 1
    out = []
    while i < len(argv) and not argv[i].startswith("--"):
        out.append(argv[i]); i += 1
    return out
task, seed, lr = values("--task")[0], int(values("--seed")[0]), float(values("--lr")[0])
if task == os.environ.get("FAIL_TASK"):
    print("error: --train-data: something is wrong", file=sys.stderr); sys.exit(2)
metric = {"CoLA": "mcc", "STS-B": "corr"}.get(task, "accuracy")
value = 0.5 + (seed % 10) / 100 + lr * 1000
dev = {os.path.basename(p): {metric: value} for p in values("--valid-data")}
ev = {"epoch": 1, "iteration": 1, "dev": dev, "overall": {metric: value}}
doc = {"task": task, "seed": seed, "lr": lr, "epochs_planned": int(values("--epochs")[0]), "metric": metric,
       "evaluations": [ev] * int(values("--epochs")[0]), "best_epoch": 1, "best": ev["overall"],
       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "master_port": os.environ.get("MASTER_PORT")}
path = values("--results-path")[0]
os.makedirs(os.path.dirname(path), exist_ok=True)
json.dump(doc, open(path, "w"))
print("fake training done")
'''


def fake_python(tmp: Path) -> Path:
    """A `python` that runs FAKE_MAIN in place of tasks/main.py and is the real interpreter otherwise."""
    (tmp / "fake_main.py").write_text(FAKE_MAIN)
    script = tmp / "python"
    script.write_text(f'#!/bin/bash\nif [[ "$1" == */tasks/main.py ]]; then shift; exec {shlex.quote(sys.executable)} '
                      f'{shlex.quote(str(tmp / "fake_main.py"))} "$@"; fi\nexec {shlex.quote(sys.executable)} "$@"\n')
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("num_gpus", ["0", "2"])
def test_sweep_runs_every_job_then_gathers(num_gpus, tmp_path):
    env = glue_env(tmp_path, NUM_GPUS=num_gpus, LAUNCHER="python", PYTHON=str(fake_python(tmp_path)),
                   TASKS="RTE MNLI", SEEDS="1 2", LRS="2e-5 3e-5", PRECISION="fp32")
    env.pop("DRY_RUN")
    proc = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    jobs = [(t, s, l) for t in ("RTE", "MNLI") for s in ("1", "2") for l in ("2e-5", "3e-5")]
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("done: ")) == sorted(
        f"done: {t} seed {s} lr {l}" + ("" if num_gpus == "0" else f" (device {i % 2})")
        for i, (t, s, l) in enumerate(jobs))
    docs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/*/results.json")]
    assert len(docs) == 8
    if num_gpus == "2":  # one run per device at a time, each with its own port
        devices = {(d["cuda_visible_devices"], d["master_port"]) for d in docs}
        assert devices == {("0", "29500"), ("1", "29501")}
    else:
        assert {(d["cuda_visible_devices"], d["master_port"]) for d in docs} == {(None, None)}
    assert (tmp_path / "out" / "RTE" / "seed1_lr2e-5" / "log.txt").read_text().count("fake training done") == 1
    table = (tmp_path / "out" / "glue_results.md").read_text()
    assert table in proc.stdout and (tmp_path / "out" / "glue_results.json").is_file()
    assert "| RTE | accuracy | 3e-05 | 55.00 \u00b1 0.71 | 2 |" in table  # 0.5 + seed / 100 + lr x 1000: 54, 55
    # a second sweep finds every run complete and skips it
    again = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("skip: ") == 8 and "start: " not in again.stdout


def test_sweep_goes_on_after_a_failed_run(tmp_path):
    env = glue_env(tmp_path, NUM_GPUS="0", PYTHON=str(fake_python(tmp_path)), TASKS="RTE CoLA", SEEDS="1",
                   LRS="2e-5", FAIL_TASK="RTE")
    env.pop("DRY_RUN")
    proc = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == [f"FAILED (exit 2): RTE seed 1 lr 2e-5: error: --train-data: something is wrong; see "
                      f"{tmp_path / 'out' / 'RTE' / 'seed1_lr2e-5' / 'log.txt'}"]
    assert "done: CoLA seed 1 lr 2e-5" in proc.stdout and "| CoLA | mcc | 2e-05 |" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ds_finetune_bert_glue_run.sh: some runs failed")


def test_real_run_stops_before_launching_when_data_is_missing(tmp_path):
    env = glue_env(tmp_path, TASK="RTE", LAUNCHER="python", PYTHON="/bin/false")
    env.pop("DRY_RUN")
    (tmp_path / "GlueData" / "RTE" / "dev.tsv").unlink()
    proc = subprocess.run(["bash", str(SINGLE)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {SINGLE.name}: not found: {tmp_path / 'GlueData' / 'RTE' / 'dev.tsv'}"]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one error line
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script,argv,extra_env,message", [
    (SINGLE, [], {}, "no task: set TASK or give it as argument 1"),
    (SINGLE, ["mnli"], {}, "unknown task 'mnli'"),
    (SINGLE, ["RTE", "x"], {}, "SEED must be a non-negative integer, got 'x'"),
    (SINGLE, ["RTE", "1", "fast"], {}, "LR must be a number such as 2e-5, got 'fast'"),
    (SINGLE, ["RTE", "1", "2e-5", "extra"], {}, "expected at most 3 positional arguments"),
    (SINGLE, ["RTE"], {"EPOCHS": "0"}, "EPOCHS must be a positive integer"),
    (SINGLE, ["RTE"], {"CHECKPOINT": ""}, "CHECKPOINT is not set"),
    (SINGLE, ["RTE"], {"NUM_GPUS": "3"}, "global batch 32 is not divisible by the 3 data-parallel ranks"),
    (SINGLE, ["RTE"], {"MICRO_BATCH_SIZE": "5"}, "not a multiple of MICRO_BATCH_SIZE 5"),
    (SINGLE, ["RTE"], {"LAUNCHER": "mpirun"}, "LAUNCHER must be deepspeed, torchrun or python"),
    (SINGLE, ["RTE"], {"LAUNCHER": "python", "NUM_GPUS": "2"}, "LAUNCHER=python runs one process"),
    (SINGLE, ["RTE"], {"PRECISION": "fp8"}, "PRECISION must be fp16, bf16 or fp32"),
    (SINGLE, ["RTE"], {"GPU_IDS": "0,1", "NUM_GPUS": "4"}, "NUM_GPUS=4 but GPU_IDS '0,1' names 2 device(s)"),
    (SINGLE, ["RTE"], {"LR_WARMUP_FRACTION": "2"}, "LR_WARMUP_FRACTION must be a number in [0, 1]"),
    (SINGLE, ["RTE"], {"SAVE_CHECKPOINT": "yes"}, "SAVE_CHECKPOINT must be true or false"),
    (SINGLE, ["RTE"], {"DROPOUT": "1"}, "DROPOUT must be a number in [0, 1)"),
    (SWEEP, [], {"TASKS": "RTE WNLI"}, "TASKS: unknown GLUE task 'WNLI'"),
    (SWEEP, [], {"SEEDS": "1 two"}, "SEEDS: 'two' is not a non-negative integer"),
    (SWEEP, [], {"LRS": "2e-5 big"}, "LRS: 'big' is not a number"),
    (SWEEP, [], {"NUM_GPUS": "-1"}, "NUM_GPUS must be a non-negative integer"),
    (SWEEP, [], {"CHECKPOINT": ""}, "CHECKPOINT is not set"),
    (SWEEP, [], {"LAUNCHER": "srun"}, "LAUNCHER must be deepspeed, torchrun or python"),
    (SWEEP, ["ckpt"], {}, "takes no arguments"),
    (OLD / "ds_finetune_bert_mnli.sh", ["1"], {}, "takes no arguments"),
    (OLD / "ds_finetune_bert_race.sh", [], {"EPOCHS": "three"}, "EPOCHS must be a positive integer"),
])
def test_bad_input_is_one_error_line(script, argv, extra_env, message, tmp_path):
    env = glue_env(tmp_path, **{"NUM_GPUS": "1", **extra_env})
    proc = subprocess.run(["bash", str(script), *argv], env=env, capture_output=True, text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith(f"error: {script.name}: "), proc.stderr
    assert message in err[0]
    assert proc.stdout == "" and not (tmp_path / "out").exists()
