"""examples_deepspeed/data_efficiency/analyze_data.py and the four analysis recipe scripts."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from megatron.data.gpt_dataset import build_train_valid_test_datasets
from megatron.data_efficiency.analyzer_io import read_index_rows
from test_analyzer import assert_index_files, make_token_file, spec_nll

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = os.path.join(ROOT, "examples_deepspeed", "data_efficiency")
GPT2 = os.path.join(ROOT, "data", "tokenizers", "gpt2-bpe")


def load_cli():
    """The analyze_data.py module (examples_deepspeed is not a package)."""
    spec = importlib.util.spec_from_file_location("analyze_data", os.path.join(RECIPES, "analyze_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = load_cli()


def gpt_argv(task: str, metric: str, prefix: str, save: str, *extra: str) -> list[str]:
    """Flags like gpt/ds_analyze_gpt_data_{map,reduce}.sh, scaled down."""
    return ["--analyzing-task", task, "--analyzing-data-type", "GPT", "--analyzing-metric", metric,
            "--vocab-file", f"{GPT2}/vocab.json", "--merge-file", f"{GPT2}/merges.txt", "--data-path", prefix,
            "--data-impl", "mmap", "--tokenizer-type", "GPT2BPETokenizer", "--micro-batch-size", "1",
            "--global-batch-size", "50", "--seq-length", "24", "--max-position-embeddings", "24", "--num-layers", "1",
            "--hidden-size", "1", "--num-attention-heads", "1", "--split", "90,10,0", "--distributed-backend", "gloo",
            "--train-data-exact-num-epochs", "2", "--return-data-index", "--save-interval", "1", "--save", save,
            *extra]


def test_cli_gpt_map_reduce_end_to_end(tmp_path):
    """total_vocab_freq then vocab_rarity, map (2 threads) + reduce, equal the spec formulas on the train split."""
    prefix = make_token_file(str(tmp_path), seed=5, num_docs=80)
    save = str(tmp_path / "analysis")
    for metric in ("total_vocab_freq", "vocab_rarity"):
        assert CLI.main(gpt_argv("map", metric, prefix, save, "--analyzing-num-threads", "2")) == 0
        assert CLI.main(gpt_argv("reduce", metric, prefix, save, "--analyzing-num-threads", "2",
                                 "--analyzing-num-threads-reduce", "2")) == 0
    train, _, _ = build_train_valid_test_datasets([prefix], "mmap", "90,10,0", [1, 1, 1], 24, 1234,
                                                  train_data_exact_num_epochs=2, return_data_index=True)
    samples = [train[i]["text"] for i in range(len(train))]
    freq = sum(np.bincount(s, minlength=8193) for s in samples)  # shipped GPT-2 BPE: padded vocab 8192
    data, sizes = read_index_rows(os.path.join(save, "total_vocab_freq", "total_vocab_freq_metric_value"))
    assert sizes.tolist() == [8193] and data.astype(np.int64).tolist() == freq.tolist()
    nll = spec_nll(freq)
    assert_index_files(save, "vocab_rarity", np.array([int(np.sum(nll[s])) for s in samples]))


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    """Bad input: exit status 2 and one `error:` line naming the flag or file."""
    prefix = make_token_file(str(tmp_path), seed=1)
    save = str(tmp_path / "analysis")
    cases = [
        (gpt_argv("map", "seqlen", prefix, save), "--analyzing-metric seqlen needs BERT data"),
        (gpt_argv("reduce", "vocab_rarity", prefix, save), "for worker 0 thread 0 is missing"),
        (gpt_argv("map", "vocab_rarity", prefix, save), "run the map and reduce stages for total_vocab_freq"),
        ([a for a in gpt_argv("map", "total_vocab_freq", prefix, save) if a != "2"
          and a != "--train-data-exact-num-epochs"], "--train-data-exact-num-epochs is required"),
        (gpt_argv("map", "total_vocab_freq", str(tmp_path / "nope"), save), "nope.idx: index file not found"),
        (gpt_argv("map", "total_vocab_freq", prefix, save, "--analyzing-worker-id", "3"),
         "--analyzing-worker-id must be in [0, 0]"),
    ]
    for argv, message in cases:
        assert CLI.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (message, err)


def test_cli_checks_metrics_and_ids_before_building_the_dataset(tmp_path, capsys):
    """Metric names, worker/thread ids and the total_vocab_freq input fail fast, before the dataset is read."""
    missing = str(tmp_path / "no_such_corpus")  # building the dataset would fail with "index file not found"
    save = str(tmp_path / "analysis")
    cases = [
        (gpt_argv("map", "vocab_rarty", missing, save), "--analyzing-metric 'vocab_rarty' is unknown"),
        (gpt_argv("map", "total_vocab_freq", missing, save, "--analyzing-worker-id", "1"),
         "--analyzing-worker-id must be in [0, 0]"),
        (gpt_argv("map", "total_vocab_freq", missing, save, "--analyzing-num-threads", "2",
                  "--analyzing-specific-threads", "2"), "--analyzing-specific-threads [2] must be distinct"),
        (gpt_argv("map", "vocab_rarity", missing, save), "run the map and reduce stages for total_vocab_freq"),
        (gpt_argv("map_reduce", "total_vocab_freq", missing, save, "--analyzing-num-workers", "2"),
         "map_reduce runs one worker"),
    ]
    for argv, message in cases:
        assert CLI.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
    # map_reduce of both metrics: vocab_rarity's input is made by the first stage, so only the data is missing
    argv = gpt_argv("map_reduce", "vocab_rarity", missing, save)
    argv.insert(argv.index("vocab_rarity") + 1, "total_vocab_freq")
    assert CLI.main(argv) == 2
    assert "no_such_corpus.idx: index file not found" in capsys.readouterr().err


def test_cli_subprocess_reports_without_traceback(tmp_path):
    """Run as a script: a missing map output gives exit 2, `error: ...`, no traceback."""
    proc = subprocess.run([sys.executable, os.path.join(RECIPES, "analyze_data.py"),
                           *gpt_argv("reduce", "total_vocab_freq", "unused", str(tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: map output of metric total_vocab_freq for worker 0 thread 0 is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script,data_type,seq,epochs,tokenizer", [
    ("gpt/ds_analyze_gpt_data_map.sh", "GPT", 2048, 1, "GPT2BPETokenizer"),
    ("gpt/ds_analyze_gpt_data_reduce.sh", "GPT", 2048, 1, "GPT2BPETokenizer"),
    ("bert/ds_analyze_bert_data_map.sh", "BERT", 512, 5, "BertWordPieceLowerCase"),
    ("bert/ds_analyze_bert_data_reduce.sh", "BERT", 512, 5, "BertWordPieceLowerCase"),
])
def test_recipe_scripts_parse_with_the_real_cli(tmp_path, script, data_type, seq, epochs, tokenizer):
    """Every flag each analysis script passes parses with analyze_data.py's parser; spec §2.9 defaults kept."""
    stub = tmp_path / "stub.py"
    stub.write_text("import json, os, sys\njson.dump(sys.argv[1:], open(os.environ['ARGV_OUT'], 'w'))\n")
    out = tmp_path / "argv.json"
    env = dict(os.environ, PYTHON=f"{sys.executable} {stub}", ARGV_OUT=str(out), SAVE_PATH=str(tmp_path / "save"))
    subprocess.run(["bash", os.path.join(RECIPES, script)], env=env, check=True, capture_output=True, timeout=60)
    argv = json.loads(out.read_text())
    assert argv[0].endswith("analyze_data.py") and os.path.isfile(argv[0])
    args = CLI.parse_args(argv[1:], CLI.add_analyzer_args)
    stage = "map" if script.endswith("map.sh") else "reduce"
    assert (args.analyzing_task, args.analyzing_data_type, args.analyzing_metric) == (stage, data_type,
                                                                                       ["total_vocab_freq"])
    assert (args.seq_length, args.train_data_exact_num_epochs, args.tokenizer_type) == (seq, epochs, tokenizer)
    assert (args.analyzing_num_workers, args.analyzing_num_threads, args.global_batch_size) == (1, 40, 10000)
    assert args.split == "949,50,1" and args.return_data_index and args.save == str(tmp_path / "save")
    assert os.path.isfile(args.vocab_file)
    if stage == "reduce":
        assert args.analyzing_num_threads_reduce == 40
