"""The GPT zero/few-shot evaluation recipes: examples_deepspeed/data_efficiency/gpt/eval/ (spec §7.4).

* DRY_RUN=1 of ds_evalharness_1gpu.sh: the printed tasks/eval_harness/evaluate.py command goes through the real
  parser (checkpoint, task list, shots, results path {result_dir}/{ckpt_parent}/{ckpt}/{tasks}_{k}shot.json,
  batch, --adaptive_seq_len/--eval_fp32, include path, limit, seed); DeepSpeed launcher on a GPU with the dummy
  DeepSpeed JSON, python on the CPU.
* The parallel scripts: the 16 task groups of §7.4 (0-shot, batch 32) and the 10-shot list (batch 16, no
  wikitext, anli_r3 alone) x checkpoints, dealt to devices with their own ports, results that exist skipped;
  end to end with a stand-in for evaluate.py (sequential on CPU, one run per device in parallel, a failed run).
* The gather on synthetic lm-eval-shaped results and on a real lm-eval results dict: the 19-task average, the
  per-task metric choice, wikitext reported but not averaged, missing tasks named, malformed files (warning),
  no results (one error line).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EVAL = REPO / "examples_deepspeed" / "data_efficiency" / "gpt" / "eval"
SINGLE = EVAL / "ds_evalharness_1gpu.sh"
PARALLEL = EVAL / "ds_evalharness_parallel_run.sh"
PARALLEL_10 = EVAL / "ds_evalharness_parallel_run_10shot.sh"
GATHER = EVAL / "ds_evalharness_gather_result.py"
DS_CONFIG = EVAL / "ds_config_eval_dummy.json"
EVALUATE = REPO / "tasks" / "eval_harness" / "evaluate.py"

GROUPS_0SHOT = ["record", "triviaqa", "hellaswag", "arc_challenge", "arc_easy", "race", "multirc", "openbookqa",
                "lambada_openai", "webqs", "winogrande", "piqa", "anli_r1,anli_r2,anli_r3", "boolq,copa", "rte,wsc",
                "wikitext"]
GROUPS_10SHOT = ["record", "triviaqa", "hellaswag", "arc_challenge", "arc_easy", "race", "multirc", "openbookqa",
                 "lambada_openai", "webqs", "winogrande", "piqa", "anli_r1,anli_r2", "anli_r3", "boolq,copa",
                 "rte,wsc"]
TASK_ORDER = ["hellaswag", "lambada", "triviaqa", "webqs", "winogrande", "piqa", "arc_challenge", "arc_easy",
              "anli_r1", "anli_r2", "anli_r3", "openbookqa", "race", "boolq", "copa", "rte", "wsc", "multirc",
              "record"]
ENV_DROP = ("CHECKPOINT", "CHECKPOINTS", "TASKS", "TASK_GROUPS", "NUM_FEWSHOT", "BATCH_SIZE", "RESULT_DIR",
            "INCLUDE_PATH", "LIMIT", "SEED", "EVAL_FP32", "ADAPTIVE_SEQ_LEN", "LAUNCHER", "GPU_ID", "GPU_IDS",
            "NUM_GPUS", "MASTER_PORT", "DS_CONFIG", "PYTHON", "RESULTS_PATH_ONLY", "DRY_RUN", "SKIP_DONE",
            "MIN_FREE_MEMORY", "POLL_SECONDS", "RECIPE_NAME", "CUDA_VISIBLE_DEVICES", "FAIL_TASKS")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gather_mod = _load(GATHER, "gpt_eval_gather_under_test")


def eval_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    ckpt = tmp / "runs" / "ckpt_a"
    ckpt.mkdir(parents=True, exist_ok=True)
    env.update(CHECKPOINT=str(ckpt), RESULT_DIR=str(tmp / "out"), DRY_RUN="1")
    env.update(extra)
    return env


def dry_runs(cmd: list[str], env: dict[str, str]) -> tuple[list[tuple[Path, list[str]]], list[str]]:
    """(results path, command argv) of every run a DRY_RUN prints, and all stdout lines."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    runs, results = [], None
    for line in lines:
        if line.startswith("results: "):
            results = Path(line.split(": ", 1)[1])
        elif line.startswith("command: "):
            runs.append((results, shlex.split(line.split(": ", 1)[1])))
    return runs, lines


