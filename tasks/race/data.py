"""RACE reader (Megatron's layout) and the tokenized multiple-choice dataset.

Layout: directories of ``.txt`` files (e.g. ``RACE/train/high``, ``RACE/train/middle``), each holding one
article as JSON ``{"article": str, "questions": [str...], "options": [[4 str]...], "answers": ["A".."D"...]}``
(a file with one such object per line is read too). A directory is searched recursively, files in sorted
order. A file that is not such an object is skipped with a warning naming it; a question whose options or
answer are malformed is skipped with a warning naming file and question; a path that yields no question is
one ``RaceDataError``.

Each question gives four sequences, one per option, in Megatron's order: text a = the question with every "_"
replaced by the option when it has one, else question + " " + option (at most ``MAX_QA_TOKENS`` tokens), text
b = the article; both cleaned like GLUE texts, then encoded and trimmed as tasks.glue.data does
([CLS] a [SEP] b [SEP], b -- the article -- cut first).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.glue.data import (GlueDataError, TokenStore, check_seq_length, clean_text, encode_into,
                             tokenize_texts, trimmed_lengths)

logger = logging.getLogger(__name__)

MAX_QA_TOKENS = 128
"""The question + option text is cut to this many tokens before the pair is trimmed (as Megatron's RACE)."""

NUM_CHOICES = 4
ANSWERS = "ABCD"


class RaceDataError(GlueDataError):
    """A RACE path that cannot be used (missing, or no valid question); names the path."""


@dataclass(frozen=True)
class RaceExample:
    """One RACE question: ``label`` = "ABCD".index(answer); ``source`` = the article file."""

    uid: int
    article: str
    question: str
    options: tuple[str, str, str, str]
    label: int
    source: str

    def qa_texts(self) -> list[str]:
        """Text b of each option's sequence."""
        return [race_qa_text(self.question, o) for o in self.options]


def race_qa_text(question: str, option: str) -> str:
    """The question filled with the option ("_" blanks replaced) or followed by it, cleaned."""
    if "_" in question:
        return clean_text(question.replace("_", option))
    return clean_text(question + " " + option)


class _FileError(Exception):
    pass


def _load_objects(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except UnicodeDecodeError as e:
        raise _FileError(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise _FileError(f"cannot be read ({e.strerror})") from None
    if not content.strip():
        raise _FileError("empty file")
    try:
        objects = [json.loads(content)]
    except json.JSONDecodeError as whole_error:
        objects = []
        for lineno, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                objects.append(json.loads(line))
            except json.JSONDecodeError:
                raise _FileError(f"not JSON ({whole_error.msg} at line {whole_error.lineno} "
                                 f"column {whole_error.colno})") from None
    for obj in objects:
        _check_article(obj)
    return objects


def _check_article(obj) -> None:
    if not isinstance(obj, dict):
        raise _FileError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("article", "questions", "options", "answers") if k not in obj]
    if missing:
        raise _FileError(f"missing key(s) {', '.join(missing)}")
    if not isinstance(obj["article"], str) or not clean_text(obj["article"]):
        raise _FileError("'article' is not a non-empty string")
    for key in ("questions", "options", "answers"):
        if not isinstance(obj[key], list):
            raise _FileError(f"{key!r} is not a list")
    n = len(obj["questions"])
    if len(obj["options"]) != n or len(obj["answers"]) != n:
        raise _FileError(f"{n} questions but {len(obj['options'])} option lists and "
                         f"{len(obj['answers'])} answers")


def _article_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if f.endswith(".txt") and not f.startswith("."))
    return files


def read_race(path_or_dir: str | os.PathLike, first_uid: int = 0) -> list[RaceExample]:
    """All valid questions under a RACE directory (recursively) or in one article file, uids counting from
    ``first_uid`` in reading order."""
    path = os.fspath(path_or_dir)
    if not os.path.exists(path):
        raise RaceDataError(f"RACE data path {path}: not found")
    files = _article_files(path)
    if not files:
        raise RaceDataError(f"RACE data path {path}: no .txt article files (expected Megatron's RACE layout: "
                            f"directories such as high/ and middle/ of JSON article files)")
    examples: list[RaceExample] = []
    bad_files = 0
    for file in files:
        try:
            objects = _load_objects(file)
        except _FileError as e:
            bad_files += 1
            logger.warning("skipping malformed RACE article file %s: %s", file, e)
            continue
        for obj in objects:
            article = clean_text(obj["article"])
            for qi, (question, options, answer) in enumerate(zip(obj["questions"], obj["options"],
                                                                  obj["answers"])):
                problem = _question_problem(question, options, answer)
                if problem:
                    logger.warning("skipping RACE question %d of %s: %s", qi, file, problem)
                    continue
                examples.append(RaceExample(first_uid + len(examples), article, question, tuple(options),
                                            ANSWERS.index(answer.strip()), file))
    if not examples:
        raise RaceDataError(f"RACE data path {path}: no valid question in {len(files)} article file(s) "
                            f"({bad_files} malformed); expected JSON objects with 'article', 'questions', "
                            f"'options' (4 strings per question) and 'answers' (A-D)")
    return examples


def _question_problem(question, options, answer) -> str | None:
    if not isinstance(question, str):
        return "question is not a string"
    if not isinstance(options, list) or len(options) != NUM_CHOICES or \
            not all(isinstance(o, str) for o in options):
        return f"expected {NUM_CHOICES} option strings, got {options!r}"
    if not isinstance(answer, str) or answer.strip() not in tuple(ANSWERS):
        return f"answer {answer!r} is not one of {', '.join(ANSWERS)}"
    return None


class RaceDataset(Dataset):
    """Tokenized RACE questions from one or more paths (directories or files), concatenated in order.

    Item: ``text``/``types``/``padding_mask`` int64 [4, seq_length] (one row per option), ``label`` int64 [],
    ``uid`` int64 []. ``dataset_name``: basename of the path (several: joined by '+').
    """

    def __init__(self, paths: str | os.PathLike | Iterable[str | os.PathLike], tokenizer, seq_length: int) -> None:
        self.seq_length = check_seq_length(seq_length)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise RaceDataError("RACE: no data paths given")
        self.dataset_name = "+".join(os.path.basename(os.path.normpath(p)) for p in self.paths)
        examples: list[RaceExample] = []
        for p in self.paths:
            examples.extend(read_race(p, first_uid=len(examples)))
        self.examples = examples

        self.cls_id, self.sep_id, self.pad_id = int(tokenizer.cls), int(tokenizer.sep), int(tokenizer.pad)
        articles: dict[str, int] = {}
        self._article_of = np.array([articles.setdefault(e.article, len(articles)) for e in examples],
                                    dtype=np.int64)
        qa = [t for e in examples for t in e.qa_texts()]
        ids = tokenize_texts(tokenizer, list(articles) + qa, desc=f"tokenizing RACE {self.dataset_name}")
        self._articles = TokenStore(ids[:len(articles)])
        self._qa = TokenStore(ids[len(articles):])
        len_article = np.repeat(self._articles.lengths[self._article_of], NUM_CHOICES)
        len_qa = np.minimum(self._qa.lengths, MAX_QA_TOKENS)
        self._len_a, self._len_b = trimmed_lengths(len_qa, len_article, self.seq_length)
        self.labels = np.array([e.label for e in examples], dtype=np.int64)
        self.uids = np.array([e.uid for e in examples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        idx = range(len(self))[idx]
        shape = (NUM_CHOICES, self.seq_length)
        text = np.full(shape, self.pad_id, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        article = int(self._article_of[idx])
        for c in range(NUM_CHOICES):
            j = idx * NUM_CHOICES + c
            encode_into(text[c], types[c], mask[c], self._qa.get(j, int(self._len_a[j])),
                        self._articles.get(article, int(self._len_b[j])), self.cls_id, self.sep_id)
        return {"text": torch.from_numpy(text), "types": torch.from_numpy(types),
                "padding_mask": torch.from_numpy(mask), "label": torch.tensor(self.labels[idx]),
                "uid": torch.tensor(self.uids[idx])}
