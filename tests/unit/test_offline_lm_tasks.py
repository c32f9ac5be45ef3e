"""The offline lm-eval tasks (tasks/eval_harness/offline_tasks.py) built from the bundled corpus.

* The builder: held-out documents only (after the train part of --split 949,50,1, or the last K), --num-docs,
  deterministic per seed, atomic writes, the exact context/target strings on a small hand-made corpus,
  the data and YAML files, one error line for bad input.
* Every task loads and runs in lm-eval 0.4 offline with a stub LM (constant-ish log-likelihoods): the request
  types and counts, the request strings (context, " " + last word, choices, whole documents, generation
  kwargs), the metric names, metric values recomputed from the stub's answers, and few-shot contexts.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tasks.eval_harness import offline_tasks as ot  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TASKS = ["corpus_perplexity", "corpus_lastword", "corpus_lastword_gen", "corpus_choice"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("offline_tasks")
    names = ot.build_offline_tasks(str(out), num_docs=24, seed=7)
    assert names == TASKS
    return out


# ----------------------------------------------------------------------------------------------------------------
# The builder
# ----------------------------------------------------------------------------------------------------------------
def test_files_held_out_documents_and_counts(built):
    info = json.loads((built / ot.INFO_FILE).read_text())
    corpus = [json.loads(line) for line in gzip.open(ot.DEFAULT_CORPUS, "rt", encoding="utf-8")]
    # the quickstart trains on the first part of --split 949,50,1 (documents 0..2476 of 2611)
    from megatron.data.dataset_utils import get_train_valid_test_split_
    train_end = get_train_valid_test_split_("949,50,1", len(corpus))[1]
    assert info["corpus_docs"] == len(corpus) and info["pool_first_doc"] == train_end
    assert info["pool_docs"] == len(corpus) - train_end
    assert sorted(p.name for p in built.glob("*.yaml")) == sorted(f"{t}.yaml" for t in TASKS)
    assert sorted(p.name for p in (built / "data").iterdir()) == ["corpus_choice.jsonl", "corpus_lastword.jsonl",
                                                                  "corpus_perplexity.jsonl"]
    assert not list(built.rglob("*.tmp*"))
    for name, rows in (("corpus_perplexity", 24), ("corpus_lastword", 24), ("corpus_choice", 24)):
        records = _jsonl(built / "data" / f"{name}.jsonl")
        assert len(records) == rows and info["tasks"][name]["num_docs"] == rows
        assert all(r["doc_index"] >= train_end for r in records)
        assert [r["doc_index"] for r in records] == sorted(r["doc_index"] for r in records)  # corpus order
    # perplexity: the last 24 documents of the file, raw text as pretraining reads it
    ppl = _jsonl(built / "data" / "corpus_perplexity.jsonl")
    assert [r["text"] for r in ppl] == [d["text"] for d in corpus[-24:]]
    assert [r["source"] for r in ppl] == [d["source"] for d in corpus[-24:]]
    for task in TASKS:
        yaml_text = (built / f"{task}.yaml").read_text()
        data = json.dumps(str(built / "data" / ot.DATA_FILES[task]))
        assert f"    test: {data}\n" in yaml_text and "dataset_path: json\n" in yaml_text
        assert f"output_type: {ot.OUTPUT_TYPES[task]}\n" in yaml_text


def test_lastword_and_choice_records(built):
    for r in _jsonl(built / "data" / "corpus_lastword.jsonl"):
        word = r["last_word"]
        assert re.fullmatch(r"[A-Za-z]{2,}", word) and r["continuation"] == " " + word
        assert r["text"] == r["context"] + r["continuation"]
        assert word.lower() in {w.lower() for w in re.findall(r"[A-Za-z]+", r["context"])}  # seen before
        assert "`" not in r["text"] and "\n" not in r["text"] and 12 <= len(r["text"].split()) <= 200
    records = _jsonl(built / "data" / "corpus_choice.jsonl")
    corpus = [json.loads(line) for line in gzip.open(ot.DEFAULT_CORPUS, "rt", encoding="utf-8")]
    info = json.loads((built / ot.INFO_FILE).read_text())
    files_of: dict[str, set] = {}  # continuation sentence -> files of the passages it continues
    for doc in corpus[info["pool_first_doc"]:]:
        for paragraph in ot.prose_paragraphs(doc["text"]):
            pair = ot.choice_candidate(paragraph)
            if pair:
                files_of.setdefault(pair[1], set()).add(doc["source"].split("#")[0])
    labels = []
    for r in records:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and 0 <= r["label"] < 4
        labels.append(r["label"])
        own_file = r["source"].split("#")[0]
        paragraphs = ot.prose_paragraphs(corpus[r["doc_index"]]["text"])
        assert any(p.startswith(r["context"] + " " + r["choices"][r["label"]]) for p in paragraphs)
        for i, c in enumerate(r["choices"]):
            assert ot.good_sentence(c)
            if i != r["label"]:
                assert files_of[c] - {own_file}  # a continuation of a passage of another file
    assert len(set(labels)) > 1  # the gold position is shuffled


def test_deterministic_seed_and_num_docs(built, tmp_path):
    again = tmp_path / "again"
    ot.build_offline_tasks(str(again), num_docs=24, seed=7)
    for name in ("corpus_perplexity", "corpus_lastword", "corpus_choice"):
        assert (again / "data" / f"{name}.jsonl").read_bytes() == (built / "data" / f"{name}.jsonl").read_bytes()
    other = tmp_path / "other"
    ot.build_offline_tasks(str(other), num_docs=24, seed=8)
    assert (other / "data" / "corpus_lastword.jsonl").read_bytes() != (built / "data" / "corpus_lastword.jsonl"
                                                                        ).read_bytes()
    assert (other / "data" / "corpus_perplexity.jsonl").read_bytes() == (built / "data" / "corpus_perplexity.jsonl"
                                                                          ).read_bytes()
    small = tmp_path / "small"
    ot.build_offline_tasks(str(small), num_docs=3, seed=7, tasks=["corpus_lastword_gen"])
    assert sorted(p.name for p in small.glob("*.yaml")) == ["corpus_lastword_gen.yaml"]
    assert len(_jsonl(small / "data" / "corpus_lastword.jsonl")) == 3


SMALL_CORPUS = [
    {"text": "Training text that must never be used.\n", "source": "train/a.rst.txt#0"},
    {"text": ("Title\n=====\n\nThe :func:`open` function opens a file and the file object is then returned to "
              "the caller as a new file.\n\n.. code-block:: python\n\n   x = open('f')\n\n"
              "A context manager closes the file. It is the recommended way to open files. Files are closed "
              "even when an exception is raised inside the block.\n"), "source": "lib/io.rst.txt#0"},
    {"text": ("The *socket* module exposes sockets. Every socket has a family and a type. Sockets are closed "
              "when they are garbage collected.\n\n"
              "Additional words about network programming live in this paragraph about the module.\n"),
     "source": "lib/socket.rst.txt#0"},
    {"text": ("Threads share the process memory. A lock protects shared state from concurrent updates. Locks can "
              "be used as context managers.\n\nQueues are the easiest way to pass work between threads. A queue is "
              "safe to use from several threads.\n"), "source": "lib/threading.rst.txt#0"},
    {"text": ("Dates have a year, a month and a day. The date type is immutable. Dates can be compared with "
              "each other.\n"), "source": "lib/datetime.rst.txt#0"},
]


def _write_corpus(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def test_exact_strings_on_a_small_corpus(tmp_path):
    corpus = _write_corpus(tmp_path / "c.jsonl", SMALL_CORPUS)
    out = tmp_path / "out"
    ot.build_offline_tasks(str(out), corpus=str(corpus), heldout_docs=4, num_docs=50, seed=1)
    lastword = _jsonl(out / "data" / "corpus_lastword.jsonl")
    # io: markup reduced to the text Sphinx shows (:func:`open` -> open()), final period dropped, "file" occurs
    # earlier; socket's second paragraph ends with "module", which occurs only in the preceding paragraph, which
    # then opens the passage
    assert [(r["context"], r["continuation"]) for r in lastword] == [
        ("The open() function opens a file and the file object is then returned to the caller as a new", " file"),
        ("The socket module exposes sockets. Every socket has a family and a type. Sockets are closed when they "
         "are garbage collected. Additional words about network programming live in this paragraph about the",
         " module"),
        ("Queues are the easiest way to pass work between threads. A queue is safe to use from several", " threads"),
    ]
    assert [r["source"] for r in lastword] == ["lib/io.rst.txt#0", "lib/socket.rst.txt#0",
                                               "lib/threading.rst.txt#0"]
    ppl = _jsonl(out / "data" / "corpus_perplexity.jsonl")
    assert [r["text"] for r in ppl] == [d["text"] for d in SMALL_CORPUS[1:]]  # not the training document
    choice = _jsonl(out / "data" / "corpus_choice.jsonl")
    pairs = [(r["source"], r["context"], r["choices"][r["label"]]) for r in choice]
    assert pairs == [
        ("lib/io.rst.txt#0", "A context manager closes the file. It is the recommended way to open files.",
         "Files are closed even when an exception is raised inside the block."),
        ("lib/socket.rst.txt#0", "The socket module exposes sockets. Every socket has a family and a type.",
         "Sockets are closed when they are garbage collected."),
        ("lib/threading.rst.txt#0",
         "Threads share the process memory. A lock protects shared state from concurrent updates.",
         "Locks can be used as context managers."),
        ("lib/threading.rst.txt#0", "Queues are the easiest way to pass work between threads.",
         "A queue is safe to use from several threads."),
        ("lib/datetime.rst.txt#0", "Dates have a year, a month and a day. The date type is immutable.",
         "Dates can be compared with each other."),
    ]
    golds = [gold for *_, gold in pairs]
    for r in choice:  # distractors: the continuations of passages of the other files
        own = {gold for source, _, gold in pairs if source == r["source"]}
        assert sorted(r["choices"]) == sorted(set(r["choices"]))
        assert set(r["choices"]) - {r["choices"][r["label"]]} <= set(golds) - own
    assert all("Training text" not in json.dumps(r) for r in ppl + lastword + choice)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks.eval_harness.offline_tasks", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_input_is_one_error_line(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": \n')
    no_prose = _write_corpus(tmp_path / "code.jsonl", [{"text": ".. code-block:: python\n\n   x = 1\n"}] * 3)
    cases = [
        (["--num-docs", "0"], "--num-docs must be a positive integer"),
        (["--corpus", str(tmp_path / "missing.jsonl")], "cannot read corpus"),
        (["--corpus", str(bad_json)], "bad.jsonl:2: not JSON"),
        (["--corpus", str(no_prose), "--heldout-docs", "3", "--tasks", "corpus_choice"], "give no corpus_choice"),
        (["--heldout-docs", "100000"], "the corpus has only 2611 documents"),
        (["--split", "100,0,0"], "nothing is held out"),
        (["--split", "a,b"], "--split 'a,b'"),
        (["--tasks", "wikitext"], "invalid choice"),
    ]
    for extra, message in cases:
        proc = _cli("--output-dir", str(tmp_path / "o"), *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: offline_tasks: ") and message in lines[0], \
            (extra, proc.stderr)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.yaml"))
    proc = _cli("--output-dir", str(tmp_path / "ok"), "--num-docs", "2", "--tasks", "corpus_lastword")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1 tasks" in proc.stdout and (tmp_path / "ok" / "corpus_lastword.yaml").exists()


# ----------------------------------------------------------------------------------------------------------------
# lm-eval 0.4, offline, with a stub LM
# ----------------------------------------------------------------------------------------------------------------
import lm_eval  # noqa: E402  (a core dependency: a missing one must fail, not skip)
from lm_eval.api.model import LM  # noqa: E402


class StubLM(LM):
    """Records every request. loglikelihood: (-len(continuation), True); rolling: -len(text)/4;
    generate_until: answers from `answers` (context -> text), else " nothing"."""

    def __init__(self, answers: dict[str, str] | None = None):
        super().__init__()
        self.requests: dict[str, list[tuple]] = {"loglikelihood": [], "loglikelihood_rolling": [],
                                                 "generate_until": []}
        self.answers = answers or {}

    def loglikelihood(self, requests):
        args = [r.args for r in requests]
        self.requests["loglikelihood"] += args
        return [(-float(len(cont)), True) for _, cont in args]

    def loglikelihood_rolling(self, requests):
        args = [r.args for r in requests]
        self.requests["loglikelihood_rolling"] += args
        return [-len(text) / 4.0 for (text,) in args]

    def generate_until(self, requests):
        args = [r.args for r in requests]
        self.requests["generate_until"] += args
        return [self.answers.get(ctx, " nothing") for ctx, _ in args]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """HF datasets' json builder caches under the test's tmp dir, not ~/.cache."""
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")


def _evaluate(lm: LM, include: Path, tasks: list[str], num_fewshot: int = 0) -> dict:
    from lm_eval.tasks import TaskManager
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, bootstrap_iters=0,
                                   log_samples=False, task_manager=TaskManager(include_path=str(include),
                                                                               include_defaults=False))


def test_lm_eval_runs_every_task_offline(built):
    lastword = _jsonl(built / "data" / "corpus_lastword.jsonl")
    ppl = _jsonl(built / "data" / "corpus_perplexity.jsonl")
    choice = _jsonl(built / "data" / "corpus_choice.jsonl")
    # generation: right for every third passage (once with trailing space), wrong case or extra text otherwise
    answers = {}
    for i, r in enumerate(lastword):
        answers[r["context"]] = [" " + r["last_word"], r["last_word"].upper() + "X", " " + r["last_word"] + " "][i % 3]
    expected_em = sum(1 for i in range(len(lastword)) if i % 3 != 1) / len(lastword)
    lm = StubLM(answers)
    out = _evaluate(lm, built, TASKS)
    res = out["results"]
    assert set(res) == set(TASKS)
    for task in TASKS:
        for metric in ot.TASK_METRICS[task]:
            assert f"{metric},none" in res[task], (task, sorted(res[task]))
        assert out["n-shot"][task] == 0
    # requests: one rolling request per document (the whole raw text), one loglikelihood per passage and per
    # choice, one generation per passage
    assert lm.requests["loglikelihood_rolling"] == [(r["text"],) for r in ppl]
    ll = lm.requests["loglikelihood"]
    assert len(ll) == len(lastword) + 4 * len(choice)
    lastword_reqs = [a for a in ll if a in {(r["context"], " " + r["last_word"]) for r in lastword}]
    assert sorted(lastword_reqs) == sorted((r["context"], " " + r["last_word"]) for r in lastword)
    choice_reqs = set(ll) - set(lastword_reqs)
    assert choice_reqs == {(r["context"], " " + c) for r in choice for c in r["choices"]}
    gens = lm.requests["generate_until"]
    assert sorted(ctx for ctx, _ in gens) == sorted(r["context"] for r in lastword)
    kwargs = gens[0][1]
    assert kwargs["until"] == ["\n", "."] and kwargs["max_gen_toks"] == ot.GEN_MAX_TOKENS
    assert kwargs["do_sample"] is False
    # metrics recomputed from the stub's answers
    words = sum(len(re.split(r"\s+", r["text"])) for r in ppl)
    n_bytes = sum(len(r["text"].encode("utf-8")) for r in ppl)
    total_ll = sum(-len(r["text"]) / 4.0 for r in ppl)
    assert res["corpus_perplexity"]["word_perplexity,none"] == pytest.approx(math.exp(-total_ll / words))
    assert res["corpus_perplexity"]["byte_perplexity,none"] == pytest.approx(math.exp(-total_ll / n_bytes))
    assert res["corpus_perplexity"]["bits_per_byte,none"] == pytest.approx(-total_ll / n_bytes / math.log(2))
    assert res["corpus_lastword"]["acc,none"] == 1.0
    mean_ll = sum(-float(len(" " + r["last_word"])) for r in lastword) / len(lastword)
    assert res["corpus_lastword"]["perplexity,none"] == pytest.approx(math.exp(-mean_ll))
    assert res["corpus_lastword_gen"]["exact_match,none"] == pytest.approx(expected_em)
    # multiple choice: ll = -len(" " + choice): acc picks the first shortest choice, acc_norm (ll / len(choice))
    # the first longest one
    acc = sum(min(range(4), key=lambda i: (len(r["choices"][i]), i)) == r["label"] for r in choice) / len(choice)
    acc_norm = sum(max(range(4), key=lambda i: (len(r["choices"][i]), -i)) == r["label"] for r in choice) / len(
        choice)
    assert res["corpus_choice"]["acc,none"] == pytest.approx(acc)
    assert res["corpus_choice"]["acc_norm,none"] == pytest.approx(acc_norm)
    assert json.dumps(out["configs"], default=str)  # the results dict lm-eval returns serializes


def test_lm_eval_few_shot_contexts(built):
    lastword = _jsonl(built / "data" / "corpus_lastword.jsonl")
    by_context = {r["context"]: r for r in lastword}
    lm = StubLM()
    out = _evaluate(lm, built, ["corpus_lastword", "corpus_lastword_gen", "corpus_choice"], num_fewshot=2)
    assert out["n-shot"] == {"corpus_lastword": 2, "corpus_lastword_gen": 2, "corpus_choice": 2}
    shots_ll = [ctx for ctx, cont in lm.requests["loglikelihood"] if ctx.split("\n\n")[-1] in by_context]
    shots_gen = [ctx for ctx, _ in lm.requests["generate_until"]]
    assert len(shots_ll) == len(shots_gen) == len(lastword)
    for ctx in shots_ll:  # "{context} {word}\n\n" twice, then the passage's context; never the passage itself
        *examples, own = ctx.split("\n\n")
        assert len(examples) == 2
        for ex in examples:
            ex_ctx, word = ex.rsplit(" ", 1)
            assert by_context[ex_ctx]["last_word"] == word and ex_ctx != own
    for ctx in shots_gen:
        *examples, own = ctx.split("\n\n")
        assert len(examples) == 2 and all(ex.rsplit(" ", 1)[0] in by_context for ex in examples)