def evaluate_args(command: list[str]):
    """Parse the evaluate.py part of a command with evaluate.py's own parser."""
    from tasks.eval_harness.evaluate import build_parser
    i = command.index(str(EVALUATE))
    return build_parser().parse_args(command[i + 1:])


# ----------------------------------------------------------------------------------------------------------------
# ds_evalharness_1gpu.sh
# ----------------------------------------------------------------------------------------------------------------
def test_single_run_on_cpu_is_python_with_upstream_settings(tmp_path):
    env = eval_env(tmp_path, LAUNCHER="python", PYTHON=sys.executable)
    [(results, command)], _ = dry_runs(["bash", str(SINGLE), env["CHECKPOINT"], "hellaswag"], env)
    assert command[:2] == [sys.executable, str(EVALUATE)]
    assert results == tmp_path / "out" / "runs" / "ckpt_a" / "hellaswag_0shot.json"  # {ckpt_parent}/{ckpt}
    args = evaluate_args(command)
    assert (args.load, args.task_list, args.num_fewshot) == (env["CHECKPOINT"], "hellaswag", 0)
    assert args.results_path == str(results) and args.micro_batch_size == 32
    assert args.adaptive_seq_len and args.eval_fp32 and not args.deepspeed
    assert args.include_path is None and args.limit is None and args.seed is None


def test_single_run_on_a_gpu_uses_the_deepspeed_launcher(tmp_path):
    off = tmp_path / "offline"
    off.mkdir()
    env = eval_env(tmp_path, GPU_ID="3", MASTER_PORT="29611", BATCH_SIZE="4", INCLUDE_PATH=f"{off}:{tmp_path}",
                   LIMIT="20", SEED="7", EVAL_FP32="false", ADAPTIVE_SEQ_LEN="false")
    [(results, command)], _ = dry_runs(["bash", str(SINGLE), env["CHECKPOINT"] + "/", "anli_r1,anli_r2", "10"], env)
    assert command[:6] == ["deepspeed", "--include", "localhost:3", "--master_port", "29611", str(EVALUATE)]
    assert results == tmp_path / "out" / "runs" / "ckpt_a" / "anli_r1,anli_r2_10shot.json"
    args = evaluate_args(command)
    assert (args.task_list, args.num_fewshot, args.micro_batch_size) == ("anli_r1,anli_r2", 10, 4)
    assert args.include_path == [str(off), str(tmp_path)] and args.limit == 20 and args.seed == 7
    assert not args.adaptive_seq_len and not args.eval_fp32
    assert args.deepspeed and args.deepspeed_config == str(DS_CONFIG) and args.inference
    # the deepspeed launcher appends --local_rank=N, which evaluate.py accepts
    assert evaluate_args(command + ["--local_rank=0"]).local_rank == 0
    # GPU_ID unset: one device chosen by the launcher
    env = eval_env(tmp_path, LAUNCHER="deepspeed")
    [(_, command)], _ = dry_runs(["bash", str(SINGLE), env["CHECKPOINT"], "piqa"], env)
    assert command[:4] == ["deepspeed", "--num_gpus", "1", str(EVALUATE)]
    # python on a chosen GPU
    env = eval_env(tmp_path, LAUNCHER="python", PYTHON=sys.executable, GPU_ID="1")
    [(_, command)], _ = dry_runs(["bash", str(SINGLE), env["CHECKPOINT"], "piqa"], env)
    assert command[:3] == ["env", "CUDA_VISIBLE_DEVICES=1", sys.executable]


