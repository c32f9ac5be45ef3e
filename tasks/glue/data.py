"""GLUE readers (the eight GLUE TSV layouts) and the tokenized finetuning dataset.

Reading (spec §8): each line is stripped, then split on tabs. The first line of a file decides test mode
(a per-task rule) and is skipped as a header, except in CoLA train/dev files, which have no header: their
first row is checked and then kept as data. Texts are cleaned (whitespace collapsed, ends stripped). A row
with the wrong number of columns, an empty text, a bad label or a bad id is skipped with a warning naming
``file:line``; a file with no usable row at all is one ``GlueDataError`` naming the file and the expected
layout.

Encoding: ``[CLS] a [SEP] b [SEP]`` (``[CLS] a [SEP]`` for single-sentence tasks), token types 0 up to and
including the first [SEP] and 1 after it, padding mask 1 on real tokens, padded with ``tokenizer.pad`` to
``seq_length``. Too-long inputs are trimmed token by token from the end of the longer text (b on ties) until
the whole sequence fits ``seq_length``. Everything is tokenized once in ``__init__`` (batched when the tokenizer
has ``tokenize_batch``), so ``__getitem__`` only copies ids into the padded arrays.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

GLUE_TASKS: tuple[str, ...] = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")

# Label names in class-id order (the class id is the index). The integer-labelled tasks store "0"/"1" in the
# files; their names here are the usual GLUE ones. None: STS-B is a regression task.
LABELS: dict[str, tuple[str, ...] | None] = {
    "MNLI": ("contradiction", "entailment", "neutral"),
    "QQP": ("not_duplicate", "duplicate"),
    "QNLI": ("entailment", "not_entailment"),
    "SST-2": ("negative", "positive"),
    "CoLA": ("unacceptable", "acceptable"),
    "STS-B": None,
    "MRPC": ("not_equivalent", "equivalent"),
    "RTE": ("entailment", "not_entailment"),
}

MAX_ROW_WARNINGS = 20          # malformed rows reported one by one per file; the rest are counted
TOKENIZE_CHUNK = 8192          # texts per tokenize_batch call
PROGRESS_MIN_TEXTS = 20_000    # show a tqdm bar when tokenizing at least this many distinct texts


class GlueDataError(ValueError):
    """A GLUE/RACE input that cannot be used (missing file, unknown task, no usable rows); names the file."""


@dataclass(frozen=True)
class GlueExample:
    """One GLUE example: ``label`` is the class id (int), the score (float, STS-B) or None in test files."""

    uid: int
    text_a: str
    text_b: str | None
    label: int | float | None


def clean_text(text: str) -> str:
    """Collapse every run of whitespace (newlines and tabs included) to one space and strip the ends."""
    return " ".join(text.split())


def check_task(task: str) -> str:
    """Return ``task`` if it is one of GLUE_TASKS, else raise GlueDataError listing them."""
    if task not in GLUE_TASKS:
        hint = ""
        norm = {t.lower().replace("-", ""): t for t in GLUE_TASKS}
        guess = norm.get(str(task).lower().replace("-", "").replace("_", ""))
        if guess:
            hint = f" (did you mean {guess!r}?)"
        raise GlueDataError(f"unknown GLUE task {task!r}{hint}; expected one of {', '.join(GLUE_TASKS)}")
    return task


def num_outputs(task: str) -> int:
    """Number of classifier outputs: the class count, or 1 for the STS-B regression."""
    labels = LABELS[check_task(task)]
    return 1 if labels is None else len(labels)


# ---------------------------------------------------------------------------------------------------------
# Per-task layouts


class _RowError(Exception):
    """Why one data row is unusable (becomes a warning naming file:line)."""


def _uid(field: str) -> int:
    try:
        uid = int(field)
    except ValueError:
        raise _RowError(f"id {field!r} is not an integer") from None
    if uid < 0:
        raise _RowError(f"id {uid} is negative")
    return uid


def _text(field: str, name: str) -> str:
    text = clean_text(field)
    if not text:
        raise _RowError(f"empty {name}")
    return text


def _named_label(task: str) -> Callable[[str], int]:
    names = LABELS[task]
    assert names is not None

    def parse(field: str) -> int:
        if field not in names:
            raise _RowError(f"label {field!r} is not one of {', '.join(names)}")
        return names.index(field)
    return parse


def _binary_label(field: str) -> int:
    if field not in ("0", "1"):
        raise _RowError(f"label {field!r} is not 0 or 1")
    return int(field)


def _score_label(field: str) -> float:
    try:
        value = float(field)
    except ValueError:
        raise _RowError(f"score {field!r} is not a number") from None
    if not math.isfinite(value):
        raise _RowError(f"score {field!r} is not finite")
    return value


# A row parser gets the stripped fields and the number of examples accepted so far (the running count some
# tasks use as uid); it returns (uid, text_a, text_b, label) or raises _RowError.
RowParser = Callable[[list[str], int], tuple[int, str, "str | None", "int | float | None"]]


@dataclass(frozen=True)
class _Layout:
    columns: frozenset[int]
    parse: RowParser
    describe: str


@dataclass(frozen=True)
class _TaskFormat:
    is_test_header: Callable[[list[str]], bool]
    train: _Layout
    test: _Layout
    train_has_header: bool = True


def _pair(uid_col: int | None, a: int, b: int | None, label_col: int | None,
          label: Callable[[str], int | float] | None) -> RowParser:
    """A parser reading uid/a/b/label from fixed columns (uid_col None: running count; label None: test)."""
    def parse(row: list[str], count: int):
        uid = count if uid_col is None else _uid(row[uid_col])
        text_a = _text(row[a], "text a")
        text_b = None if b is None else _text(row[b], "text b")
        value = None if label is None else label(row[label_col])
        return uid, text_a, text_b, value
    return parse


def _formats() -> dict[str, _TaskFormat]:
    nli = _named_label("MNLI")
    entail = _named_label("QNLI")
    qnli_like = _TaskFormat(
        is_test_header=lambda h: len(h) == 3,
        train=_Layout(frozenset({4}), _pair(0, 1, 2, 3, entail),
                      "header line, then 4 columns: index, text a, text b, label "
                      "(entailment | not_entailment)"),
        test=_Layout(frozenset({3}), _pair(0, 1, 2, None, None),
                     "header line (3 columns), then 3 columns: index, text a, text b"))
    return {
        "MNLI": _TaskFormat(
            is_test_header=lambda h: len(h) == 10,
            train=_Layout(frozenset({12, 16}), _pair(0, 8, 9, -1, nli),
                          "header line, then 12 (train) or 16 (dev) columns: index in column 0, sentence1 "
                          "in column 8, sentence2 in column 9, gold label (contradiction | entailment | "
                          "neutral) in the last column"),
            test=_Layout(frozenset({10}), _pair(0, 8, 9, None, None),
                         "header line (10 columns), then 10 columns: index in column 0, sentence1 in "
                         "column 8, sentence2 in column 9")),
        "QQP": _TaskFormat(
            is_test_header=lambda h: len(h) == 3,
            train=_Layout(frozenset({6}), _pair(0, 3, 4, 5, _binary_label),
                          "header line, then 6 columns: id, qid1, qid2, question1, question2, "
                          "is_duplicate (0 | 1)"),
            test=_Layout(frozenset({3}), _pair(0, 1, 2, None, None),
                         "header line (3 columns), then 3 columns: id, question1, question2")),
        "QNLI": qnli_like,
        "RTE": qnli_like,
        "SST-2": _TaskFormat(
            is_test_header=lambda h: h[0] == "index",
            train=_Layout(frozenset({2}), _pair(None, 0, None, 1, _binary_label),
                          "header line (sentence, label), then 2 columns: sentence, label (0 | 1)"),
            test=_Layout(frozenset({2}), _pair(0, 1, None, None, None),
                         "header line starting with 'index', then 2 columns: index, sentence")),
        "CoLA": _TaskFormat(
            is_test_header=lambda h: len(h) == 2,
            train_has_header=False,
            train=_Layout(frozenset({4}), _pair(None, 3, None, 1, _binary_label),
                          "no header; 4 columns: source, label (0 | 1), original label, sentence"),
            test=_Layout(frozenset({2}), _pair(0, 1, None, None, None),
                         "header line (index, sentence), then 2 columns: index, sentence")),
        "STS-B": _TaskFormat(
            is_test_header=lambda h: len(h) == 9,
            train=_Layout(frozenset({10}), _pair(0, 7, 8, -1, _score_label),
                          "header line, then 10 columns: index in column 0, sentence1 in column 7, "
                          "sentence2 in column 8, score (a number) in the last column"),
            test=_Layout(frozenset({9}), _pair(0, 7, 8, None, None),
                         "header line (9 columns), then 9 columns: index in column 0, sentence1 in "
                         "column 7, sentence2 in column 8")),
        "MRPC": _TaskFormat(
            is_test_header=lambda h: h[0] == "index",
            train=_Layout(frozenset({5}), _pair(None, 3, 4, 0, _binary_label),
                          "header line (Quality, #1 ID, #2 ID, #1 String, #2 String), then 5 columns: "
                          "label (0 | 1), id1, id2, text a, text b"),
            test=_Layout(frozenset({5}), _pair(0, 3, 4, None, None),
                         "header line starting with 'index', then 5 columns: index, id1, id2, text a, "
                         "text b")),
    }


FORMATS: dict[str, _TaskFormat] = _formats()


def _parse_row(layout: _Layout, row: list[str], count: int):
    if len(row) not in layout.columns:
        want = " or ".join(str(n) for n in sorted(layout.columns))
        raise _RowError(f"expected {want} tab-separated columns, got {len(row)}")
    return layout.parse(row, count)


def _split(raw: bytes, first: bool) -> list[str]:
    text = raw.decode("utf-8")
    if first and text.startswith("\ufeff"):
        text = text[1:]
    return [field.strip() for field in text.strip().split("\t")]


def read_glue(task: str, path: str) -> tuple[list[GlueExample], bool]:
    """Read one GLUE TSV file of ``task``: (examples, is_test_file). Test-file examples have label None."""
    fmt = FORMATS[check_task(task)]
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GlueDataError(f"{task} data file {path}: file not found")
    if not os.path.isfile(path):
        raise GlueDataError(f"{task} data file {path}: not a regular file")

    examples: list[GlueExample] = []
    is_test = False
    layout: _Layout | None = None
    header_seen = False
    data_rows = 0
    bad: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines (e.g. a trailing one) are not rows
            try:
                row = _split(raw, first=not header_seen)
            except UnicodeDecodeError as e:
                if not header_seen:
                    raise GlueDataError(f"{task} data file {path}:{lineno}: not valid UTF-8 "
                                        f"({e.reason} at byte {e.start})") from None
                bad.append(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})")
                data_rows += 1
                continue
            if not header_seen:
                header_seen = True
                is_test = fmt.is_test_header(row)
                layout = fmt.test if is_test else fmt.train
                if is_test or fmt.train_has_header:
                    _warn_if_header_looks_like_data(task, path, lineno, layout, row)
                    continue
            assert layout is not None
            data_rows += 1
            try:
                uid, text_a, text_b, label = _parse_row(layout, row, len(examples))
            except _RowError as e:
                bad.append(f"{path}:{lineno}: {e}")
                continue
            examples.append(GlueExample(uid, text_a, text_b, label))

    mode = "test" if is_test else "train/dev"
    for message in bad[:MAX_ROW_WARNINGS]:
        logger.warning("skipping malformed %s row: %s", task, message)
    if bad and examples:
        more = f" ({len(bad) - MAX_ROW_WARNINGS} not shown)" if len(bad) > MAX_ROW_WARNINGS else ""
        logger.warning("%s: skipped %d of %d %s data rows as malformed%s", path, len(bad), data_rows, task, more)
    if not examples:
        expected = f"expected the {task} {mode} layout: {layout.describe}" if layout else ""
        if not header_seen:
            raise GlueDataError(f"{task} data file {path}: the file is empty")
        if data_rows == 0:
            raise GlueDataError(f"{task} data file {path}: no data rows after the header line; {expected}")
        raise GlueDataError(f"{task} data file {path}: none of its {data_rows} data rows is usable "
                            f"(first: {bad[0]}); {expected}")
    return examples, is_test


def _warn_if_header_looks_like_data(task: str, path: str, lineno: int, layout: _Layout, row: list[str]) -> None:
    """The first line is always skipped; say so when it would have parsed as a valid row (missing header?)."""
    try:
        _parse_row(layout, row, 0)
    except _RowError:
        return
    logger.warning("%s:%d: the first line of this %s file looks like data, not a header; it is skipped as "
                   "the header (spec: the first line is always a header)", path, lineno, task)


# ---------------------------------------------------------------------------------------------------------
# Tokenization and encoding (shared with tasks.race.data)


def tokenize_texts(tokenizer, texts: Sequence[str], desc: str = "tokenizing") -> list[list[int]]:
    """Token ids of every text (no specials). Distinct texts are tokenized once, in batches when the tokenizer
    has ``tokenize_batch``; a tqdm bar is shown for large inputs."""
    index: dict[str, int] = {}
    slots = [index.setdefault(t, len(index)) for t in texts]
    unique = list(index)
    batch = getattr(tokenizer, "tokenize_batch", None)
    out: list[list[int]] = []
    chunks = range(0, len(unique), TOKENIZE_CHUNK)
    if len(unique) >= PROGRESS_MIN_TEXTS:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc=desc, unit="chunk", leave=False)
    for lo in chunks:
        part = unique[lo:lo + TOKENIZE_CHUNK]
        if batch is not None:
            out.extend(list(ids) for ids in batch(part))
        else:
            out.extend(list(tokenizer.tokenize(t)) for t in part)
    return [out[s] for s in slots]


class TokenStore:
    """Many id lists in one flat int32 array (offsets[i]:offsets[i+1] is list i)."""

    def __init__(self, lists: Sequence[Sequence[int]]) -> None:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        self.offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.flat = np.fromiter(chain.from_iterable(lists), dtype=np.int32, count=int(self.offsets[-1]))
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def get(self, i: int, n: int) -> np.ndarray:
        """The first ``n`` ids of list ``i``."""
        start = int(self.offsets[i])
        return self.flat[start:start + n]


def trimmed_lengths(len_a: np.ndarray, len_b: np.ndarray | None,
                    seq_length: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Lengths of a and b after trimming so that the encoded sequence fits ``seq_length`` (spec §8).

    As Megatron: ``[CLS] a [SEP] b`` is cut to seq_length - 1 tokens before the final [SEP], so b loses tokens
    from its end first, then a. Single text: a keeps at most seq_length - 2 tokens. (When a alone would fill
    the sequence, Megatron also drops the middle [SEP]; here a keeps seq_length - 3 tokens so that the input
    always reads [CLS] a [SEP] b [SEP].)
    """
    la = np.asarray(len_a, dtype=np.int64)
    if len_b is None:
        return np.minimum(la, seq_length - 2), None
    lb = np.asarray(len_b, dtype=np.int64)
    new_a = np.minimum(la, seq_length - 3)
    new_b = np.minimum(lb, seq_length - 3 - new_a)
    return new_a, new_b


