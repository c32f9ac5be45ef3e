"""tools/make_glue_suite.py: GLUE layouts (files, headers, column counts), determinism, labels recomputed from the
text, class balance, disjoint splits, errors, and read-back through tasks/glue/data.py when it is there."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections import Counter

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_spec = importlib.util.spec_from_file_location("_tool_make_glue_suite",
                                               os.path.join(ROOT, "tools", "make_glue_suite.py"))
tool = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = tool  # dataclasses look their module up there
_spec.loader.exec_module(tool)

SIZES = {"train": 120, "dev": 30, "test": 15}  # divisible by 2, 3 and 5: exact class / bucket balance
SEED = 4321

# GLUE's real headers (as in the files the GLUE download script produces); None = no header line.
_MNLI_TEST = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
_STSB_TEST = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
LAYOUT = {
    "MNLI": {"train.tsv": _MNLI_TEST + ["label1", "gold_label"],
             "dev_matched.tsv": _MNLI_TEST + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
             "dev_mismatched.tsv": _MNLI_TEST + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
             "test_matched.tsv": _MNLI_TEST, "test_mismatched.tsv": _MNLI_TEST},
    "QQP": {"train.tsv": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            "dev.tsv": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            "test.tsv": ["id", "question1", "question2"]},
    "QNLI": {"train.tsv": ["index", "question", "sentence", "label"],
             "dev.tsv": ["index", "question", "sentence", "label"],
             "test.tsv": ["index", "question", "sentence"]},
    "RTE": {"train.tsv": ["index", "sentence1", "sentence2", "label"],
            "dev.tsv": ["index", "sentence1", "sentence2", "label"],
            "test.tsv": ["index", "sentence1", "sentence2"]},
    "SST-2": {"train.tsv": ["sentence", "label"], "dev.tsv": ["sentence", "label"], "test.tsv": ["index", "sentence"]},
    "CoLA": {"train.tsv": None, "dev.tsv": None, "test.tsv": ["index", "sentence"]},
    "MRPC": {"train.tsv": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             "dev.tsv": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             "test.tsv": ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]},
    "STS-B": {"train.tsv": _STSB_TEST + ["score"], "dev.tsv": _STSB_TEST + ["score"], "test.tsv": _STSB_TEST},
}
NO_HEADER_COLUMNS = {"CoLA": 4}


@pytest.fixture(scope="module")
def corpus():
    return tool.load_corpus()


@pytest.fixture(scope="module")
def suite(corpus, tmp_path_factory):
    """The whole suite written through the CLI (corpus loading patched to reuse the module's corpus)."""
    out = tmp_path_factory.mktemp("glue") / "suite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tool, "load_corpus", lambda path: corpus)
        rc = tool.main(["--output-dir", str(out), "--seed", str(SEED), "--train-size", str(SIZES["train"]),
                        "--dev-size", str(SIZES["dev"]), "--test-size", str(SIZES["test"])])
    assert rc == 0
    return out


def read_rows(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    assert text.endswith("\n") and "\r" not in text
    return [line.split("\t") for line in text[:-1].split("\n")]


def body(task: str, name: str, suite) -> list[list[str]]:
    rows = read_rows(suite / task / name)
    return rows if LAYOUT[task][name] is None else rows[1:]


class Lookup:
    """Corpus sentences by text, with their file, paragraph and section title."""

    def __init__(self, corpus) -> None:
        self.c = corpus
        self.by_text = {s.text: s for s in corpus.sentences}
        self.keys = {tool.word_order_key(s.text) for s in corpus.sentences}

    def file(self, text: str) -> str:
        return self.c.docs[self.by_text[text].doc].file

    def genre(self, text: str) -> str:
        return self.c.docs[self.by_text[text].doc].genre


@pytest.fixture(scope="module")
def lookup(corpus):
    return Lookup(corpus)


# ------------------------------------------------------------------------------------------------ layout


def test_files_headers_and_column_counts(suite):
    assert sorted(p.name for p in suite.iterdir()) == sorted(list(LAYOUT) + [tool.INFO_FILE])
    for task, files in LAYOUT.items():
        assert sorted(os.listdir(suite / task)) == sorted(files), task  # nothing else (no temp files)
        for name, header in files.items():
            rows = read_rows(suite / task / name)
            kind = "test" if name.startswith("test") else ("dev" if name.startswith("dev") else "train")
            if header is not None:
                assert rows[0] == header, (task, name)
                ncol = len(header)
                rows = rows[1:]
            else:
                ncol = NO_HEADER_COLUMNS[task]
            assert len(rows) == SIZES[kind], (task, name)
            for r in rows:
                assert len(r) == ncol, (task, name, r)
                texts = [x for x in r if " " in x]
                assert texts and all(x == x.strip() and "  " not in x for x in texts)
            if kind == "test":  # every GLUE test layout starts with an index / id column
                assert [r[0] for r in rows] == [str(i) for i in range(len(rows))]
    info = json.loads((suite / tool.INFO_FILE).read_text())
    assert info["tasks"]["MNLI"]["files"]["dev_mismatched.tsv"]["rows"] == SIZES["dev"]
    assert info["tasks"]["CoLA"]["seed"] == SEED


def test_cola_train_first_row_is_data_and_test_header_has_two_columns(suite):
    first = read_rows(suite / "CoLA" / "train.tsv")[0]
    assert len(first) == 4 and first[1] in ("0", "1") and first[2] == ("" if first[1] == "1" else "*")
    assert read_rows(suite / "CoLA" / "test.tsv")[0] == ["index", "sentence"]


# ------------------------------------------------------------------------------------------------ determinism


def test_deterministic_and_independent_of_task_subset(suite, corpus, tmp_path):
    again = tmp_path / "again"
    tool.make_suite(str(again), ["RTE", "STS-B"], SIZES, SEED, corpus=corpus)
    for task in ("RTE", "STS-B"):
        for name in LAYOUT[task]:
            assert (again / task / name).read_bytes() == (suite / task / name).read_bytes(), (task, name)
    other = tool.build_task("RTE", corpus, SIZES, SEED + 1)
    assert other["train.tsv"] != [tuple(r) for r in read_rows(suite / "RTE" / "train.tsv")]


# ------------------------------------------------------------------------------------------------ labels


def _labeled(task):
    return [n for n in LAYOUT[task] if not n.startswith("test")]


def test_mnli_labels_genres_and_matched_split(suite, lookup):
    c = lookup.c
    premise_files = {}
    for name in _labeled("MNLI") + ["test_matched.tsv", "test_mismatched.tsv"]:
        rows = body("MNLI", name, suite)
        labels = []
        for r in rows:
            a, b = lookup.by_text[r[8]], lookup.by_text[r[9]]
            assert r[1] == str(a.sid) and r[3] == lookup.genre(r[8])
            matched = r[3] in ("library", "c-api")
            assert matched == ("mismatched" not in name), (name, r[3])
            premise_files.setdefault(name.split("_")[0].split(".")[0], set()).add(lookup.file(r[8]))
            if name.startswith("test"):
                assert r[2] == r[1]  # no label letter in test pairIDs
                continue
            if c.next_of.get(a.sid) == b.sid:
                want = "entailment"
            elif lookup.file(r[8]) == lookup.file(r[9]):
                want = "neutral"
                assert a.para != b.para and abs(a.fpos - b.fpos) >= 3
            else:
                want = "contradiction"
            assert r[-1] == want and set(r[10:-1]) == {want}, r
            assert r[2] == r[1] + want[0]
            assert r[4].startswith("( ") and r[6].startswith("(ROOT (S (X ")
            labels.append(want)
        if labels:
            assert Counter(labels) == {k: len(rows) // 3 for k in ("entailment", "neutral", "contradiction")}
    # train / dev / test come from disjoint files
    assert not premise_files["train"] & premise_files["dev"]
    assert not premise_files["train"] & premise_files["test"]
    assert not premise_files["dev"] & premise_files["test"]


def test_qqp_duplicates_are_noisy_copies(suite, lookup):
    for name in _labeled("QQP"):
        rows = body("QQP", name, suite)
        qid = {}
        for r in rows:
            q1, q2 = r[3], r[4]
            a, b = Counter(q1.split()), Counter(q2.split())
            dup = not (b - a) and sum(b.values()) >= 0.6 * sum(a.values())
            assert r[5] == ("1" if dup else "0"), r
            assert q1 in lookup.by_text and ((q2 in lookup.by_text) == (not dup))
            for text, i in ((q1, r[1]), (q2, r[2])):
                assert qid.setdefault(text, i) == i
        assert Counter(r[5] for r in rows) == {"0": len(rows) // 2, "1": len(rows) // 2}


def test_qnli_entailment_iff_sentence_is_from_the_titled_section(suite, lookup):
    for name in _labeled("QNLI"):
        rows = body("QNLI", name, suite)
        for r in rows:
            title = lookup.c.docs[lookup.by_text[r[2]].doc].title
            assert r[3] == ("entailment" if title == r[1] else "not_entailment"), r
        assert Counter(r[3] for r in rows) == {"entailment": len(rows) // 2, "not_entailment": len(rows) // 2}


def _split_chain(text: str, lookup) -> list[int]:
    """The corpus sentence ids `text` is made of (sentences joined by one space), or [] if it is not."""
    out, rest = [], text
    while rest:
        for cut in [i for i, ch in enumerate(rest) if ch == " "] + [len(rest)]:
            if rest[:cut] in lookup.by_text:
                out.append(lookup.by_text[rest[:cut]].sid)
                rest = rest[cut + 1:]
                break
        else:
            return []
    return out


def test_rte_entailment_iff_hypothesis_is_an_excerpt(suite, lookup):
    for name in _labeled("RTE"):
        rows = body("RTE", name, suite)
        for r in rows:
            premise, hyp = r[1], r[2]
            chain = _split_chain(premise, lookup)
            assert 1 <= len(chain) <= 3 and all(lookup.c.next_of.get(x) == y for x, y in zip(chain, chain[1:]))
            excerpt = f" {hyp} " in f" {premise} "
            assert r[3] == ("entailment" if excerpt else "not_entailment"), r
            assert 4 <= len(hyp.split())
        assert Counter(r[3] for r in rows) == {"entailment": len(rows) // 2, "not_entailment": len(rows) // 2}


def _negated(s: str) -> bool:
    words = re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)?", s)
    if words and words[0] != "None":
        words[0] = words[0].lower()
    return any(w in {"not", "no", "never", "none", "nothing", "neither", "nor", "cannot", "without", "nobody",
                     "nowhere"} or w.endswith("n't") for w in words)


def test_sst2_label_is_negation(suite, lookup):
    train_files = {lookup.file(r[0]) for r in body("SST-2", "train.tsv", suite)}
    for name in _labeled("SST-2"):
        rows = body("SST-2", name, suite)
        for r in rows:
            assert r[0] in lookup.by_text
            assert r[1] == ("0" if _negated(r[0]) else "1"), r
        assert Counter(r[1] for r in rows) == {"0": len(rows) // 2, "1": len(rows) // 2}
    assert not train_files & {lookup.file(r[0]) for r in body("SST-2", "dev.tsv", suite)}
    assert not _negated("Return None if the key is missing.") and _negated("No value is returned.")


def test_cola_label_is_intact_word_order(suite, lookup):
    for name in _labeled("CoLA"):
        rows = body("CoLA", name, suite)
        for src, label, star, sent in rows:
            intact = sent in lookup.by_text
            assert label == ("1" if intact else "0") and star == ("" if intact else "*")
            if not intact:  # the words of a real sentence in another order
                assert tool.word_order_key(sent) in lookup.keys
            else:
                assert src == lookup.genre(sent)
        assert Counter(r[1] for r in rows) == {"0": len(rows) // 2, "1": len(rows) // 2}


def test_stsb_score_is_five_times_word_jaccard(suite, lookup):
    for name in _labeled("STS-B"):
        rows = body("STS-B", name, suite)
        for r in rows:
            a, b = (set(re.findall(r"[a-z0-9]+", x.lower())) for x in (r[7], r[8]))
            assert r[9] == f"{5 * len(a & b) / len(a | b):.3f}", r
            assert r[7] in lookup.by_text and r[4] == str(lookup.by_text[r[7]].sid)
            assert (r[6] == "derived") == (r[8] not in lookup.by_text)
        buckets = Counter(min(4, int(float(r[9]))) for r in rows)
        assert buckets == {k: len(rows) // 5 for k in range(5)}


def test_mrpc_paraphrase_iff_words_deleted_in_order(suite, lookup):
    def subsequence(short, long):
        it = iter(long)
        return all(w in it for w in short)

    for name in _labeled("MRPC"):
        rows = body("MRPC", name, suite)
        for q, id1, id2, s1, s2 in rows:
            a, b = s1.split(), s2.split()
            para = 1 <= len(a) - len(b) <= 3 and subsequence(b, a)
            assert q == ("1" if para else "0"), (s1, s2)
            assert id1 == str(lookup.by_text[s1].sid)
            if para:
                assert int(id2) >= tool.DERIVED_ID_BASE
            else:  # a real, different sentence of the same file
                assert id2 == str(lookup.by_text[s2].sid) and lookup.file(s2) == lookup.file(s1) and s1 != s2
        assert Counter(r[0] for r in rows) == {"0": len(rows) // 2, "1": len(rows) // 2}


# ------------------------------------------------------------------------------------------------ corpus, errors


def test_parse_rst_keeps_prose_drops_code():
    text = ("Title here\n==========\n\nUse :func:`open` and ``x`` with `docs <https://x>`_ here::\n\n"
            "   code = 1\n\n.. function:: f(x)\n\n   Return *x* twice.\n\n.. code-block:: python\n\n"
            "   print(1)\n\n* a bullet\n\nLast paragraph.\n")
    title, paras = tool.parse_rst(text)
    assert title == "Title here"
    assert paras == ["Use open() and x with docs here::", "Return x twice.", "Last paragraph."]


def test_corpus_sentences_are_clean_and_unique(corpus):
    texts = [s.text for s in corpus.sentences]
    assert len(texts) > 10_000 and len(set(texts)) == len(texts)
    assert not any(ch in t for t in texts for ch in "`|\t\n")
    assert sum(d.title is not None for d in corpus.docs) > 1000


def test_errors_are_one_line(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tool, "load_corpus", lambda path: corpus)
    out = tmp_path / "o"
    for argv in (["--tasks", "MNLI,NOPE"], ["--train-size", "0"], ["--dev-size", "100000", "--tasks", "RTE"]):
        assert tool.main(["--output-dir", str(out)] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()  # nothing written when the corpus cannot supply the rows
    (tmp_path / "f").write_text("x")
    assert tool.main(["--output-dir", str(tmp_path / "f"), "--tasks", "RTE"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    monkeypatch.undo()
    assert tool.main(["--output-dir", str(out), "--corpus", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read corpus")


# ------------------------------------------------------------------------------------------------ read-back


def test_every_file_reads_back_with_read_glue(suite):
    from tasks.glue import data
    for task, files in LAYOUT.items():
        for name in files:
            examples, is_test = data.read_glue(task, str(suite / task / name))
            kind = "test" if name.startswith("test") else "dev" if name.startswith("dev") else "train"
            assert is_test == (kind == "test"), (task, name)
            assert len(examples) == SIZES[kind], (task, name)
            assert all((e.label is None) == is_test for e in examples)
            if not is_test and task != "STS-B":
                assert len({e.label for e in examples}) == (3 if task == "MNLI" else 2)
