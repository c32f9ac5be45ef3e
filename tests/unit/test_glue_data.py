"""GLUE readers and dataset (tasks/glue/data.py) on hand-written files in the real GLUE layouts (spec §8)."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from tasks.glue.data import (GLUE_TASKS, LABELS, MAX_ROW_WARNINGS, GlueDataError, GlueDataset, GlueExample,
                             clean_text, num_outputs, read_glue, trimmed_lengths)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(REPO, "data", "tokenizers", "bert-wordpiece", "vocab.txt")
LOGGER = "tasks.glue.data"


def tsv(*rows: str) -> str:
    """Rows written with ' | ' standing for a tab (readable literals), one per line."""
    return "".join(r.replace(" | ", "\t") + "\n" for r in rows)


# --- the real GLUE layouts (headers and columns as in the GLUE distribution; rows shortened) ---------------

MNLI_TRAIN = tsv(  # train.tsv: 12 columns
    "index | promptID | pairID | genre | sentence1_binary_parse | sentence2_binary_parse | sentence1_parse"
    " | sentence2_parse | sentence1 | sentence2 | label1 | gold_label",
    "0 | 31193 | 31193n | government | ( ( Conceptually ( cream skimming ) ) ) | ( Product ( and geography ) )"
    " | (ROOT (S (NP (JJ Conceptually))))  | (ROOT (S (NP (NN Product)))) | Conceptually cream skimming has two"
    " basic dimensions - product and geography. | Product and geography are what make cream skimming work.  "
    "| neutral | neutral",
    "1 | 101457 | 101457e | telephone | ( you ( know ) ) | ( You ( lose ) ) | (ROOT (S (NP (PRP you))))"
    " | (ROOT (S (NP (PRP You)))) | you know during the season and i guess at at your level uh you lose them"
    " | You lose the things to the following level if the people recall. | entailment | entailment",
    "2 | 134793 | 134793e | fiction | ( ( One ) ) | ( ( A ) ) | (ROOT (S (NP (CD One))))"
    " | (ROOT (S (NP (DT A)))) | One of our number will carry out your instructions minutely."
    " | A member of my team will execute your orders with immense precision. | contradiction | contradiction",
)
MNLI_DEV = tsv(  # dev_matched.tsv: 16 columns (five annotator labels, then gold_label)
    "index | promptID | pairID | genre | sentence1_binary_parse | sentence2_binary_parse | sentence1_parse"
    " | sentence2_parse | sentence1 | sentence2 | label1 | label2 | label3 | label4 | label5 | gold_label",
    "0 | 63735 | 63735n | slate | ( ( The ( new rights ) ) ) | ( Everyone ) | (ROOT (S (NP (DT The))))"
    " | (ROOT (S (NP (NN Everyone)))) | The new rights are nice enough | Everyone really likes the newest"
    " benefits  | neutral | entailment | neutral | neutral | neutral | neutral",
    "1 | 91383 | 91383c | government | ( This ) | ( The ) | (ROOT (S (NP (DT This)))) | (ROOT (S (NP (DT The))))"
    " | This site includes a list of all award winners and a searchable database of Government Executive"
    " articles. | The Government Executive articles housed on the website are not able to be searched ."
    " | contradiction | contradiction | contradiction | contradiction | contradiction | contradiction",
)
MNLI_TEST = tsv(  # test_matched.tsv: 10 columns
    "index | promptID | pairID | genre | sentence1_binary_parse | sentence2_binary_parse | sentence1_parse"
    " | sentence2_parse | sentence1 | sentence2",
    "0 | 31349 | 31349 | government | ( ( Hierbas ) ) | ( Hierbas ) | (ROOT (S (NP (NNP Hierbas))))"
    " | (ROOT (S (NP (NNP Hierbas)))) | Hierbas, ans seco, ans dulce, and frigola are just a few names worth"
    " keeping a look-out for. | Hierbas is a name worth looking out for.",
    "1 | 21962 | 21962 | government | ( ( The ) ) | ( The ) | (ROOT (S (NP (DT The)))) | (ROOT (S (NP (DT The))))"
    " | The extent of the behavioral effects would depend in part on the structure of the individual account"
    " program. | Revenue effects depend on the individual account program.",
)
QQP_TRAIN = tsv(
    "id | qid1 | qid2 | question1 | question2 | is_duplicate",
    "133273 | 213221 | 213222 | How is the life of a math student? Could you describe your own experiences?"
    " | Which level of prepration is enough for the exam jlpt5? | 0",
    "402555 | 536040 | 536041 | How do I control my horny emotions? | How do you control your horniness? | 1",
)
QQP_TEST = tsv(
    "id | question1 | question2",
    "0 | Why am I mentally very lonely? How can I solve it? | Find the remainder when [math]23^{24}[/math] is"
    " divided by 24,23?",
)
QNLI_TRAIN = tsv(
    "index | question | sentence | label",
    "0 | When did the third Digimon series begin? | Unlike the two seasons before it and most of the seasons"
    " that followed, Digimon Tamers takes a darker and more realistic approach to its story. | not_entailment",
    "1 | Which missile batteries often have individual launchers several kilometres from one another?"
    " | When MANPADS is operated by specialists, batteries may have several dozen teams deploying separately in"
    " small sections. | entailment",
)
QNLI_TEST = tsv(
    "index | question | sentence",
    "0 | What organization is devoted to Jihad against Israel? | For some decades prior to the First Palestine"
    " Intifada in 1987, the Muslim Brotherhood in Palestine took a quiescent stance towards Israel.",
)
RTE_TRAIN = tsv(
    "index | sentence1 | sentence2 | label",
    "0 | No Weapons of Mass Destruction Found in Iraq Yet. | Weapons of Mass Destruction Found in Iraq."
    " | not_entailment",
    "1 | A place of sorrow, after Pope John Paul II died, became a place of celebration. | Pope Benedict XVI is"
    " the new leader of the Roman Catholic Church. | entailment",
    "2 | Herceptin was already approved to treat the sickest breast cancer patients. | Herceptin can be used to"
    " treat breast cancer. | entailment",
)
RTE_TEST = tsv(
    "index | sentence1 | sentence2",
    "0 | Mangla was summoned after Madhumita's sister Nidhi Shukla, who was the first witness in the case."
    " | Shukla is related to Mangla.",
)
SST2_TRAIN = tsv(
    "sentence | label",
    "hide new secretions from the parental units  | 0",
    "contains no wit , only labored gags  | 0",
    "that loves its characters and communicates something rather beautiful about human nature  | 1",
)
SST2_TEST = tsv(
    "index | sentence",
    "0 | uneasy mishmash of styles and genres .",
    "1 | this film 's relationship to actual tension is the same as what christmas-tree flocking in a spray can"
    " is to actual snow : a poor -- if durable -- imitation .",
)
COLA_TRAIN = tsv(  # no header; column 2 is the original annotation ('*' or empty)
    "gj04 | 1 |  | Our friends won't buy this analysis, let alone the next one we propose.",
    "gj04 | 1 |  | One more pseudo generalization and I'm giving up.",
    "gj04 | 0 | * | They drank the pub.",
)
COLA_TEST = tsv(
    "index | sentence",
    "0 | Bill whistled past the house.",
    "1 | The car honked its way down the road.",
)
STSB_TRAIN = tsv(
    "index | genre | filename | year | old_index | source1 | source2 | sentence1 | sentence2 | score",
    "0 | main-captions | MSRvid | 2012test | 0001 | none | none | A plane is taking off. | An air plane is taking"
    " off. | 5.000",
    "1 | main-captions | MSRvid | 2012test | 0004 | none | none | A man is playing a large flute. | A man is"
    " playing a flute. | 3.800",
)
STSB_TEST = tsv(
    "index | genre | filename | year | old_index | source1 | source2 | sentence1 | sentence2",
    "0 | main-forums | answers-forums | 2015 | 0000 | none | none | Hello, my name is John. | My name is John.",
)
MRPC_TRAIN = tsv(
    "Quality | #1 ID | #2 ID | #1 String | #2 String",
    '1 | 702876 | 702977 | Amrozi accused his brother , whom he called " the witness " , of deliberately'
    ' distorting his evidence . | Referring to him as only " the witness " , Amrozi accused his brother of'
    " deliberately distorting his evidence .",
    "0 | 2108705 | 2108831 | Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5"
    " billion . | Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion"
    " in 1998 .",
)
MRPC_TEST = tsv(
    "index | #1 ID | #2 ID | #1 String | #2 String",
    "0 | 1089874 | 1089925 | PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief"
    " financial officer , will report directly to Mr So . | Current Chief Operating Officer Mike Butcher and"
    " Group Chief Financial Officer Alex Arena will report to So .",
)

# (task, file name, content, is_test, [(uid, text_a startswith, has text_b, label)])
CASES = [
    ("MNLI", "train.tsv", MNLI_TRAIN, False, [(0, "Conceptually cream", True, 2), (1, "you know", True, 1),
                                             (2, "One of our", True, 0)]),
    ("MNLI", "dev_matched.tsv", MNLI_DEV, False, [(0, "The new rights", True, 2), (1, "This site", True, 0)]),
    ("MNLI", "test_matched.tsv", MNLI_TEST, True, [(0, "Hierbas, ans", True, None), (1, "The extent", True, None)]),
    ("QQP", "train.tsv", QQP_TRAIN, False, [(133273, "How is the life", True, 0),
                                           (402555, "How do I control", True, 1)]),
    ("QQP", "test.tsv", QQP_TEST, True, [(0, "Why am I", True, None)]),
    ("QNLI", "train.tsv", QNLI_TRAIN, False, [(0, "When did", True, 1), (1, "Which missile", True, 0)]),
    ("QNLI", "test.tsv", QNLI_TEST, True, [(0, "What organization", True, None)]),
    ("RTE", "train.tsv", RTE_TRAIN, False, [(0, "No Weapons", True, 1), (1, "A place", True, 0),
                                           (2, "Herceptin", True, 0)]),
    ("RTE", "test.tsv", RTE_TEST, True, [(0, "Mangla", True, None)]),
    ("SST-2", "train.tsv", SST2_TRAIN, False, [(0, "hide new", False, 0), (1, "contains no", False, 0),
                                              (2, "that loves", False, 1)]),
    ("SST-2", "test.tsv", SST2_TEST, True, [(0, "uneasy", False, None), (1, "this film", False, None)]),
    ("CoLA", "train.tsv", COLA_TRAIN, False, [(0, "Our friends", False, 1), (1, "One more", False, 1),
                                             (2, "They drank", False, 0)]),
    ("CoLA", "test.tsv", COLA_TEST, True, [(0, "Bill whistled", False, None), (1, "The car", False, None)]),
    ("STS-B", "train.tsv", STSB_TRAIN, False, [(0, "A plane", True, 5.0), (1, "A man is playing a large", True, 3.8)]),
    ("STS-B", "test.tsv", STSB_TEST, True, [(0, "Hello, my", True, None)]),
    ("MRPC", "train.tsv", MRPC_TRAIN, False, [(0, "Amrozi", True, 1), (1, "Yucaipa owned", True, 0)]),
    ("MRPC", "test.tsv", MRPC_TEST, True, [(0, "PCCW", True, None)]),
]


def write(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    from megatron.tokenizer import build_tokenizer
    return build_tokenizer("BertWordPieceLowerCase", vocab_file=VOCAB)


# --- reading ----------------------------------------------------------------------------------------------

def test_task_tables():
    assert GLUE_TASKS == ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
    assert LABELS["MNLI"] == ("contradiction", "entailment", "neutral")
    assert LABELS["QNLI"] == LABELS["RTE"] == ("entailment", "not_entailment")
    assert LABELS["STS-B"] is None
    assert {t: num_outputs(t) for t in GLUE_TASKS} == {"MNLI": 3, "QQP": 2, "QNLI": 2, "SST-2": 2, "CoLA": 2,
                                                       "STS-B": 1, "MRPC": 2, "RTE": 2}
    with pytest.raises(GlueDataError, match="did you mean 'SST-2'"):
        num_outputs("sst2")


@pytest.mark.parametrize("task,name,content,is_test,expected", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_read_real_layouts(tmp_path, caplog, task, name, content, is_test, expected):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    examples, test_mode = read_glue(task, write(tmp_path, name, content))
    assert test_mode is is_test
    assert len(examples) == len(expected)
    for ex, (uid, prefix, has_b, label) in zip(examples, expected):
        assert isinstance(ex, GlueExample)
        assert ex.uid == uid and ex.text_a.startswith(prefix)
        assert (ex.text_b is not None) is has_b
        assert ex.label == label and type(ex.label) is type(label)
        assert ex.text_a == clean_text(ex.text_a) and ex.text_a
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_mnli_texts_and_labels_from_the_right_columns(tmp_path):
    ex, _ = read_glue("MNLI", write(tmp_path, "dev_matched.tsv", MNLI_DEV))
    assert ex[0] == GlueExample(0, "The new rights are nice enough", "Everyone really likes the newest benefits", 2)
    ex, _ = read_glue("MNLI", write(tmp_path, "train.tsv", MNLI_TRAIN))
    assert ex[0].text_b == "Product and geography are what make cream skimming work."
    # the 12-column train file and the 16-column dev file in one dataset's worth of rows
    rows = MNLI_TRAIN + MNLI_DEV.split("\n", 1)[1]
    ex, _ = read_glue("MNLI", write(tmp_path, "mixed.tsv", rows))
    assert [e.label for e in ex] == [2, 1, 0, 2, 0]


def test_cola_first_row_is_data_and_mrpc_sst2_uid_is_a_running_count(tmp_path, caplog):
    ex, is_test = read_glue("CoLA", write(tmp_path, "dev.tsv", COLA_TRAIN))
    assert not is_test and [e.uid for e in ex] == [0, 1, 2]
    assert ex[0].text_a == "Our friends won't buy this analysis, let alone the next one we propose."
    # a malformed row does not consume a uid (running count of kept examples)
    content = tsv("sentence | label", "a good movie | 1", "broken row", "a bad movie | 0")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ex, _ = read_glue("SST-2", write(tmp_path, "train.tsv", content))
    assert [(e.uid, e.text_a, e.label) for e in ex] == [(0, "a good movie", 1), (1, "a bad movie", 0)]
    ex, _ = read_glue("MRPC", write(tmp_path, "msr.tsv", MRPC_TRAIN))
    assert [e.uid for e in ex] == [0, 1]


def test_cola_malformed_first_row_is_reported_as_data(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = write(tmp_path, "train.tsv", tsv("gj04 | 1 | Our friends.") + COLA_TRAIN)
    ex, is_test = read_glue("CoLA", path)
    assert not is_test and len(ex) == 3
    assert any(f"{path}:1:" in r.getMessage() and "expected 4" in r.getMessage() for r in caplog.records)


def test_text_cleaning_and_line_endings(tmp_path):
    # CRLF line endings, a BOM, odd whitespace inside fields, trailing blank lines (not rows)
    content = "\ufeffindex\tquestion\tsentence\tlabel\r\n8\t  What   is\u00a0this?  \t A  sentence.\tentailment\r\n\n"
    ex, _ = read_glue("QNLI", write(tmp_path, "dev2.tsv", content))
    assert ex == [GlueExample(8, "What is this?", "A sentence.", 0)]
    assert clean_text(" a\n\tb  c \u3000") == "a b c"
    # a BOM does not hide the 'index' header that marks an SST-2 test file
    ex, is_test = read_glue("SST-2", write(tmp_path, "test.tsv", "\ufeff" + SST2_TEST))
    assert is_test and [e.uid for e in ex] == [0, 1]


def test_malformed_rows_are_skipped_with_file_and_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    content = tsv(
        "index | question | sentence | label",
        "0 | Q one? | S one. | entailment",                 # line 2 ok
        "1 | Q two? | S two.",                              # line 3: 3 columns
        "2 |   | S three. | entailment",                   # line 4: empty text a
        "3 | Q four? | S four. | contradiction",            # line 5: bad label
        "x4 | Q five? | S five. | not_entailment",          # line 6: bad uid
        "5 | Q six? | S six. | not_entailment",             # line 7 ok
    )
    path = write(tmp_path, "dev.tsv", content)
    ex, is_test = read_glue("QNLI", path)
    assert not is_test and [(e.uid, e.label) for e in ex] == [(0, 0), (5, 1)]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for line, what in [(3, "expected 4 tab-separated columns, got 3"), (4, "empty text a"),
                       (5, "label 'contradiction'"), (6, "id 'x4'")]:
        assert any(f"{path}:{line}: {what}" in m for m in messages), (line, messages)
    assert any("skipped 4 of 6 QNLI data rows" in m for m in messages)


@pytest.mark.parametrize("task,content,match", [
    ("QQP", tsv("id | qid1 | qid2 | question1 | question2 | is_duplicate", "1 | 2 | 3 | q? | q2? | 2"),
     r"label '2' is not 0 or 1"),
    ("STS-B", tsv("index | genre | filename | year | old_index | source1 | source2 | sentence1 | sentence2 | score",
                  "0 | g | f | y | o | s | s | A. | B. | high", "1 | g | f | y | o | s | s | A. | B. | nan"),
     r"score 'high' is not a number"),
    ("MNLI", "".join(line.rsplit("\t", 1)[0] + "\t-\n" if i else line + "\n"
                     for i, line in enumerate(MNLI_TRAIN.splitlines())), r"label '-' is not one of contradiction"),
    ("RTE", tsv("index | sentence1 | sentence2 | label", "0 | a | b | entailment | extra"), r"expected 4"),
])
def test_all_rows_malformed_is_one_error(tmp_path, task, content, match):
    path = write(tmp_path, "train.tsv", content)
    with pytest.raises(GlueDataError, match=match) as info:
        read_glue(task, path)
    message = str(info.value)
    assert path in message and "expected the" in message and task in message
    assert isinstance(info.value, ValueError)


def test_empty_header_only_missing_and_bad_task(tmp_path):
    with pytest.raises(GlueDataError, match="file is empty"):
        read_glue("RTE", write(tmp_path, "empty.tsv", ""))
    with pytest.raises(GlueDataError, match="no data rows after the header.*index, text a, text b, label"):
        read_glue("RTE", write(tmp_path, "header.tsv", tsv("index | sentence1 | sentence2 | label")))
    missing = str(tmp_path / "nope" / "dev.tsv")
    with pytest.raises(GlueDataError, match=f"{missing}: file not found"):
        read_glue("RTE", missing)
    with pytest.raises(GlueDataError, match="not a regular file"):
        read_glue("RTE", str(tmp_path))
    with pytest.raises(GlueDataError, match="unknown GLUE task 'SST'"):
        read_glue("SST", write(tmp_path, "x.tsv", SST2_TRAIN))
    with pytest.raises(GlueDataError, match="not valid UTF-8"):
        read_glue("RTE", write(tmp_path, "bin.tsv", b"\xff\xfe\x00bad\n"))


def test_invalid_utf8_row_is_one_malformed_row(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    content = SST2_TRAIN.encode() + b"caf\xe9 au lait\t1\n"
    path = write(tmp_path, "train.tsv", content)
    ex, _ = read_glue("SST-2", path)
    assert len(ex) == 3
    assert any(f"{path}:5: not valid UTF-8" in r.getMessage() for r in caplog.records)


def test_headerless_sst2_file_warns_that_the_first_row_is_skipped(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = write(tmp_path, "train.tsv", tsv("a fine film | 1", "a dull film | 0"))
    ex, _ = read_glue("SST-2", path)
    assert [e.text_a for e in ex] == ["a dull film"]
    assert any(f"{path}:1: the first line" in r.getMessage() for r in caplog.records)


def test_many_malformed_rows_are_capped(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rows = ["sentence | label", "good | 1"] + [f"bad {i} | 7" for i in range(MAX_ROW_WARNINGS + 10)]
    path = write(tmp_path, "train.tsv", tsv(*rows))
    ex, _ = read_glue("SST-2", path)
    assert len(ex) == 1
    per_row = [r for r in caplog.records if "skipping malformed" in r.getMessage()]
    assert len(per_row) == MAX_ROW_WARNINGS
    assert any("skipped 30 of 31" in r.getMessage() and "(10 not shown)" in r.getMessage()
               for r in caplog.records)


# --- encoding ---------------------------------------------------------------------------------------------

def brute_trim(la: int, lb: int | None, seq_length: int) -> tuple[int, int | None]:
    if lb is None:
        return min(la, seq_length - 2), None
    while la + lb > seq_length - 3:  # [CLS] a [SEP] b cut to seq_length - 1 before the last [SEP]: b first
        if lb > 0:
            lb -= 1
        else:
            la -= 1
    return la, lb


def test_trimmed_lengths_match_token_by_token_trimming():
    grid = [(a, b, s) for s in range(4, 14) for a in range(0, 16) for b in range(0, 16)]
    la = np.array([g[0] for g in grid])
    lb = np.array([g[1] for g in grid])
    for s in range(4, 14):
        sel = [i for i, g in enumerate(grid) if g[2] == s]
        na, nb = trimmed_lengths(la[sel], lb[sel], s)
        assert [(int(x), int(y)) for x, y in zip(na, nb)] == [brute_trim(grid[i][0], grid[i][1], s) for i in sel]
        na, none = trimmed_lengths(la[sel], None, s)
        assert none is None and list(na) == [min(grid[i][0], s - 2) for i in sel]


def test_pair_encoding_without_trimming(tmp_path, tokenizer):
    path = write(tmp_path, "dev_matched.tsv", MNLI_DEV)
    ds = GlueDataset("MNLI", path, tokenizer, 64)
    assert len(ds) == 2 and ds.dataset_name == "dev_matched.tsv" and not ds.is_test
    item = ds[0]
    assert set(item) == {"text", "types", "padding_mask", "label", "uid"}
    for key in ("text", "types", "padding_mask"):
        assert item[key].dtype == torch.int64 and item[key].shape == (64,)
    assert item["label"].dtype == torch.int64 and item["label"].shape == () and item["label"].item() == 2
    assert item["uid"].dtype == torch.int64 and item["uid"].item() == 0
    a = tokenizer.tokenize("The new rights are nice enough")
    b = tokenizer.tokenize("Everyone really likes the newest benefits")
    real = [tokenizer.cls] + a + [tokenizer.sep] + b + [tokenizer.sep]
    n = len(real)
    assert item["text"].tolist() == real + [tokenizer.pad] * (64 - n)
    assert item["types"].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (64 - n)
    assert item["padding_mask"].tolist() == [1] * n + [0] * (64 - n)
    assert ds[-1]["label"].item() == 0 and ds[-1]["uid"].item() == 1
    with pytest.raises(IndexError):
        ds[2]


def test_single_sentence_encoding_and_test_labels(tmp_path, tokenizer):
    ds = GlueDataset("SST-2", write(tmp_path, "test.tsv", SST2_TEST), tokenizer, 16)
    assert ds.is_test
    item = ds[0]
    a = tokenizer.tokenize("uneasy mishmash of styles and genres .")
    n = len(a) + 2
    assert n <= 16
    assert item["text"].tolist() == [tokenizer.cls] + a + [tokenizer.sep] + [tokenizer.pad] * (16 - n)
    assert item["types"].tolist() == [0] * 16
    assert item["padding_mask"].sum().item() == n
    assert item["label"].item() == -1 and item["uid"].item() == 0
    long = ds[1]  # trimmed to 14 tokens of text + [CLS] + [SEP]
    full = tokenizer.tokenize(ds.examples[1].text_a)
    assert len(full) > 14
    assert long["text"].tolist() == [tokenizer.cls] + full[:14] + [tokenizer.sep]
    assert long["padding_mask"].tolist() == [1] * 16


@pytest.mark.parametrize("seq_length", [8, 12, 20, 33])
def test_pair_trimming_fits_seq_length(tmp_path, tokenizer, seq_length):
    ds = GlueDataset("RTE", write(tmp_path, "train.tsv", RTE_TRAIN), tokenizer, seq_length)
    for i, ex in enumerate(ds.examples):
        a, b = tokenizer.tokenize(ex.text_a), tokenizer.tokenize(ex.text_b)
        la, lb = brute_trim(len(a), len(b), seq_length)
        item = ds[i]
        n = la + lb + 3
        assert n <= seq_length
        expect = [tokenizer.cls] + a[:la] + [tokenizer.sep] + b[:lb] + [tokenizer.sep]
        assert item["text"][:n].tolist() == expect
        assert item["text"][n:].tolist() == [tokenizer.pad] * (seq_length - n)
        assert item["types"].tolist() == [0] * (la + 2) + [1] * (lb + 1) + [0] * (seq_length - n)
        assert item["padding_mask"].tolist() == [1] * n + [0] * (seq_length - n)
        if len(a) + len(b) + 3 >= seq_length:
            assert n == seq_length


def test_stsb_float_labels_and_collate(tmp_path, tokenizer):
    ds = GlueDataset("STS-B", write(tmp_path, "dev.tsv", STSB_TRAIN), tokenizer, 24)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["text"].shape == (2, 24) and batch["label"].dtype == torch.float32
    assert batch["label"].tolist() == pytest.approx([5.0, 3.8])
    assert batch["uid"].tolist() == [0, 1]
    test = GlueDataset("STS-B", write(tmp_path, "test.tsv", STSB_TEST), tokenizer, 24)
    assert test[0]["label"].dtype == torch.float32 and test[0]["label"].item() == -1.0


def test_several_paths_and_tokenizer_without_batch(tmp_path, tokenizer):
    p1 = write(tmp_path, "train.tsv", QNLI_TRAIN)
    p2 = write(tmp_path, "dev.tsv", QNLI_TRAIN)
    ds = GlueDataset("QNLI", [p1, p2], tokenizer, 32)
    assert len(ds) == 4 and ds.dataset_name == "train.tsv+dev.tsv"
    assert torch.equal(ds[0]["text"], ds[2]["text"])

    class Plain:  # only .tokenize and the special ids
        cls, sep, pad = tokenizer.cls, tokenizer.sep, tokenizer.pad

        def tokenize(self, text):
            return tokenizer.tokenize(text)

    plain = GlueDataset("QNLI", p1, Plain(), 32)
    for i in range(2):
        assert all(torch.equal(plain[i][k], ds[i][k]) for k in ds[i])

    with pytest.raises(GlueDataError, match="cannot mix test files"):
        GlueDataset("QNLI", [p1, write(tmp_path, "test.tsv", QNLI_TEST)], tokenizer, 32)
    with pytest.raises(GlueDataError, match="seq_length must be an integer >= 4"):
        GlueDataset("QNLI", p1, tokenizer, 3)
