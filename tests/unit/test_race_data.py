"""RACE reader and dataset (tasks/race/data.py) on a generated directory in Megatron's RACE layout."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from tasks.glue.data import GlueDataError
from tasks.race.data import RaceDataError, RaceDataset, RaceExample, race_qa_text, read_race

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(REPO, "data", "tokenizers", "bert-wordpiece", "vocab.txt")
LOGGER = "tasks.race.data"

ARTICLE_1 = ("Tom lives in a small town. Every morning he walks his dog to the park,\n"
             "and then he  goes to school by bus.")
ARTICLE_2 = "The museum opens at nine. Children under six enter for free."


def article(text, questions, options, answers, id_="x.txt"):
    return {"answers": answers, "options": options, "questions": questions, "article": text, "id": id_}


@pytest.fixture()
def race_dir(tmp_path):
    root = tmp_path / "RACE" / "dev"
    (root / "high").mkdir(parents=True)
    (root / "middle").mkdir(parents=True)
    (root / "middle" / "1.txt").write_text(json.dumps(article(
        ARTICLE_1,
        ["Where does Tom walk his dog?", "Tom goes to school _ ."],
        [["In the park", "At school", "On the bus", "At home"], ["on foot", "by bus", "by bike", "by car"]],
        ["A", "B"], "middle1.txt")))
    (root / "middle" / "2.txt").write_text(json.dumps(article(
        ARTICLE_2,
        ["When does the museum open?", "Who can enter for free?", "What is the museum?"],
        [["At eight", "At nine", "At ten", "At noon"], ["Children under six", "Everyone", "Teachers", "Nobody"],
         ["A shop", "A school"]],  # third question: only 2 options -> skipped
        ["B", "A", "C"], "middle2.txt")))
    (root / "high" / "10.txt").write_text(json.dumps(article(
        "Scientists found water on a distant planet.", ["What did scientists find?"],
        [["Gold", "Water", "Ice", "Life"]], ["E"], "high10.txt")))  # bad answer -> question skipped
    (root / "high" / "11.txt").write_text("{not json")                       # malformed file
    (root / "high" / "12.txt").write_text(json.dumps({"article": "A", "questions": ["q"], "options": []}))
    (root / "high" / "notes.md").write_text("ignored: not a .txt article")
    return root


@pytest.fixture(scope="module")
def tokenizer():
    from megatron.tokenizer import build_tokenizer
    return build_tokenizer("BertWordPieceLowerCase", vocab_file=VOCAB)


def test_read_race_directory(race_dir, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    examples = read_race(str(race_dir))
    # sorted walk: high/ (no valid question) then middle/1.txt, middle/2.txt
    assert [(e.uid, e.question, e.label) for e in examples] == [
        (0, "Where does Tom walk his dog?", 0), (1, "Tom goes to school _ .", 1),
        (2, "When does the museum open?", 1), (3, "Who can enter for free?", 0)]
    assert all(isinstance(e, RaceExample) for e in examples)
    assert examples[0].article == ("Tom lives in a small town. Every morning he walks his dog to the park, "
                                   "and then he goes to school by bus.")
    assert examples[0].source == str(race_dir / "middle" / "1.txt")
    assert examples[1].qa_texts() == ["Tom goes to school on foot .", "Tom goes to school by bus .",
                                      "Tom goes to school by bike .", "Tom goes to school by car ."]
    assert examples[0].qa_texts()[0] == "Where does Tom walk his dog? In the park"
    messages = [r.getMessage() for r in caplog.records]
    assert any("malformed RACE article file" in m and m.find(str(race_dir / "high" / "11.txt")) >= 0
               for m in messages)
    assert any(str(race_dir / "high" / "12.txt") in m and "missing key(s) answers" in m for m in messages)
    assert any("question 0 of" in m and "10.txt" in m and "answer 'E'" in m for m in messages)
    assert any("question 2 of" in m and "2.txt" in m and "expected 4 option strings" in m for m in messages)
    assert not any("notes.md" in m for m in messages)


def test_read_race_single_file_subdir_and_json_lines(race_dir, tmp_path):
    assert len(read_race(str(race_dir / "middle" / "2.txt"))) == 2
    assert [e.uid for e in read_race(race_dir / "middle", first_uid=10)] == [10, 11, 12, 13]
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "all.txt").write_text("\n".join(json.dumps(article(ARTICLE_2, ["Q?"], [["a", "b", "c", "d"]], ["D"]))
                                             for _ in range(3)) + "\n")
    assert [e.label for e in read_race(lines)] == [3, 3, 3]


def test_race_qa_text():
    assert race_qa_text("The _ is _ .", "sky") == "The sky is sky ."
    assert race_qa_text("What is it?", "  A   cat ") == "What is it? A cat"


def test_race_errors(tmp_path):
    with pytest.raises(RaceDataError, match="not found"):
        read_race(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaceDataError, match="no .txt article files"):
        read_race(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.txt").write_text("[]")
    (bad / "b.txt").write_text(json.dumps(article("Text.", ["q"], [["a", "b", "c", "d"]], ["Z"])))
    with pytest.raises(RaceDataError, match=r"no valid question in 2 article file\(s\) \(1 malformed\)") as info:
        read_race(str(bad))
    assert str(bad) in str(info.value) and isinstance(info.value, GlueDataError)


def test_race_dataset_encoding(race_dir, tokenizer):
    seq = 24
    ds = RaceDataset(str(race_dir), tokenizer, seq)
    assert len(ds) == 4 and ds.dataset_name == "dev"
    item = ds[1]
    assert set(item) == {"text", "types", "padding_mask", "label", "uid"}
    for key in ("text", "types", "padding_mask"):
        assert item[key].shape == (4, seq) and item[key].dtype == torch.int64
    assert item["label"].item() == 1 and item["uid"].item() == 1 and item["label"].shape == ()
    ex = ds.examples[1]
    art = tokenizer.tokenize(ex.article)
    for c, qa in enumerate(ex.qa_texts()):
        a = tokenizer.tokenize(qa)[:128]  # Megatron's order: question + option first, then the article
        la, lb = len(a), len(art)
        while la + lb > seq - 3:  # the article (text b) loses its last tokens first
            if lb > 0:
                lb -= 1
            else:
                la -= 1
        n = la + lb + 3
        assert n == seq
        assert item["text"][c].tolist() == [tokenizer.cls] + a[:la] + [tokenizer.sep] + art[:lb] + [tokenizer.sep]
        assert item["types"][c].tolist() == [0] * (la + 2) + [1] * (lb + 1)
        assert item["padding_mask"][c].tolist() == [1] * seq
    # short article: padding, and a batch through the default collate
    long_ds = RaceDataset([str(race_dir / "middle" / "2.txt")], tokenizer, 64)
    it = long_ds[0]
    n = int(it["padding_mask"][0].sum())
    assert n < 64 and it["text"][0, n:].tolist() == [tokenizer.pad] * (64 - n)
    assert it["text"][1, 0].item() == tokenizer.cls
    batch = next(iter(torch.utils.data.DataLoader(long_ds, batch_size=2)))
    assert batch["text"].shape == (2, 4, 64) and batch["label"].tolist() == [1, 0]
    assert batch["uid"].tolist() == [0, 1] and long_ds.dataset_name == "2.txt"


def test_race_dataset_several_paths_continue_uids(race_dir, tokenizer):
    ds = RaceDataset([race_dir / "middle" / "2.txt", race_dir / "middle" / "1.txt"], tokenizer, 32)
    assert ds.uids.tolist() == [0, 1, 2, 3] and ds.labels.tolist() == [1, 0, 0, 1]
    assert ds.dataset_name == "2.txt+1.txt"