def check_seq_length(seq_length: int) -> int:
    """``seq_length`` as int; GlueDataError unless it leaves room for [CLS] a [SEP] b [SEP]."""
    if not isinstance(seq_length, (int, np.integer)) or seq_length < 4:
        raise GlueDataError(f"seq_length must be an integer >= 4 ([CLS] a [SEP] b [SEP] needs room), "
                            f"got {seq_length!r}")
    return int(seq_length)


def encode_into(text: np.ndarray, types: np.ndarray, mask: np.ndarray, a_ids: np.ndarray,
                b_ids: np.ndarray | None, cls_id: int, sep_id: int) -> None:
    """Write ``[CLS] a [SEP] (b [SEP])`` into pre-padded rows (a/b already trimmed to fit)."""
    la = len(a_ids)
    text[0] = cls_id
    text[1:1 + la] = a_ids
    text[1 + la] = sep_id
    n = 2 + la
    if b_ids is not None:
        lb = len(b_ids)
        text[n:n + lb] = b_ids
        text[n + lb] = sep_id
        types[n:n + lb + 1] = 1
        n += lb + 1
    mask[:n] = 1


class GlueDataset(Dataset):
    """Tokenized GLUE examples of one task from one or more TSV files (concatenated in order).

    Item: ``text``/``types``/``padding_mask`` int64 [seq_length], ``label`` int64 [] (float32 for STS-B;
    -1 in test files), ``uid`` int64 []. Attributes: ``task``, ``examples``, ``is_test``, ``dataset_name``
    (basename of the file; several files: their basenames joined by '+').
    """

    def __init__(self, task: str, paths: str | os.PathLike | Iterable[str | os.PathLike], tokenizer,
                 seq_length: int) -> None:
        self.task = check_task(task)
        self.seq_length = check_seq_length(seq_length)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise GlueDataError(f"{task}: no data files given")
        self.dataset_name = "+".join(os.path.basename(p) for p in self.paths)

        examples: list[GlueExample] = []
        modes = []
        for path in self.paths:
            part, is_test = read_glue(task, path)
            examples.extend(part)
            modes.append(is_test)
        if len(set(modes)) > 1:
            listing = ", ".join(f"{p} ({'test' if t else 'labelled'})" for p, t in zip(self.paths, modes))
            raise GlueDataError(f"{task}: cannot mix test files (no labels) with labelled files in one "
                                f"dataset: {listing}")
        self.examples = examples
        self.is_test = modes[0]
        self.is_regression = LABELS[task] is None

        self.cls_id, self.sep_id, self.pad_id = int(tokenizer.cls), int(tokenizer.sep), int(tokenizer.pad)
        pair = examples[0].text_b is not None
        texts = [e.text_a for e in examples] + ([e.text_b for e in examples] if pair else [])
        ids = tokenize_texts(tokenizer, texts, desc=f"tokenizing {task} {self.dataset_name}")
        n = len(examples)
        self._a = TokenStore(ids[:n])
        self._b = TokenStore(ids[n:]) if pair else None
        self._len_a, self._len_b = trimmed_lengths(self._a.lengths, None if self._b is None else self._b.lengths,
                                                   self.seq_length)
        self.uids = np.array([e.uid for e in examples], dtype=np.int64)
        if self.is_regression:
            self.labels = np.array([-1.0 if e.label is None else e.label for e in examples], dtype=np.float32)
        else:
            self.labels = np.array([-1 if e.label is None else e.label for e in examples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        idx = range(len(self))[idx]
        s = self.seq_length
        text = np.full(s, self.pad_id, dtype=np.int64)
        types = np.zeros(s, dtype=np.int64)
        mask = np.zeros(s, dtype=np.int64)
        a = self._a.get(idx, int(self._len_a[idx]))
        b = None if self._b is None else self._b.get(idx, int(self._len_b[idx]))
        encode_into(text, types, mask, a, b, self.cls_id, self.sep_id)
        return {"text": torch.from_numpy(text), "types": torch.from_numpy(types),
                "padding_mask": torch.from_numpy(mask), "label": torch.tensor(self.labels[idx]),
                "uid": torch.tensor(self.uids[idx])}