def test_single_run_chooses_the_launcher_from_torch(tmp_path):
    import torch

    env = eval_env(tmp_path, PYTHON=sys.executable, TASKS="piqa")
    [(_, command)], _ = dry_runs(["bash", str(SINGLE)], env)
    assert command[0] == ("deepspeed" if torch.cuda.is_available() else sys.executable)


def test_dummy_deepspeed_config():
    cfg = json.loads(DS_CONFIG.read_text())
    assert (cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"]) == (2048, 16)
    assert cfg["fp16"]["enabled"] is False and cfg["bf16"]["enabled"] is False
    assert cfg["zero_optimization"]["stage"] == 0


# ----------------------------------------------------------------------------------------------------------------
# The parallel scripts (DRY_RUN)
# ----------------------------------------------------------------------------------------------------------------
def _ckpts(tmp: Path) -> list[Path]:
    out = [tmp / "runs" / "ckpt_a", tmp / "runs" / "ckpt_b"]
    for c in out:
        c.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.parametrize("script,groups,shots,batch", [(PARALLEL, GROUPS_0SHOT, 0, 32),
                                                       (PARALLEL_10, GROUPS_10SHOT, 10, 16)])
def test_suite_task_groups_times_checkpoints(script, groups, shots, batch, tmp_path):
    ckpts = _ckpts(tmp_path)
    env = eval_env(tmp_path, CHECKPOINTS=" ".join(map(str, ckpts)), NUM_GPUS="1")
    runs, lines = dry_runs(["bash", str(script)], env)
    assert lines[0] == (f"gpt eval: 2 checkpoint(s) x 16 task groups = 32 runs, {shots}-shot, on 1 device(s), "
                        f"results under {tmp_path / 'out'}")
    seen = []
    for results, command in runs:
        assert command[:7] == ["deepspeed", "--include", "localhost:0", "--master_port", "29500", str(EVALUATE),
                               "--load"]
        args = evaluate_args(command)
        assert (args.num_fewshot, args.micro_batch_size, args.adaptive_seq_len, args.eval_fp32) == (shots, batch,
                                                                                                     True, True)
        assert results == tmp_path / "out" / "runs" / Path(args.load).name / f"{args.task_list}_{shots}shot.json"
        assert args.results_path == str(results)
        seen.append((args.load, args.task_list))
    assert seen == [(str(c), g) for c in ckpts for g in groups]
    tasks = [t for g in groups for t in g.split(",")]
    assert sorted(set(tasks) - {"lambada_openai", "wikitext"} | {"lambada"}) == sorted(TASK_ORDER)  # the 19
    assert ("wikitext" in tasks) == (shots == 0)
    gather = shlex.split(lines[-1].split(": ", 1)[1])
    assert lines[-1].startswith("gather: ") and gather[1:] == [
        str(GATHER), str(tmp_path / "out" / "runs" / "ckpt_a"), str(tmp_path / "out" / "runs" / "ckpt_b"),
        "--num_fewshot", str(shots), "--output", str(tmp_path / "out" / f"gpt_eval_{shots}shot.md")]


def test_suite_deals_groups_to_devices_skips_existing_results_and_runs_python_on_cpu(tmp_path):
    env = eval_env(tmp_path, GPU_IDS="4,6", MASTER_PORT="30000", TASK_GROUPS="piqa boolq,copa rte,wsc hellaswag")
    done = tmp_path / "out" / "runs" / "ckpt_a" / "rte,wsc_0shot.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    runs, lines = dry_runs(["bash", str(PARALLEL)], env)
    pinned = {evaluate_args(c).task_list: (c[2], c[4]) for _, c in runs}
    assert pinned == {"piqa": ("localhost:4", "30000"), "boolq,copa": ("localhost:6", "30001"),
                      "hellaswag": ("localhost:6", "30001")}
    assert f"skip: rte,wsc 0-shot ({env['CHECKPOINT']}): results exist" in lines
    runs, _ = dry_runs(["bash", str(PARALLEL)], dict(env, SKIP_DONE="false"))
    assert len(runs) == 4
    env = eval_env(tmp_path, NUM_GPUS="0", PYTHON=sys.executable, TASK_GROUPS="piqa wikitext")
    runs, lines = dry_runs(["bash", str(PARALLEL)], env)
    assert "on CPU" in lines[0] and len(runs) == 2
    for _, command in runs:
        assert command[:2] == [sys.executable, str(EVALUATE)] and not evaluate_args(command).deepspeed


# ----------------------------------------------------------------------------------------------------------------
# Synthetic lm-eval results
# ----------------------------------------------------------------------------------------------------------------
ACC_NORM = {"hellaswag", "piqa", "arc_challenge", "arc_easy", "openbookqa"}


def entry(task: str, value: float) -> dict:
    """One task's entry of lm-eval 0.4's "results" with the metrics that task reports."""
    if task == "wikitext":
        return {"alias": task, "word_perplexity,none": value, "word_perplexity_stderr,none": "N/A",
                "byte_perplexity,none": 1.8, "bits_per_byte,none": 0.85}
    if task == "record":
        return {"alias": task, "f1,none": value, "f1_stderr,none": 0.01, "em,none": value - 0.01}
    if task == "triviaqa":
        return {"alias": task, "exact_match,remove_whitespace": value, "exact_match_stderr,remove_whitespace": 0.01}
    if task == "webqs":
        return {"alias": task, "exact_match,none": value, "exact_match_stderr,none": 0.01}
    out = {"alias": task, "acc,none": value, "acc_stderr,none": 0.01}
    if task in ACC_NORM:
        out["acc,none"] = value - 0.05  # acc_norm must be the one reported
        out["acc_norm,none"] = value
        out["acc_norm_stderr,none"] = 0.01
    return out


def write_results(path: Path, values: dict[str, float], shots: int = 0) -> Path:
    doc = {"results": {t: entry(t, v) for t, v in values.items()}, "n-shot": {t: shots for t in values},
           "versions": {t: 1.0 for t in values}, "configs": {t: {"task": t} for t in values},
           "config": {"model": "megatron"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def suite_values(offset: float = 0.0) -> dict[str, float]:
    """Distinct values per task (lambada under its lm-eval 0.4 name), and a wikitext perplexity."""
    values = {("lambada_openai" if t == "lambada" else t): 0.20 + 0.01 * i + offset for i, t in enumerate(TASK_ORDER)}
    values["wikitext"] = 35.5
    return values


def test_nineteen_task_average_metric_choice_and_wikitext(tmp_path):
    run = tmp_path / "out" / "runs" / "ckpt_a"
    values = suite_values()
    groups = [g.split(",") for g in GROUPS_0SHOT]
    for g in groups:  # one file per task group, as the recipe writes them
        write_results(run / f"{','.join(g)}_0shot.json", {t: values[t] for t in g})
    summary = gather_mod.gather([str(tmp_path / "out")])
    [col] = summary.columns
    assert col.label == "runs/ckpt_a 0-shot" and col.shots == 0  # {ckpt_parent}/{ckpt} and col.missing == []
    metric = {t: col.scores[t].metric for t in TASK_ORDER + ["wikitext"]}
    assert metric == {**{t: "acc" for t in TASK_ORDER}, **{t: "acc_norm" for t in ACC_NORM}, "record": "f1",
                      "triviaqa": "exact_match", "webqs": "exact_match", "wikitext": "word_perplexity"}
    expected = [100 * (0.20 + 0.01 * i) for i in range(19)]
    assert [col.scores[t].value for t in TASK_ORDER] == pytest.approx(expected)
    assert col.average == pytest.approx(sum(expected) / 19)  # wikitext's 35.5 is not in it
    assert col.scores["wikitext"].value == 35.5  # a perplexity: not x100
    proc = subprocess.run([sys.executable, str(GATHER), str(tmp_path / "out"), "--output",
                           str(tmp_path / "table.md"), "--json", str(tmp_path / "summary.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| task")]
    assert [r.split(" | ")[0][2:] for r in rows] == TASK_ORDER + ["**Avg (19 tasks)**", "wikitext"]
    assert "| hellaswag | acc_norm | 20.00 |" in lines and "| record | f1 | 38.00 |" in lines
    assert "| triviaqa | exact_match | 22.00 |" in lines and "| lambada | acc | 21.00 |" in lines
    assert f"| **Avg (19 tasks)** | | {sum(expected) / 19:.2f} |" in lines
    assert "| wikitext | word_perplexity | 35.50 |" in lines and "Missing" not in proc.stdout
    assert (tmp_path / "table.md").read_text() == proc.stdout
    summary_json = json.loads((tmp_path / "summary.json").read_text())
    assert summary_json["columns"][0]["average"] == pytest.approx(sum(expected) / 19)
    # the summary in the results tree is not read back as a results file
    (tmp_path / "summary.json").rename(run / "summary.json")
    again = subprocess.run([sys.executable, str(GATHER), str(run)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stderr == "" and again.stdout == proc.stdout


def test_subset_names_the_missing_tasks_and_columns_per_run_and_shots(tmp_path):
    a = tmp_path / "out" / "runs" / "ckpt_a"
    b = tmp_path / "out" / "runs" / "ckpt_b"
    write_results(a / "hellaswag_0shot.json", {"hellaswag": 0.30})
    write_results(a / "boolq,copa_0shot.json", {"boolq": 0.60, "copa": 0.70})
    write_results(a / "wikitext_0shot.json", {"wikitext": 40.0})
    write_results(a / "hellaswag_10shot.json", {"hellaswag": 0.32}, shots=10)
    write_results(b / "hellaswag_0shot.json", {"hellaswag": 0.40})
    proc = subprocess.run([sys.executable, str(GATHER), str(a), str(b)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "| task | metric | ckpt_a 0-shot | ckpt_a 10-shot | ckpt_b 0-shot |" in lines
    assert "| hellaswag | acc_norm | 30.00 | 32.00 | 40.00 |" in lines
    assert "| boolq | acc | 60.00 | - | - |" in lines and "| record | - | - | - | - |" in lines
    assert "| **Avg (19 tasks)** | | 53.33 | 32.00 | 40.00 |" in lines
    assert "| wikitext | word_perplexity | 40.00 | - | - |" in lines
    missing = [t for t in TASK_ORDER if t not in ("hellaswag", "boolq", "copa")]
    assert f"- ckpt_a 0-shot: Avg over 3 of the 19 tasks; missing: {', '.join(missing)}." in lines
    only10 = subprocess.run([sys.executable, str(GATHER), str(tmp_path / "out"), "--num_fewshot", "10"],
                            capture_output=True, text=True, timeout=60)
    assert only10.returncode == 0 and "| task | metric | runs/ckpt_a 10-shot |" in only10.stdout.splitlines()


def test_older_harness_results_and_other_tasks(tmp_path):
    run = tmp_path / "run"
    old = {"results": {"hellaswag": {"acc": 0.30, "acc_norm": 0.35, "acc_norm_stderr": 0.01},
                       "lambada": {"ppl": 20.0, "acc": 0.45}, "triviaqa": {"acc": 0.02},
                       "sciq": {"acc": 0.7, "acc_norm": 0.65}},
           "versions": {}, "config": {"num_fewshot": 10}}
    (run).mkdir()
    (run / "some_name.json").write_text(json.dumps(old))
    [col] = gather_mod.gather([str(run)]).columns
    assert col.shots == 10
    assert {t: (s.metric, round(s.value, 6)) for t, s in col.scores.items()} == {
        "hellaswag": ("acc_norm", 35.0), "lambada": ("acc", 45.0), "triviaqa": ("acc", 2.0),
        "sciq": ("acc_norm", 65.0)}
    text = gather_mod.markdown(gather_mod.gather([str(run)]))
    assert "Other tasks (not in the average):" in text and "| sciq | acc_norm | 65.00 |" in text


def test_malformed_files_are_skipped_with_a_warning_and_duplicates_take_the_newer(tmp_path):
    run = tmp_path / "run"
    write_results(run / "piqa_0shot.json", {"piqa": 0.60})
    (run / "race_0shot.json").write_text('{"results": {"race": ')
    (run / "notes.json").write_text('{"something": 1}')
    (run / "boolq_0shot.json").write_text(json.dumps({"results": {"boolq": {"acc,none": "n/a"}}}))
    older = write_results(run / "a_copy_0shot.json", {"piqa": 0.50})
    past = time.time() - 100
    os.utime(older, (past, past))
    proc = subprocess.run([sys.executable, str(GATHER), str(run)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    warnings = proc.stderr.strip().splitlines()
    assert f"warning: {run / 'race_0shot.json'}: invalid JSON (line 1 column 22: Expecting value); skipped" in warnings
    assert (f"warning: {run / 'notes.json'}: not an lm-eval results file (no \"results\" object); skipped"
            in warnings)
    assert f"warning: {run / 'boolq_0shot.json'}: no task with a usable metric in \"results\"; skipped" in warnings
    assert (f"warning: piqa (0-shot) is in both {older} and {run / 'piqa_0shot.json'}; using the newer "
            f"{run / 'piqa_0shot.json'}") in warnings
    assert len(warnings) == 4
    assert "| piqa | acc_norm | 60.00 |" in proc.stdout and "Skipped 3 file(s)" in proc.stdout


def test_no_results_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "empty")], f"no usable lm-eval results in {tmp_path / 'empty'}"),
             ([str(tmp_path / "nope")], f"{tmp_path / 'nope'}: no such file or directory")]
    write_results(tmp_path / "zero" / "piqa_0shot.json", {"piqa": 0.5})
    cases.append(([str(tmp_path / "zero"), "--num_fewshot", "10"],
                  f"no usable 10-shot lm-eval results in {tmp_path / 'zero'}"))
    for argv, message in cases:
        proc = subprocess.run([sys.executable, str(GATHER), *argv], capture_output=True, text=True, timeout=60)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(err) == 1 and proc.stdout == "", proc.stderr
        assert err[0] == f"error: ds_evalharness_gather_result.py: {message}"
    proc = subprocess.run([sys.executable, str(GATHER)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_gather_reads_a_real_lm_eval_results_dict(tmp_path, monkeypatch):
    """lm-eval 0.4's own output (offline tasks, a stub LM), as evaluate.py writes it."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    import lm_eval
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    from tasks.eval_harness.offline_tasks import build_offline_tasks

    class Stub(LM):
        def loglikelihood(self, requests):
            return [(-float(len(r.args[1])), True) for r in requests]

        def loglikelihood_rolling(self, requests):
            return [-len(r.args[0]) / 4.0 for r in requests]

        def generate_until(self, requests):
            return [" the" for _ in requests]

    names = build_offline_tasks(str(tmp_path / "tasks"), num_docs=5)
    out = lm_eval.simple_evaluate(model=Stub(), tasks=names, num_fewshot=0, bootstrap_iters=0, log_samples=False,
                                  task_manager=TaskManager(include_path=str(tmp_path / "tasks"),
                                                           include_defaults=False))
    path = tmp_path / "out" / "runs" / "ckpt" / f"{','.join(names)}_0shot.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(out, default=handle_non_serializable))
    [col] = gather_mod.gather([str(path.parent)]).columns
    res = out["results"]
    assert {t: s.metric for t, s in col.scores.items()} == {
        "corpus_perplexity": "word_perplexity", "corpus_lastword": "acc", "corpus_lastword_gen": "exact_match",
        "corpus_choice": "acc_norm"}
    assert col.scores["corpus_perplexity"].value == pytest.approx(res["corpus_perplexity"]["word_perplexity,none"])
    assert col.scores["corpus_choice"].value == pytest.approx(100 * res["corpus_choice"]["acc_norm,none"])
    assert col.scores["corpus_lastword"].value == 100.0 and col.average is None
    assert col.scores["corpus_perplexity"].stderr is None  # lm-eval's "N/A"
    text = gather_mod.markdown(gather_mod.gather([str(path.parent)]))
    assert "- runs/ckpt 0-shot: none of the 19 tasks; no average." in text
    assert "| hellaswag |" not in text and "| corpus_choice | acc_norm |" in text  # no empty suite table


# ----------------------------------------------------------------------------------------------------------------
# End to end with a stand-in for evaluate.py
# ----------------------------------------------------------------------------------------------------------------
FAKE_EVALUATE = r'''
import argparse, json, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--load"); p.add_argument("--task_list"); p.add_argument("--num_fewshot", type=int)
p.add_argument("--results_path"); p.add_argument("--micro-batch-size")
args, _ = p.parse_known_args()
tasks = args.task_list.split(",")
if set(tasks) & set(os.environ.get("FAIL_TASKS", "").split(",")):
    print("error: unknown task " + tasks[0], file=sys.stderr); sys.exit(2)
time.sleep(0.2)
results = {t: ({"word_perplexity,none": 30.0} if t == "wikitext" else {"acc,none": 0.5, "acc_norm,none": 0.5,
           "f1,none": 0.5, "exact_match,none": 0.5}) for t in tasks}
doc = {"results": results, "n-shot": {t: args.num_fewshot for t in tasks},
       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
os.makedirs(os.path.dirname(args.results_path), exist_ok=True)
tmp = args.results_path + ".tmp"
json.dump(doc, open(tmp, "w")); os.replace(tmp, args.results_path)
print("fake evaluation done")
'''


def fake_python(tmp: Path) -> Path:
    """A `python` that runs FAKE_EVALUATE in place of evaluate.py and is the real interpreter otherwise."""
    (tmp / "fake_evaluate.py").write_text(FAKE_EVALUATE)
    script = tmp / "python"
    script.write_text(f'#!/bin/bash\nif [[ "$1" == */tasks/eval_harness/evaluate.py ]]; then shift; exec '
                      f'{shlex.quote(sys.executable)} {shlex.quote(str(tmp / "fake_evaluate.py"))} "$@"; fi\n'
                      f'exec {shlex.quote(sys.executable)} "$@"\n')
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("num_gpus", ["0", "2"])
def test_suite_runs_every_group_then_gathers(num_gpus, tmp_path):
    groups = "piqa boolq,copa rte,wsc wikitext"
    env = eval_env(tmp_path, NUM_GPUS=num_gpus, LAUNCHER="python", PYTHON=str(fake_python(tmp_path)),
                   TASK_GROUPS=groups, MIN_FREE_MEMORY="0", POLL_SECONDS="0.1")
    env.pop("DRY_RUN")
    proc = subprocess.run(["bash", str(PARALLEL)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    done = sorted(line for line in proc.stdout.splitlines() if line.startswith("done: "))
    assert len(done) == 4 and all(f"({env['CHECKPOINT']})" in line for line in done)
    run = tmp_path / "out" / "runs" / "ckpt_a"
    docs = {p.name: json.loads(p.read_text()) for p in run.glob("*.json")}
    assert sorted(docs) == sorted(f"{g}_0shot.json" for g in groups.split())
    devices = {d["cuda_visible_devices"] for d in docs.values()}
    assert devices == ({None} if num_gpus == "0" else {"0", "1"})
    assert (run / "piqa_0shot.log").read_text().count("fake evaluation done") == 1
    table = (tmp_path / "out" / "gpt_eval_0shot.md").read_text()
    assert table in proc.stdout and "| piqa | acc_norm | 50.00 |" in table
    assert "| wikitext | word_perplexity | 30.00 |" in table
    assert "Avg over 5 of the 19 tasks" in table
    again = subprocess.run(["bash", str(PARALLEL)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("skip: ") == 4 and "start: " not in again.stdout


def test_suite_goes_on_after_a_failed_run(tmp_path):
    env = eval_env(tmp_path, NUM_GPUS="0", PYTHON=str(fake_python(tmp_path)), TASK_GROUPS="piqa boolq,copa",
                   FAIL_TASKS="copa")
    env.pop("DRY_RUN")
    proc = subprocess.run(["bash", str(PARALLEL_10)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    log = tmp_path / "out" / "runs" / "ckpt_a" / "boolq,copa_10shot.log"
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == [f"FAILED (exit 2): boolq,copa 10-shot ({env['CHECKPOINT']}): error: unknown task boolq; "
                      f"see {log}"]
    assert "done: piqa 10-shot" in proc.stdout and "| piqa | acc_norm | 50.00 |" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: ds_evalharness_parallel_run_10shot.sh: 1 run(s) failed")


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one error line
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script,argv,extra_env,message", [
    (SINGLE, [], {"CHECKPOINT": ""}, "CHECKPOINT is not set"),
    (SINGLE, [], {}, "no tasks: set TASKS"),
    (SINGLE, ["ck", "piqa,", "0"], {}, "TASKS must be comma-separated lm-eval task names"),
    (SINGLE, ["ck", "piqa", "x"], {}, "NUM_FEWSHOT must be a non-negative integer, got 'x'"),
    (SINGLE, ["ck", "piqa", "0", "more"], {}, "expected at most 3 positional arguments"),
    (SINGLE, [], {"TASKS": "piqa", "BATCH_SIZE": "0"}, "BATCH_SIZE must be a positive integer"),
    (SINGLE, [], {"TASKS": "piqa", "LIMIT": "all"}, "LIMIT must be a positive number"),
    (SINGLE, [], {"TASKS": "piqa", "EVAL_FP32": "yes"}, "EVAL_FP32 must be true or false"),
    (SINGLE, [], {"TASKS": "piqa", "GPU_ID": "0,1"}, "GPU_ID must be one device number"),
    (SINGLE, [], {"TASKS": "piqa", "LAUNCHER": "torchrun"}, "LAUNCHER must be deepspeed or python"),
    (PARALLEL, [], {"TASK_GROUPS": "piqa boolq,,copa"}, "TASK_GROUPS: 'boolq,,copa' is not a comma-separated"),
    (PARALLEL, [], {"NUM_GPUS": "-1"}, "NUM_GPUS must be a non-negative integer"),
    (PARALLEL, [], {"GPU_IDS": "0,1", "NUM_GPUS": "3"}, "NUM_GPUS=3 but GPU_IDS '0,1' names 2 device(s)"),
    (PARALLEL, [], {"CHECKPOINT": ""}, "CHECKPOINTS is not set"),
    (PARALLEL, [], {"MIN_FREE_MEMORY": "101"}, "MIN_FREE_MEMORY must be a percentage"),
    (PARALLEL, [], {"BATCH_SIZE": "many"}, "BATCH_SIZE must be a positive integer"),
    (PARALLEL, ["ckpt"], {}, "takes no arguments"),
    (PARALLEL, [], {"CHECKPOINTS": "/nonexistent/ckpt", "DRY_RUN": "0"}, "not found: /nonexistent/ckpt"),
    (PARALLEL_10, [], {"NUM_FEWSHOT": "ten"}, "NUM_FEWSHOT must be a non-negative integer"),
])
def test_bad_input_is_one_error_line(script, argv, extra_env, message, tmp_path):
    env = eval_env(tmp_path, **{"NUM_GPUS": "1", **extra_env})
    proc = subprocess.run(["bash", str(script), *argv], env=env, capture_output=True, text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith(f"error: {script.name}: "), proc.stderr
    assert message in err[0]
    assert proc.stdout == "" and not (tmp_path / "out").exists()
